//! The layer, data and optimizers the basis-update tests share, and the dense reference
//! they are checked against (`dense`).
#![allow(dead_code)] // shared by two test targets; each uses part of it

pub mod dense;

use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::nn::{builders, Adapter, SdsLinear};
use sds_lora::optim::{AdamRule, Momentum, ParamGroups, SdsAdamConfig, SdsSgdConfig, SgdRule};

pub const I: usize = 9;
pub const O: usize = 7;
pub const R: usize = 3;
pub const B: usize = 11;
pub type Layer = SdsLinear<I, O, R, f64, Cpu>;

pub fn host<const N: usize, const M: usize>(t: &Tensor<Rank2<N, M>, f64, Cpu>) -> DMatrix<f64> {
    DMatrix::from_row_slice(N, M, &t.as_vec())
}

pub fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

pub fn fixed(rows: usize, cols: usize, k: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |i, j| ((i * 7 + j * 3) as f64 * k + 0.3).sin())
}

/// A random orthogonal `n x n` matrix.
pub fn orthogonal(n: usize, k: f64) -> DMatrix<f64> {
    fixed(n, n, k).qr().q()
}

/// The layer's data: inputs `X: [B, I]` and targets `T: [B, O]`, loss
/// `L = 1/2 sum (y - T)^2`.
pub fn data() -> (DMatrix<f64>, DMatrix<f64>) {
    (fixed(B, I, 0.37), fixed(B, O, 0.91) * 2.0)
}

/// A layer with a full, non-diagonal, invertible core and `c = 1.5`.
pub fn layer() -> Layer {
    let dev = Cpu::seed_from_u64(4);
    let mut l = dev.build_module::<builders::SdsLinear<I, O, R>, f64>();
    let core = fixed(R, R, 0.55) * 1.3 + DMatrix::identity(R, R) * 2.0;
    l.core.copy_from(&row_major(&core));
    l.alpha = 4.5;
    l
}

/// `dL/dW` for the dense weight `W = W0 + dW`.
pub fn full_gradient(l: &Layer) -> DMatrix<f64> {
    let (x, t) = data();
    let w = host(&l.weight) + host(&l.delta_weight().unwrap());
    let b = DMatrix::from_fn(B, O, |_, j| l.bias.as_vec()[j]);
    let gy = &x * w.transpose() + b - t;
    gy.transpose() * x
}

/// The layer's gradients from its own backward pass.
pub fn gradients(l: &Layer) -> Gradients<f64, Cpu> {
    let dev = Cpu::default();
    let (x, t) = data();
    let xt: Tensor<Rank2<B, I>, f64, Cpu> = dev.tensor_from_vec(row_major(&x), (Const, Const));
    let tt: Tensor<Rank2<B, O>, f64, Cpu> = dev.tensor_from_vec(row_major(&t), (Const, Const));
    let y = l.forward(xt.trace(l.alloc_grads()));
    ((y - tt).square().sum() * 0.5).backward()
}

pub fn sgd(lr: f64, momentum: Option<Momentum>, dampening: f64) -> SdsSgdConfig {
    SdsSgdConfig {
        groups: ParamGroups::uniform(lr),
        rule: SgdRule {
            momentum,
            dampening,
        },
        ..Default::default()
    }
}

pub fn adam(lr: f64) -> SdsAdamConfig {
    SdsAdamConfig {
        groups: ParamGroups::uniform(lr),
        rule: AdamRule::default(),
        ..Default::default()
    }
}

/// The optimizer's factors after `steps` steps.
pub fn run<O2: dfdx::optim::Optimizer<Layer, Cpu, f64>>(
    l: &Layer,
    mut opt: O2,
    steps: usize,
) -> Layer {
    let mut l = l.clone();
    for _ in 0..steps {
        let g = gradients(&l);
        opt.update(&mut l, &g).unwrap();
    }
    l
}

/// The factors' bits.
pub fn bits(l: &Layer) -> Vec<u64> {
    [l.basis_out.as_vec(), l.core.as_vec(), l.basis_in.as_vec()]
        .concat()
        .into_iter()
        .map(f64::to_bits)
        .collect()
}
