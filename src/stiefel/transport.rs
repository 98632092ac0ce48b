//! Vector transport by projection.

use super::{project_mat, project_tangent};
use crate::kernels::{Real, StiefelDevice, TallOps};
use crate::Error;
use dfdx::shapes::Dim;
use dfdx::tensor::Tensor;

/// Carries `v` (a tangent vector at an earlier point, or any `n x r` matrix) to the
/// tangent space at `x_new`: `T(v) = P_{X_new}(v)`, on a backend's working form.
pub fn transport_mat<E: Real, B: TallOps<E>>(
    ops: &B,
    x_new: &B::Mat,
    v: B::Mat,
) -> Result<B::Mat, Error> {
    project_mat(ops, x_new, v)
}

/// Projection transport of `v` to the tangent space at `x_new`: `P_{X_new}(v)`.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::stiefel::{is_tangent, random_point, transport};
///
/// let dev = Cpu::default();
/// let x_new = random_point::<f64, _, _, _>(&dev, (6, 2), 1).unwrap();
/// let m: Tensor<(usize, usize), f64, _> = dev.sample_normal_like(&(6, 2));
/// assert!(is_tangent(&x_new, &transport(&x_new, &m).unwrap(), 1e-12));
/// ```
pub fn transport<N: Dim, R: Dim, E: Real, D: StiefelDevice<E>>(
    x_new: &Tensor<(N, R), E, D>,
    v: &Tensor<(N, R), E, D>,
) -> Result<Tensor<(N, R), E, D>, Error> {
    project_tangent(x_new, v)
}
