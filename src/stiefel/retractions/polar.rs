//! Polar retraction.

use crate::kernels::{small, Real, TallOps};
use crate::Error;

/// `R_X(xi) = (X + xi)(I + xi^T xi)^{-1/2}`, the orthogonal polar factor of `Y = X + xi`
/// (the closest point of the manifold to `Y`). It is computed as `Y (Y^T Y)^{-1/2}`,
/// which equals the formula for tangent `xi` (then `Y^T Y = I + xi^T xi`) and stays on the
/// manifold to rounding even when `X` has drifted. The inverse square root comes from a
/// symmetric eigendecomposition of the `r x r` Gram matrix.
pub fn polar<E: Real, B: TallOps<E>>(ops: &B, x: &B::Mat, xi: &B::Mat) -> Result<B::Mat, Error> {
    let y = ops.lincomb(E::one(), x, E::one(), xi)?;
    let w = small::inv_sqrt_spd(&ops.gram(&y, &y)?, "polar retraction")?;
    ops.mul_small(&y, &w)
}
