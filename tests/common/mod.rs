//! Helpers shared by the integration tests: host (nalgebra, f64) views of tensors.
#![allow(dead_code)]

use dfdx::prelude::*;
use nalgebra::DMatrix;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use sds_lora::kernels::Real;

pub type Mat<E> = Tensor<(usize, usize), E, Cpu>;

/// The tensor as an f64 nalgebra matrix.
pub fn host<E: Real>(t: &Mat<E>) -> DMatrix<f64> {
    let (n, r) = *t.shape();
    DMatrix::from_row_iterator(n, r, t.as_vec().into_iter().map(Real::to_f64))
}

/// A tensor holding `m` (rounded to E).
pub fn tensor<E: Real>(dev: &Cpu, m: &DMatrix<f64>) -> Mat<E>
where
    Cpu: Device<E>,
{
    let data: Vec<E> = m.transpose().iter().map(|&v| E::of_f64(v)).collect();
    dev.tensor_from_vec(data, (m.nrows(), m.ncols()))
}

/// An n x r matrix of standard normals from `seed`.
pub fn gaussian(n: usize, r: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    DMatrix::from_fn(n, r, |_, _| StandardNormal.sample(&mut rng))
}

/// A random orthogonal r x r matrix.
pub fn orthogonal(r: usize, seed: u64) -> DMatrix<f64> {
    gaussian(r, r, seed).qr().q()
}

/// The Frobenius norm of the difference of two tensors, in f64.
pub fn dist<E: Real>(a: &Mat<E>, b: &Mat<E>) -> f64 {
    (host(a) - host(b)).norm()
}
