//! Polar retraction.

use super::Sums;
use crate::kernels::{Real, TallOps};
use crate::small;
use crate::Error;
use nalgebra::DMatrix;

/// `R_X(xi) = (X + xi)(I + xi^T xi)^{-1/2}`, the orthogonal polar factor of `Y = X + xi`
/// (the closest point of the manifold to `Y`). It is computed as `Y (Y^T Y)^{-1/2}`,
/// which equals the formula for tangent `xi` (then `Y^T Y = I + xi^T xi`) and stays on the
/// manifold to rounding even when `X` has drifted. The inverse square root of the `r x r`
/// Gram matrix `G` comes from a coupled Newton-Schulz iteration on the host, then
/// polished against `G` so that the result is orthonormal to rounding.
pub fn polar<E: Real, B: TallOps<E>>(ops: &B, sums: Sums<B::Mat>) -> Result<Vec<B::Mat>, Error> {
    let Sums { ys, grams } = sums;
    let factors = grams
        .iter()
        .map(polar_factor)
        .collect::<Result<Vec<_>, Error>>()?;
    ops.transform_each(ys.into_iter().zip(factors).collect())
}

/// The right factor of [`polar`] from the Gram matrix `G = Y^T Y` alone: `G^{-1/2}`,
/// polished against `G`, so that the polar factor is `Y G^{-1/2}`.
pub fn polar_factor(gram: &DMatrix<f64>) -> Result<DMatrix<f64>, Error> {
    Ok(small::polish(
        &small::inv_sqrt_spd(gram, "polar retraction")?,
        gram,
    ))
}
