//! The paper's dual-branch layer: reparameterisation and refresh preserve dW (1e-10, f64);
//! its factor gradients are k Q_B^T G and k G Q_A with G = Gy^T x.

use dfdx::optim::{Optimizer, Sgd, SgdConfig};
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::diagnostics::orthogonality_error;
use sds_lora::nn::{builders, Phase, SdsDualBranch};

const I: usize = 9;
const O: usize = 7;
const R: usize = 3;
const N: usize = 5;
type Layer = SdsDualBranch<I, O, R, f64, Cpu>;

fn host<const A: usize, const B: usize>(t: &Tensor<Rank2<A, B>, f64, Cpu>) -> DMatrix<f64> {
    DMatrix::from_row_slice(A, B, &t.as_vec())
}

fn warmed_up() -> Layer {
    let dev = Cpu::seed_from_u64(21);
    let mut l = dev.build_module::<builders::SdsDualBranch<I, O, R>, f64>();
    l.lora_b
        .copy_from(&dev.sample_normal::<Rank2<O, R>>().as_vec());
    l.alpha = 6.0; // k = 2
    l
}

fn rel(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    (a - b).norm() / b.norm()
}

#[test]
fn reparameterisation_and_refresh_preserve_dw() {
    let mut l = warmed_up();
    let before = l.delta_weight();
    assert_eq!(before, host(&l.lora_b) * host(&l.lora_a) * 2.0);
    l.reparameterize().unwrap();
    assert_eq!(l.phase, Phase::Dual);
    assert!(
        rel(&l.delta_weight(), &before) <= 1e-10,
        "reparameterisation: {:e}",
        rel(&l.delta_weight(), &before)
    );
    assert!(
        orthogonality_error(&host(&l.q_a)) < 1e-13 && orthogonality_error(&host(&l.q_b)) < 1e-13
    );
    assert!(l.reparameterize().is_err());

    // Train a little so that A and B leave their bases' spans, then refresh.
    let dev = Cpu::seed_from_u64(22);
    let mut opt = Sgd::new(
        &l,
        SgdConfig {
            lr: 0.05,
            ..Default::default()
        },
    );
    for _ in 0..5 {
        let x: Tensor<Rank2<N, I>, f64, Cpu> = dev.sample_normal();
        let g = l
            .forward(x.trace(l.alloc_grads()))
            .square()
            .mean()
            .backward();
        opt.update(&mut l, &g).unwrap();
    }
    let trained = l.delta_weight();
    assert!(rel(&trained, &before) > 1e-3, "training moved dW");
    let (qa_old, qb_old) = (host(&l.q_a), host(&l.q_b));
    let (a_old, b_old) = (host(&l.lora_a), host(&l.lora_b));
    l.refresh().unwrap();
    assert!(
        rel(&l.delta_weight(), &trained) <= 1e-10,
        "refresh: {:e}",
        rel(&l.delta_weight(), &trained)
    );
    let (qa, qb) = (host(&l.q_a), host(&l.q_b));
    assert!(orthogonality_error(&qa) < 1e-13 && orthogonality_error(&qb) < 1e-13);
    // The new bases span the factors as they were before the refresh...
    assert!((&b_old - &qb * (qb.transpose() * &b_old)).norm() <= 1e-12 * b_old.norm());
    assert!(
        (a_old.transpose() - &qa * (qa.transpose() * a_old.transpose())).norm()
            <= 1e-12 * a_old.norm()
    );
    // ... and their column signs follow the previous bases.
    for j in 0..R {
        assert!(
            qa.column(j).dot(&qa_old.column(j)) > 0.0 && qb.column(j).dot(&qb_old.column(j)) > 0.0
        );
    }
}

#[test]
fn factor_gradients_pass_through_the_bases() {
    let mut l = warmed_up();
    l.reparameterize().unwrap();
    let dev = Cpu::seed_from_u64(23);
    let x: Tensor<Rank2<N, I>, f64, Cpu> = dev.sample_normal();
    let gy: Tensor<Rank2<N, O>, f64, Cpu> = dev.sample_normal();
    let grads = (l.forward(x.trace(l.alloc_grads())) * gy.clone())
        .sum()
        .backward();
    let g = host(&gy).transpose() * host(&x); // full fine-tuning gradient [O, I]
    let k = l.scale();
    let da = host(&grads.get(&l.lora_a));
    let db = host(&grads.get(&l.lora_b));
    assert!(
        rel(&da, &(host(&l.q_b).transpose() * &g * k)) <= 1e-12,
        "dA"
    );
    assert!(rel(&db, &(&g * host(&l.q_a) * k)) <= 1e-12, "dB");
}
