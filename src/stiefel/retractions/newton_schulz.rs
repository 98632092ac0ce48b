//! Newton-Schulz retraction.

use super::Sums;
use crate::kernels::{Real, TallOps};
use crate::small;
use crate::Error;

/// An approximation of the polar retraction by `iters` Newton-Schulz steps from
/// `Y = X + xi`: `Y <- Y (3I - Y^T Y) / 2`. Converges quadratically to the polar factor
/// when `||Y^T Y - I||_2 < 1`, which is checked first on the host
/// ([`Error::NotConvergent`] otherwise); the Gram matrices of that check give the first
/// step, and the later steps keep `Y^T Y` where the backend computes
/// ([`TallOps::mul_kept_add`]). Small
/// steps need few iterations: the distance `d` to orthogonality goes to about `3 d^2 / 4`
/// per iteration.
pub fn newton_schulz<E: Real, B: TallOps<E>>(
    ops: &B,
    sums: Sums<B::Mat>,
    iters: usize,
) -> Result<Vec<B::Mat>, Error> {
    let Sums { mut ys, grams } = sums;
    for g in &grams {
        small::within_unit_distance_of_identity(g)
            .map_err(|distance| Error::NotConvergent { distance })?;
    }
    if iters == 0 {
        return Ok(ys);
    }
    let first = grams.iter().map(small::newton_schulz_factor);
    ys = ops.transform_each(ys.into_iter().zip(first).collect())?;
    let [alpha, beta] = small::NEWTON_SCHULZ;
    for _ in 1..iters {
        ys = ys
            .iter()
            .map(|y| ops.mul_kept_add(y, alpha, &ops.gram_kept(y, y)?, beta, None))
            .collect::<Result<_, _>>()?;
    }
    Ok(ys)
}
