//! Orthogonal projection onto the tangent space of St(n, r) (Euclidean metric).

use crate::kernels::{Real, StiefelDevice, TallOps};
use crate::Error;
use dfdx::shapes::{Dim, HasShape, Shape};
use dfdx::tensor::Tensor;

/// `P_X(G) = G - X sym(X^T G)`, `sym(A) = (A + A^T) / 2`, on a backend's working form:
/// one Gram product and one multiply-add into `G`'s storage, `O(n r^2)`, with the
/// `r x r` work kept where the backend computes ([`TallOps::Kept`]: no host round trip on
/// a device). The fused host step of the optimizers forms the same `S = sym(X^T G)` by
/// [`TallOps::sym_kept`] with its other products.
pub fn project_mat<E: Real, B: TallOps<E>>(
    ops: &B,
    x: &B::Mat,
    g: B::Mat,
) -> Result<B::Mat, Error> {
    Error::check_shape(ops.dims(x), ops.dims(&g))?;
    let s = ops.sym_kept(ops.gram_kept(x, &g)?)?;
    ops.mul_kept_add(x, 0.0, &s, -1.0, Some(g))
}

/// Projects `g` onto the tangent space of the Stiefel manifold at `x`:
/// `P_X(G) = G - X sym(X^T G)`.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::stiefel::{is_tangent, project_tangent, random_point};
///
/// let dev = Cpu::default();
/// let x = random_point::<f64, _, _, _>(&dev, (8, 3), 0).unwrap();
/// let g: Tensor<(usize, usize), f64, _> = dev.sample_normal_like(&(8, 3));
/// let v = project_tangent(&x, &g).unwrap();
/// assert!(is_tangent(&x, &v, 1e-12));
/// ```
pub fn project_tangent<N: Dim, R: Dim, E: Real, D: StiefelDevice<E>>(
    x: &Tensor<(N, R), E, D>,
    g: &Tensor<(N, R), E, D>,
) -> Result<Tensor<(N, R), E, D>, Error> {
    let ops = x.device().tall_ops();
    ops.sized_call(x.shape().num_elements(), || {
        let (x_mat, g_mat) = ops.load_pair(x, g)?;
        let p = project_mat(&ops, &x_mat, g_mat)?;
        ops.store(p, *x.shape())
    })
}
