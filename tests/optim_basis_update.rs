//! The basis-update (K/L) step on a full-core `SdsLinear`, f64: against an independent
//! dense nalgebra computation, first order, invariance to the factor split, the zero start,
//! and a fixed point of the diagonal field that it leaves (host and composed paths,
//! checkpoints and refusals: `optim_basis_update_state`).

use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::nn::{builders, Adapter};
use sds_lora::optim::{
    AdapterSecondMoment, Momentum, SdsAdam, SdsAdamConfig, SdsSgd, SecondMomentPer,
};

mod basis_update;

use basis_update::dense::{assert_factors, dense_steps, Reference};
use basis_update::*;

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
    // From S = 0: U1 = qf(-eta P), V1 = qf(-eta Q), S1 = -eta O_U^T M O_V: a step along
    // -G restricted to the spans the gradient itself picks. Adam's per-direction second
    // moments start from the zero core's (arbitrary) frame and scale the same step.
    let g = full_gradient(&l);
    for (name, moved) in [
        (
            "SGD",
            run(&l, SdsSgd::new(&l, sgd(0.05, None, 0.0)).unwrap(), 1),
        ),
        ("Adam", run(&l, SdsAdam::new(&l, adam(0.05)).unwrap(), 1)),
    ] {
        let dw = host(&moved.delta_weight().unwrap());
        assert!(
            dw.norm() > 1e-3,
            "{name}: dW after one step: {:e}",
            dw.norm()
        );
        let descent = -(dw.dot(&g)) / (dw.norm() * g.norm());
        println!("{name}: cos(dW, -G) = {descent}");
        assert!(
            descent > 0.5,
            "{name}: a descent direction: cos = {descent}"
        );
    }
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
