//! The basis-update (K/L) step on a full-core `SdsLinear`, f64: against an independent
//! dense nalgebra computation, first order, invariance to the factor split, the zero start,
//! a fixed point of the diagonal field that it leaves, and host against composed path.

use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::kernels::ComposedOps;
use sds_lora::nn::{builders, Adapter, SdsLinear};
use sds_lora::optim::{
    AdamRule, AdapterSecondMoment, Momentum, ParamGroups, SdsAdam, SdsAdamConfig, SdsConfig,
    SdsSgd, SdsSgdConfig, SecondMomentPer, SgdRule,
};

const I: usize = 9;
const O: usize = 7;
const R: usize = 3;
const B: usize = 11;
type Layer = SdsLinear<I, O, R, f64, Cpu>;

fn host<const N: usize, const M: usize>(t: &Tensor<Rank2<N, M>, f64, Cpu>) -> DMatrix<f64> {
    DMatrix::from_row_slice(N, M, &t.as_vec())
}

fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

fn fixed(rows: usize, cols: usize, k: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |i, j| ((i * 7 + j * 3) as f64 * k + 0.3).sin())
}

/// A random orthogonal `n x n` matrix.
fn orthogonal(n: usize, k: f64) -> DMatrix<f64> {
    fixed(n, n, k).qr().q()
}

/// The layer's data: inputs `X: [B, I]` and targets `T: [B, O]`, loss
/// `L = 1/2 sum (y - T)^2`.
fn data() -> (DMatrix<f64>, DMatrix<f64>) {
    (fixed(B, I, 0.37), fixed(B, O, 0.91) * 2.0)
}

/// A layer with a full, non-diagonal, invertible core and `c = 1.5`.
fn layer() -> Layer {
    let dev = Cpu::seed_from_u64(4);
    let mut l = dev.build_module::<builders::SdsLinear<I, O, R>, f64>();
    let core = fixed(R, R, 0.55) * 1.3 + DMatrix::identity(R, R) * 2.0;
    l.core.copy_from(&row_major(&core));
    l.alpha = 4.5;
    l
}

/// `dL/dW` for the dense weight `W = W0 + dW`.
fn full_gradient(l: &Layer) -> DMatrix<f64> {
    let (x, t) = data();
    let w = host(&l.weight) + host(&l.delta_weight().unwrap());
    let b = DMatrix::from_fn(B, O, |_, j| l.bias.as_vec()[j]);
    let gy = &x * w.transpose() + b - t;
    gy.transpose() * x
}

/// The layer's gradients from its own backward pass.
fn gradients(l: &Layer) -> Gradients<f64, Cpu> {
    let dev = Cpu::default();
    let (x, t) = data();
    let xt: Tensor<Rank2<B, I>, f64, Cpu> = dev.tensor_from_vec(row_major(&x), (Const, Const));
    let tt: Tensor<Rank2<B, O>, f64, Cpu> = dev.tensor_from_vec(row_major(&t), (Const, Const));
    let y = l.forward(xt.trace(l.alloc_grads()));
    ((y - tt).square().sum() * 0.5).backward()
}

/// `qf(K)`: the Q factor of the thin QR with `diag(R) >= 0`.
fn qf(k: &DMatrix<f64>) -> DMatrix<f64> {
    let (q, r) = k.clone().qr().unpack();
    let signs = DMatrix::from_diagonal(&r.diagonal().map(|d| if d < 0.0 { -1.0 } else { 1.0 }));
    q * signs
}

/// The dense reference: the factors after `steps` steps of a rule written out on
/// `(U, S, V)` with `G` formed explicitly.
#[derive(Clone, Copy)]
enum Reference {
    Sgd {
        mu: f64,
        nesterov: bool,
        damp: f64,
    },
    /// `b2: None`: Adafactor's increasing decay `1 - t^-0.8`, no correction;
    /// `per_direction`: one second moment per singular direction of the core, else one.
    Adam {
        b1: f64,
        b2: Option<f64>,
        eps: f64,
        per_direction: bool,
    },
}

/// The singular frame of `s`, singular values falling: `(A, B)` with `S = A diag B^T`.
fn frame(s: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
    let svd = s.clone().svd(true, true);
    let mut order: Vec<usize> = (0..R).collect();
    order.sort_by(|&x, &y| svd.singular_values[y].total_cmp(&svd.singular_values[x]));
    let (u, vt) = (svd.u.unwrap(), svd.v_t.unwrap());
    (
        DMatrix::from_fn(R, R, |i, k| u[(i, order[k])]),
        DMatrix::from_fn(R, R, |i, k| vt[(order[k], i)]),
    )
}

/// `basis diag(d) basis^T`.
fn along(basis: &DMatrix<f64>, d: &[f64]) -> DMatrix<f64> {
    basis * DMatrix::from_diagonal(&nalgebra::DVector::from_column_slice(d)) * basis.transpose()
}

fn dense_steps(
    l: &Layer,
    rule: Reference,
    lr: f64,
    steps: usize,
) -> (DMatrix<f64>, DMatrix<f64>, DMatrix<f64>) {
    let c = l.scale();
    let mut work = l.clone();
    let (mut u, mut s, mut v) = (host(&l.basis_out), host(&l.core), host(&l.basis_in));
    let (mut mp, mut mq, mut mm) = (
        DMatrix::zeros(O, R),
        DMatrix::zeros(I, R),
        DMatrix::zeros(R, R),
    );
    let mut second = 0.0;
    let mut seconds = [0.0; R];
    for t in 1..=steps {
        work.basis_out.copy_from(&row_major(&u));
        work.core.copy_from(&row_major(&s));
        work.basis_in.copy_from(&row_major(&v));
        let g = full_gradient(&work);
        let p = &g * &v * c;
        let q = g.transpose() * &u * c;
        let m = u.transpose() * &p;
        let (dp, dq, dm) = match rule {
            Reference::Sgd { mu, nesterov, damp } => {
                if t == 1 {
                    (mp, mq, mm) = (p.clone(), q.clone(), m.clone());
                } else {
                    mp = &mp * mu + &p * (1.0 - damp);
                    mq = &mq * mu + &q * (1.0 - damp);
                    mm = &mm * mu + &m * (1.0 - damp);
                }
                if mu == 0.0 {
                    (p, q, m)
                } else if nesterov {
                    (&p + &mp * mu, &q + &mq * mu, &m + &mm * mu)
                } else {
                    (mp.clone(), mq.clone(), mm.clone())
                }
            }
            Reference::Adam {
                b1,
                b2,
                eps,
                per_direction,
            } => {
                mp = &mp * b1 + &p * (1.0 - b1);
                mq = &mq * b1 + &q * (1.0 - b1);
                mm = &mm * b1 + &m * (1.0 - b1);
                let ti = t as i32;
                let (decay, correction) = match b2 {
                    Some(b2) => (b2, 1.0 / (1.0 - b2.powi(ti))),
                    None => (1.0 - (t as f64).powf(-0.8), 1.0),
                };
                let unbias = 1.0 / (1.0 - b1.powi(ti));
                if per_direction {
                    // Direction j: the parts of P b_j, Q a_j outside the bases and half
                    // of the core's row and column j, over o + i - r dimensions.
                    let (a, b) = frame(&s);
                    let p_out = &p - &u * (u.transpose() * &p);
                    let q_out = &q - &v * (v.transpose() * &q);
                    let core = a.transpose() * &m * &b;
                    let n: Vec<f64> = (0..R)
                        .map(|j| {
                            let x = ((&p_out * b.column(j)).norm_squared()
                                + (&q_out * a.column(j)).norm_squared()
                                + (core.column(j).norm_squared() + core.row(j).norm_squared())
                                    / 2.0)
                                / (O + I - R) as f64;
                            seconds[j] = decay * seconds[j] + (1.0 - decay) * x;
                            1.0 / ((seconds[j] * correction).sqrt() + eps)
                        })
                        .collect();
                    let root: Vec<f64> = n.iter().map(|x| x.sqrt()).collect();
                    (
                        &mp * along(&b, &n) * unbias,
                        &mq * along(&a, &n) * unbias,
                        along(&a, &root) * &mm * along(&b, &root) * unbias,
                    )
                } else {
                    let dim = ((O + I) * R - R * R) as f64;
                    let norm2 = p.norm_squared() + q.norm_squared() - m.norm_squared();
                    second = decay * second + (1.0 - decay) * norm2 / dim;
                    let scale = unbias / ((second * correction).sqrt() + eps);
                    (&mp * scale, &mq * scale, &mm * scale)
                }
            }
        };
        let old_frame = frame(&s);
        let u1 = qf(&(&u * &s - &dp * lr));
        let v1 = qf(&(&v * s.transpose() - &dq * lr));
        let (o_u, o_v) = (u.transpose() * &u1, v.transpose() * &v1);
        s = o_u.transpose() * (&s - &dm * lr) * &o_v;
        // Each new direction k takes the old moments weighted by its squared overlaps.
        let (a1, b1) = frame(&s);
        let w_u = old_frame.0.transpose() * &o_u * a1;
        let w_v = old_frame.1.transpose() * &o_v * b1;
        seconds = std::array::from_fn(|k| {
            (0..R)
                .map(|j| seconds[j] * (w_u[(j, k)].powi(2) + w_v[(j, k)].powi(2)) / 2.0)
                .sum()
        });
        mp = &mp * &o_v;
        mq = &mq * &o_u;
        mm = o_u.transpose() * &mm * &o_v;
        (u, v) = (u1, v1);
    }
    (u, s, v)
}

fn sgd(lr: f64, momentum: Option<Momentum>, dampening: f64) -> SdsSgdConfig {
    SdsSgdConfig {
        groups: ParamGroups::uniform(lr),
        rule: SgdRule {
            momentum,
            dampening,
        },
        ..Default::default()
    }
}

fn adam(lr: f64) -> SdsAdamConfig {
    SdsAdamConfig {
        groups: ParamGroups::uniform(lr),
        rule: AdamRule::default(),
        ..Default::default()
    }
}

/// The optimizer's factors after `steps` steps.
fn run<O2: dfdx::optim::Optimizer<Layer, Cpu, f64>>(l: &Layer, mut opt: O2, steps: usize) -> Layer {
    let mut l = l.clone();
    for _ in 0..steps {
        let g = gradients(&l);
        opt.update(&mut l, &g).unwrap();
    }
    l
}

fn assert_factors(got: &Layer, want: &(DMatrix<f64>, DMatrix<f64>, DMatrix<f64>), what: &str) {
    let gaps = [
        (host(&got.basis_out) - &want.0).norm(),
        (host(&got.core) - &want.1).norm() / want.1.norm(),
        (host(&got.basis_in) - &want.2).norm(),
    ];
    assert!(gaps.iter().all(|&g| g <= 1e-10), "{what}: {gaps:?}");
}

#[test]
fn one_and_three_steps_match_the_dense_computation() {
    let l = layer();
    for steps in [1, 3] {
        let sgd_cases = [
            ("SGD", None, 0.0),
            ("heavy ball", Some(Momentum::Classic(0.8)), 0.1),
            ("Nesterov", Some(Momentum::Nesterov(0.7)), 0.0),
        ];
        for (name, momentum, damp) in sgd_cases {
            let reference = match momentum {
                Some(Momentum::Classic(mu)) => Reference::Sgd {
                    mu,
                    nesterov: false,
                    damp,
                },
                Some(Momentum::Nesterov(mu)) => Reference::Sgd {
                    mu,
                    nesterov: true,
                    damp,
                },
                None => Reference::Sgd {
                    mu: 0.0,
                    nesterov: false,
                    damp,
                },
            };
            let want = dense_steps(&l, reference, 0.05, steps);
            let got = run(
                &l,
                SdsSgd::new(&l, sgd(0.05, momentum, damp)).unwrap(),
                steps,
            );
            assert_factors(&got, &want, &format!("{name}, {steps} steps"));
        }

        let averages = [
            (AdapterSecondMoment::default(), None),
            (AdapterSecondMoment::MovingAverage, Some(0.999)),
        ];
        let pers = [SecondMomentPer::SingularDirection, SecondMomentPer::Adapter];
        for ((average, b2), per) in averages.into_iter().flat_map(|a| pers.map(|p| (a, p))) {
            let reference = Reference::Adam {
                b1: 0.9,
                b2,
                eps: 1e-8,
                per_direction: per == SecondMomentPer::SingularDirection,
            };
            let want = dense_steps(&l, reference, 0.02, steps);
            let cfg = SdsAdamConfig {
                adapter_second_moment: average,
                adapter_second_moment_per: per,
                ..adam(0.02)
            };
            let got = run(&l, SdsAdam::new(&l, cfg).unwrap(), steps);
            assert_factors(
                &got,
                &want,
                &format!("Adam ({average:?}, {per:?}), {steps} steps"),
            );
        }
    }
}

/// `P_T(G) = P_U G + G P_V - P_U G P_V`.
fn tangent(u: &DMatrix<f64>, v: &DMatrix<f64>, g: &DMatrix<f64>) -> DMatrix<f64> {
    let (pu, pv) = (u * u.transpose(), v * v.transpose());
    &pu * g + g * &pv - &pu * g * &pv
}

#[test]
fn first_order_move_is_the_fixed_rank_riemannian_gradient() {
    let l = layer();
    let c = l.scale();
    let dw = host(&l.delta_weight().unwrap());
    let riemannian = tangent(&host(&l.basis_out), &host(&l.basis_in), &full_gradient(&l)) * c * c;
    let gap = |eta: f64| {
        let moved = run(&l, SdsSgd::new(&l, sgd(eta, None, 0.0)).unwrap(), 1);
        (host(&moved.delta_weight().unwrap()) - &dw + &riemannian * eta).norm()
    };
    let (g1, g2, g3) = (gap(2e-3), gap(1e-3), gap(5e-4));
    println!("first-order gap at eta = 2e-3, 1e-3, 5e-4: {g1:e} {g2:e} {g3:e}");
    for (a, b) in [(g1, g2), (g2, g3)] {
        let ratio = a / b;
        assert!(
            (3.6..=4.4).contains(&ratio),
            "second order: {g1:e} {g2:e} {g3:e}"
        );
    }
}

#[test]
fn two_factor_splits_give_one_trajectory() {
    // (U Qo, Qo^T S Qi, V Qi): the same dW, other bases and core.
    let a = layer();
    let mut b = a.clone();
    let (qo, qi) = (orthogonal(R, 0.21), orthogonal(R, 0.83));
    b.basis_out
        .copy_from(&row_major(&(host(&a.basis_out) * &qo)));
    b.core
        .copy_from(&row_major(&(qo.transpose() * host(&a.core) * &qi)));
    b.basis_in.copy_from(&row_major(&(host(&a.basis_in) * &qi)));
    let dw = |l: &Layer| host(&l.delta_weight().unwrap());
    assert!((dw(&a) - dw(&b)).norm() < 1e-13);
    let steps = 10;
    let pairs = [
        (
            "heavy ball",
            run(
                &a,
                SdsSgd::new(&a, sgd(0.05, Some(Momentum::Classic(0.5)), 0.0)).unwrap(),
                steps,
            ),
            run(
                &b,
                SdsSgd::new(&b, sgd(0.05, Some(Momentum::Classic(0.5)), 0.0)).unwrap(),
                steps,
            ),
        ),
        (
            "Nesterov",
            run(
                &a,
                SdsSgd::new(&a, sgd(0.02, Some(Momentum::Nesterov(0.5)), 0.0)).unwrap(),
                steps,
            ),
            run(
                &b,
                SdsSgd::new(&b, sgd(0.02, Some(Momentum::Nesterov(0.5)), 0.0)).unwrap(),
                steps,
            ),
        ),
        (
            "Adam",
            run(&a, SdsAdam::new(&a, adam(0.01)).unwrap(), steps),
            run(&b, SdsAdam::new(&b, adam(0.01)).unwrap(), steps),
        ),
    ];
    for (name, x, y) in pairs {
        let moved = (dw(&x) - dw(&a)).norm() / dw(&a).norm();
        let gap = (dw(&x) - dw(&y)).norm() / dw(&x).norm();
        println!("{name}: dW moved by {moved:e}, splits differ by {gap:e} (relative)");
        assert!(moved > 1e-2, "{name}: the adapter trained ({moved:e})");
        assert!(gap <= 1e-12, "{name}: splits differ by {gap:e}");
    }
}

#[test]
fn from_a_zero_core_the_first_step_moves() {
    let mut l = layer();
    l.core.copy_from(&[0.0; R * R]);
    let moved = run(&l, SdsSgd::new(&l, sgd(0.05, None, 0.0)).unwrap(), 1);
    let dw = host(&moved.delta_weight().unwrap());
    // From S = 0: U1 = qf(-eta P), V1 = qf(-eta Q), S1 = -eta O_U^T M O_V: a step along
    // -G restricted to the spans the gradient itself picks.
    assert!(dw.norm() > 1e-3, "dW after one step: {:e}", dw.norm());
    let g = full_gradient(&l);
    let descent = -(dw.dot(&g)) / (dw.norm() * g.norm());
    assert!(descent > 0.5, "a descent direction: cos = {descent}");
}

#[test]
fn the_diagonal_fixed_point_holds_the_diagonal_step_but_not_the_basis_update() {
    // dW = c U diag(s) V^T, G = U A V^T with A symmetric, zero diagonal: the decoupled
    // diagonal field is zero (P = c U A lies in span(U) and is symmetric there; diag(A) = 0)
    // while the loss 1/2 ||dW - T||^2 with T = dW - G is not at its minimum.
    let dev = Cpu::seed_from_u64(11);
    let mut diag = dev.build_module::<builders::SdsDiagLinear<I, O, R>, f64>();
    diag.core.copy_from(&[1.5, 0.7, 0.2]);
    let a = DMatrix::from_row_slice(R, R, &[0.0, 0.4, -0.3, 0.4, 0.0, 0.25, -0.3, 0.25, 0.0]);
    let (u, v) = (host(&diag.basis_out), host(&diag.basis_in));
    let g = &u * &a * v.transpose();
    let c = diag.scale();
    let (p, q) = (&g * &v * c, g.transpose() * &u * c);
    let m = u.transpose() * &p;

    let before = (
        diag.basis_out.as_vec(),
        diag.core.as_vec(),
        diag.basis_in.as_vec(),
    );
    let mut grads: Gradients<f64, Cpu> = diag.alloc_grads();
    grads
        .get_or_alloc_mut(&diag.basis_out)
        .unwrap()
        .copy_from_slice(&row_major(&p));
    grads
        .get_or_alloc_mut(&diag.basis_in)
        .unwrap()
        .copy_from_slice(&row_major(&q));
    grads
        .get_or_alloc_mut(&diag.core)
        .unwrap()
        .copy_from_slice(m.diagonal().as_slice());
    let mut opt = SdsSgd::new(&diag, sgd(0.1, None, 0.0)).unwrap();
    opt.step(&mut diag, &grads).unwrap();
    let drift = |x: &[f64], y: &[f64]| {
        x.iter()
            .zip(y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let moved = [
        drift(&before.0, &diag.basis_out.as_vec()),
        drift(&before.1, &diag.core.as_vec()),
        drift(&before.2, &diag.basis_in.as_vec()),
    ];
    assert!(
        moved.iter().all(|&d| d < 1e-14),
        "the diagonal step stays: {moved:?}"
    );

    // The full-core layer at the same point, with the same gradients (M in full).
    let mut full: Layer = dev.build_module::<builders::SdsLinear<I, O, R>, f64>();
    full.alpha = diag.alpha;
    full.basis_out.copy_from(&diag.basis_out.as_vec());
    full.basis_in.copy_from(&diag.basis_in.as_vec());
    full.core.copy_from(&row_major(&DMatrix::from_diagonal(
        &nalgebra::DVector::from_vec(vec![1.5, 0.7, 0.2]),
    )));
    let dw0 = host(&full.delta_weight().unwrap());
    let target = &dw0 - &g;
    let mut grads: Gradients<f64, Cpu> = full.alloc_grads();
    grads
        .get_or_alloc_mut(&full.basis_out)
        .unwrap()
        .copy_from_slice(&row_major(&p));
    grads
        .get_or_alloc_mut(&full.basis_in)
        .unwrap()
        .copy_from_slice(&row_major(&q));
    grads
        .get_or_alloc_mut(&full.core)
        .unwrap()
        .copy_from_slice(&row_major(&m));
    let mut opt = SdsSgd::new(&full, sgd(0.1, None, 0.0)).unwrap();
    opt.step(&mut full, &grads).unwrap();
    let dw1 = host(&full.delta_weight().unwrap());
    let (loss0, loss1) = ((&dw0 - &target).norm(), (&dw1 - &target).norm());
    println!("diagonal step drift {moved:?}; basis update: ||dW - T|| {loss0:e} -> {loss1:e}");
    assert!(
        loss1 < 0.95 * loss0,
        "the basis update leaves: {loss0:e} -> {loss1:e}"
    );
}

/// Six steps of an optimizer on the host path, then on the composed path.
fn both_paths<C: SdsConfig + Copy>(l: &Layer, cfg: C) -> (Layer, Layer)
where
    sds_lora::optim::Sds<Layer, f64, Cpu, C>: dfdx::optim::Optimizer<Layer, Cpu, f64>,
{
    let host_path = run(l, sds_lora::optim::Sds::new(l, cfg).unwrap(), 6);
    let mut opt = sds_lora::optim::Sds::new(l, cfg).unwrap();
    opt.use_composed_ops(ComposedOps::new(&Cpu::default()))
        .unwrap();
    (host_path, run(l, opt, 6))
}

#[test]
fn host_and_composed_paths_agree() {
    let l = layer();
    let mut amsgrad = adam(0.02);
    amsgrad.rule.amsgrad = true;
    let nesterov = sgd(0.05, Some(Momentum::Nesterov(0.6)), 0.1);
    for (name, (a, b)) in [
        ("Nesterov", both_paths(&l, nesterov)),
        ("AMSGrad", both_paths(&l, amsgrad)),
    ] {
        // Relative: the Nesterov run grows `dW` to a norm near 1600, where the AVX-512
        // host kernels and dfdx's products (summing in other orders) differ by 3e-12.
        let dw = host(&a.delta_weight().unwrap());
        let gap = (&dw - host(&b.delta_weight().unwrap())).norm() / dw.norm();
        let basis_gap = (host(&a.basis_out) - host(&b.basis_out)).norm();
        assert!(
            gap <= 1e-12 && basis_gap <= 1e-12,
            "{name}: {gap:e} {basis_gap:e}"
        );
    }
}

/// The factors' bits.
fn bits(l: &Layer) -> Vec<u64> {
    [l.basis_out.as_vec(), l.core.as_vec(), l.basis_in.as_vec()]
        .concat()
        .into_iter()
        .map(f64::to_bits)
        .collect()
}

#[test]
fn checkpoints_restore_bit_identically_on_both_paths() {
    let l = layer();
    let dev = Cpu::default();
    for composed in [false, true] {
        let mut cfg = adam(0.02);
        cfg.rule.amsgrad = true;
        let build = |model: &Layer| {
            let mut opt = SdsAdam::new(model, cfg).unwrap();
            if composed {
                opt.use_composed_ops(ComposedOps::new(&dev)).unwrap();
            }
            opt
        };
        let (mut a, mut opt_a) = (l.clone(), build(&l));
        for _ in 0..3 {
            let g = gradients(&a);
            opt_a.update(&mut a, &g).unwrap();
        }
        let saved = serde_json::to_string(&opt_a.state()).unwrap();
        let (mut b, mut opt_b) = (a.clone(), build(&a));
        opt_b
            .set_state(serde_json::from_str(&saved).unwrap())
            .unwrap();
        for _ in 0..3 {
            let (ga, gb) = (gradients(&a), gradients(&b));
            opt_a.update(&mut a, &ga).unwrap();
            opt_b.update(&mut b, &gb).unwrap();
        }
        assert_eq!(bits(&a), bits(&b), "composed = {composed}");
        let core = &opt_a.state().tensors["core"];
        assert!(core.second_scalar > 0.0 && core.second_scalar_max >= core.second_scalar);
        assert_eq!(core.second_directions.len(), 2 * R * R);
        assert_eq!(core.step, 6);
    }
}

/// A checkpoint of one second moment per adapter (or one saved before the per-direction
/// moments existed) continues with every direction starting from that moment.
#[test]
fn a_per_adapter_checkpoint_continues_per_direction_from_its_moment() {
    let l = layer();
    let per_adapter = SdsAdamConfig {
        adapter_second_moment_per: SecondMomentPer::Adapter,
        ..adam(0.02)
    };
    let mut model = l.clone();
    let mut opt = SdsAdam::new(&model, per_adapter).unwrap();
    for _ in 0..3 {
        let g = gradients(&model);
        opt.update(&mut model, &g).unwrap();
    }
    let saved = opt.state();
    assert!(saved.tensors["core"].second_directions.is_empty());
    let mut filled = saved.clone();
    let core = filled.tensors.get_mut("core").unwrap();
    // v I on both sides: every direction reads v.
    let held = |v: f64| {
        let eye = DMatrix::<f64>::identity(R, R) * v;
        [eye.as_slice(), eye.as_slice()].concat()
    };
    core.second_directions = held(core.second_scalar);
    core.second_directions_max = held(core.second_scalar_max);
    let continued = [saved, filled].map(|state| {
        let mut m = model.clone();
        let mut opt = SdsAdam::new(&m, adam(0.02)).unwrap();
        opt.set_state(state).unwrap();
        let g = gradients(&m);
        opt.update(&mut m, &g).unwrap();
        assert_eq!(
            opt.state().tensors["core"].second_directions.len(),
            2 * R * R
        );
        bits(&m)
    });
    assert_eq!(continued[0], continued[1]);
    assert_ne!(continued[0], bits(&model));
}

#[test]
fn a_non_finite_gradient_is_refused_and_changes_nothing() {
    let l = layer();
    let dev = Cpu::default();
    for composed in [false, true] {
        for (name, at) in [("basis_out", 0usize), ("core", 1), ("basis_in", 2)] {
            let mut model = l.clone();
            let mut opt =
                SdsSgd::new(&model, sgd(0.05, Some(Momentum::Classic(0.9)), 0.0)).unwrap();
            if composed {
                opt.use_composed_ops(ComposedOps::new(&dev)).unwrap();
            }
            let g = gradients(&model);
            opt.update(&mut model, &g).unwrap();
            let (before, state) = (bits(&model), opt.state());
            let mut g = gradients(&model);
            match at {
                0 => g.get_or_alloc_mut(&model.basis_out).unwrap()[2] = f64::NAN,
                1 => g.get_or_alloc_mut(&model.core).unwrap()[4] = f64::INFINITY,
                _ => g.get_or_alloc_mut(&model.basis_in).unwrap()[0] = f64::NAN,
            }
            let err = opt.step(&mut model, &g).unwrap_err().to_string();
            assert!(err.contains(name), "{name} named: {err}");
            assert_eq!(bits(&model), before, "{name}: parameters unchanged");
            assert_eq!(opt.state(), state, "{name}: state unchanged");
        }
    }
}
