//! Diagnostics of points and tangent vectors, computed on the host in `f64`.

use crate::kernels::Real;
use dfdx::shapes::{Dim, HasShape};
use dfdx::tensor::{Storage, Tensor};
use nalgebra::DMatrix;

fn host_f64<N: Dim, R: Dim, E: Real, D: Storage<E>>(x: &Tensor<(N, R), E, D>) -> DMatrix<f64> {
    let [n, r] = dfdx::shapes::Shape::concrete(x.shape());
    DMatrix::from_row_iterator(n, r, x.as_vec().into_iter().map(Real::to_f64))
}

/// `||X^T X - I||_F`, accumulated in `f64` on the host (so it measures the stored values,
/// not the rounding of the check). Copies `x` to the host: a diagnostic, not a hot path.
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
    let x = host_f64(x);
    let r = x.ncols();
    (x.transpose() * &x - DMatrix::identity(r, r)).norm()
}

/// Whether `v` is tangent at `x`: `||X^T V + V^T X||_F <= tol` (computed in `f64`).
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
    let (x, v) = (host_f64(x), host_f64(v));
    let a = x.transpose() * v;
    (&a + a.transpose()).norm() <= tol
}
