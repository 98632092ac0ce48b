//! One Stiefel tensor: two SdsAdam steps (elementwise and per-matrix second moment) and
//! two SdsSgd momentum steps, reproduced by a dense nalgebra computation of the formulas
//! in design.md ("One optimizer step"), within 1e-10 in f64.

use dfdx::optim::Optimizer;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::optim::{
    Momentum, ParamGroups, SdsAdam, SdsAdamConfig, SdsSgd, SdsSgdConfig, SecondMoment,
};
use sds_lora::stiefel::random_point;

const N: usize = 9;
const R: usize = 3;
type Layer = Linear<R, N>; // weight [N, R], marked Stiefel by path
type Built = <Layer as BuildOnDevice<Cpu, f64>>::Built;

fn host(v: Vec<f64>) -> DMatrix<f64> {
    DMatrix::from_row_slice(N, R, &v)
}

fn sym(a: &DMatrix<f64>) -> DMatrix<f64> {
    (a + a.transpose()) * 0.5
}

/// P_X(G) = G - X sym(X^T G)
fn proj(x: &DMatrix<f64>, g: &DMatrix<f64>) -> DMatrix<f64> {
    g - x * sym(&(x.transpose() * g))
}

/// qf(Y) with diag(R) >= 0.
fn qf(y: &DMatrix<f64>) -> DMatrix<f64> {
    let qr = y.clone().qr();
    let (mut q, r) = (qr.q(), qr.r());
    for j in 0..R {
        if r[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    q
}

/// A layer whose weight is a random Stiefel point, and two fixed gradients.
fn setup() -> (Built, [DMatrix<f64>; 2]) {
    let dev = Cpu::default();
    let mut layer = dev.build_module::<Layer, f64>();
    let x: Tensor<Rank2<N, R>, f64, Cpu> = random_point(&dev, (Const, Const), 5).unwrap();
    layer.weight.copy_from(&x.as_vec());
    let g = |k: f64| DMatrix::from_fn(N, R, |i, j| ((i * 3 + j * 7) as f64 * k).sin());
    (layer, [g(0.37), g(1.13)])
}

fn step(opt: &mut impl Optimizer<Built, Cpu, f64>, layer: &mut Built, g: &DMatrix<f64>) {
    let mut grads = layer.alloc_grads();
    grads
        .get_or_alloc_mut(&layer.weight)
        .unwrap()
        .copy_from_slice(g.transpose().as_slice());
    opt.update(layer, &grads).unwrap();
}

fn adam_case(second_moment: SecondMoment, amsgrad: bool) {
    let (mut layer, gs) = setup();
    let (lr, b1, b2, eps) = (0.05, 0.9, 0.99, 1e-8);
    let mut cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(lr),
        second_moment,
        ..Default::default()
    };
    cfg.rule.betas = [b1, b2];
    cfg.rule.eps = eps;
    cfg.rule.amsgrad = amsgrad;
    let mut opt = SdsAdam::new_with_stiefel(&layer, cfg, |p| p == "weight").unwrap();

    // Dense reference.
    let mut x = host(layer.weight.as_vec());
    let mut m = DMatrix::<f64>::zeros(N, R);
    let mut v = DMatrix::<f64>::zeros(N, R);
    let mut vs = 0.0f64;
    let (mut v_max, mut vs_max) = (DMatrix::<f64>::zeros(N, R), 0.0f64);
    for (t, g_e) in gs.iter().enumerate() {
        let t = t as i32 + 1;
        step(&mut opt, &mut layer, g_e);
        let g = proj(&x, g_e);
        m = &m * b1 + &g * (1.0 - b1);
        let m_hat = &m / (1.0 - b1.powi(t));
        let u = match second_moment {
            SecondMoment::Elementwise => {
                v = &v * b2 + g.component_mul(&g) * (1.0 - b2);
                v_max = v_max.zip_map(&v, f64::max);
                let vv = if amsgrad { &v_max } else { &v };
                let denom = vv.map(|e| (e / (1.0 - b2.powi(t))).sqrt() + eps);
                m_hat.component_div(&denom) * lr
            }
            SecondMoment::Matrix => {
                vs = b2 * vs + (1.0 - b2) * g.norm_squared();
                vs_max = vs_max.max(vs);
                let vv = if amsgrad { vs_max } else { vs };
                &m_hat * (lr / ((vv / (1.0 - b2.powi(t))).sqrt() + eps))
            }
        };
        let xi = -proj(&x, &u);
        x = qf(&(&x + xi));
        m = proj(&x, &m);
        let got = host(layer.weight.as_vec());
        let err = (&got - &x).norm();
        assert!(
            err < 1e-10,
            "{second_moment:?} amsgrad {amsgrad} step {t}: {err:e}"
        );
    }
}

#[test]
fn adam_step_matches_dense_formulas() {
    adam_case(SecondMoment::Elementwise, false);
    adam_case(SecondMoment::Matrix, false);
    adam_case(SecondMoment::Elementwise, true);
    adam_case(SecondMoment::Matrix, true);
}

#[test]
fn sgd_momentum_step_matches_dense_formulas() {
    for (momentum, dampening) in [
        (Momentum::Classic(0.9), 0.0),
        (Momentum::Nesterov(0.8), 0.3),
    ] {
        let (mut layer, gs) = setup();
        let lr = 0.1;
        let mut cfg = SdsSgdConfig {
            groups: ParamGroups::uniform(lr),
            ..Default::default()
        };
        cfg.rule.momentum = Some(momentum);
        cfg.rule.dampening = dampening;
        let mut opt = SdsSgd::new_with_stiefel(&layer, cfg, |p| p == "weight").unwrap();
        let mut x = host(layer.weight.as_vec());
        let mut vel = DMatrix::<f64>::zeros(N, R);
        for (t, g_e) in gs.iter().enumerate() {
            step(&mut opt, &mut layer, g_e);
            let g = proj(&x, g_e);
            let mu = match momentum {
                Momentum::Classic(mu) | Momentum::Nesterov(mu) => mu,
            };
            vel = if t == 0 {
                g.clone()
            } else {
                &vel * mu + &g * (1.0 - dampening)
            };
            let u = match momentum {
                Momentum::Classic(_) => &vel * lr,
                Momentum::Nesterov(_) => (&g + &vel * mu) * lr,
            };
            x = qf(&(&x - proj(&x, &u)));
            vel = proj(&x, &vel);
            let err = (host(layer.weight.as_vec()) - &x).norm();
            assert!(err < 1e-10, "{momentum:?} step {t}: {err:e}");
        }
    }
}
