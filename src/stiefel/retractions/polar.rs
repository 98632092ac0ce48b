//! Polar retraction.

use crate::kernels::{small, Real, TallOps};
use crate::Error;

/// `R_X(xi) = (X + xi)(I + xi^T xi)^{-1/2}`, the orthogonal polar factor of `Y = X + xi`
/// (the closest point of the manifold to `Y`). It is computed as `Y (Y^T Y)^{-1/2}`,
/// which equals the formula for tangent `xi` (then `Y^T Y = I + xi^T xi`) and stays on the
/// manifold to rounding even when `X` has drifted. The inverse square root of the `r x r`
/// Gram matrix `G` comes from a coupled Newton-Schulz iteration on the host, then
/// [polished](small::polish) against `G` so that the result is orthonormal to rounding.
pub fn polar<E: Real, B: TallOps<E>>(ops: &B, x: &B::Mat, xi: &B::Mat) -> Result<B::Mat, Error> {
    let y = ops.lincomb(E::one(), x, E::one(), xi)?;
    let gram = ops.gram(&y, &y)?;
    let w = small::inv_sqrt_spd(&gram, "polar retraction")?;
    ops.mul_small(&y, &small::polish(&w, &gram))
}
