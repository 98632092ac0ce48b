//! Diagnostics of points and tangent vectors, computed on the host with compensated
//! `f64` dot products, so that they measure the stored values rather than their own
//! rounding.

use crate::kernels::Real;
use dfdx::shapes::{Dim, HasShape, Shape};
use dfdx::tensor::{Storage, Tensor};
use nalgebra::DMatrix;

/// Columns of `x` as `f64` vectors (copies `x` to the host).
fn host_columns<N: Dim, R: Dim, E: Real, D: Storage<E>>(x: &Tensor<(N, R), E, D>) -> Vec<Vec<f64>> {
    let [n, r] = x.shape().concrete();
    let data = x.as_vec();
    (0..r)
        .map(|j| (0..n).map(|i| data[i * r + j].to_f64()).collect())
        .collect()
}

/// `sum_i a_i b_i` to about twice working precision (Ogita, Rump and Oishi's Dot2:
/// exact products by FMA, error-free sums by TwoSum, errors summed separately).
fn dot2(a: &[f64], b: &[f64]) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let p = x * y;
        let pe = x.mul_add(y, -p);
        let t = s + p;
        let z = t - s;
        let se = (s - (t - z)) + (p - z);
        s = t;
        c += pe + se;
    }
    s + c
}

/// `A^T B` by compensated dot products.
fn gram(a: &[Vec<f64>], b: &[Vec<f64>]) -> DMatrix<f64> {
    DMatrix::from_fn(a.len(), b.len(), |i, j| dot2(&a[i], &b[j]))
}

/// `||X^T X - I||_F`, accumulated with compensated `f64` dot products on the host.
/// Copies `x` to the host: a diagnostic, not a hot path.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::stiefel::orthogonality_error;
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank2<2, 1>, f64, _> = dev.tensor([[0.6], [0.8]]);
/// assert!(orthogonality_error(&x) < 1e-15);
/// ```
pub fn orthogonality_error<N: Dim, R: Dim, E: Real, D: Storage<E>>(
    x: &Tensor<(N, R), E, D>,
) -> f64 {
    let cols = host_columns(x);
    let r = cols.len();
    (gram(&cols, &cols) - DMatrix::identity(r, r)).norm()
}

/// Whether `v` is tangent at `x`: `||X^T V + V^T X||_F <= tol` (compensated `f64`).
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::stiefel::is_tangent;
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank2<2, 1>, f64, _> = dev.tensor([[1.0], [0.0]]);
/// let v: Tensor<Rank2<2, 1>, f64, _> = dev.tensor([[0.0], [3.0]]);
/// assert!(is_tangent(&x, &v, 1e-15));
/// assert!(!is_tangent(&x, &x, 1e-3));
/// ```
pub fn is_tangent<N: Dim, R: Dim, E: Real, D: Storage<E>>(
    x: &Tensor<(N, R), E, D>,
    v: &Tensor<(N, R), E, D>,
    tol: f64,
) -> bool {
    let a = gram(&host_columns(x), &host_columns(v));
    (&a + a.transpose()).norm() <= tol
}

#[cfg(test)]
mod tests {
    use super::dot2;

    #[test]
    fn dot2_recovers_cancelled_terms() {
        // Plain summation loses the 1.0 entirely; Dot2 keeps it.
        let a = [1e17, 1.0, -1e17];
        let b = [1.0, 1.0, 1.0];
        assert_eq!(dot2(&a, &b), 1.0);
    }
}
