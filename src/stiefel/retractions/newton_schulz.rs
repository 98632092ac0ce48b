//! Newton-Schulz retraction.

use crate::kernels::{small, Real, TallOps};
use crate::Error;
use nalgebra::DMatrix;

/// An approximation of the polar retraction by `iters` Newton-Schulz steps from
/// `Y = X + xi`: `Y <- Y (3I - Y^T Y) / 2`. Matmul only; converges quadratically to the
/// polar factor when `||Y^T Y - I||_2 < 1`, which is checked first
/// ([`Error::NotConvergent`] otherwise). Small steps need few iterations: the distance
/// `d` to orthogonality goes to about `3 d^2 / 4` per iteration.
pub fn newton_schulz<E: Real, B: TallOps<E>>(
    ops: &B,
    x: &B::Mat,
    xi: &B::Mat,
    iters: usize,
) -> Result<B::Mat, Error> {
    let mut y = ops.lincomb(E::one(), x, E::one(), xi)?;
    let mut gram = ops.gram(&y, &y)?;
    small::within_unit_distance_of_identity(&gram)
        .map_err(|distance| Error::NotConvergent { distance })?;
    let r = gram.nrows();
    for i in 0..iters {
        if i > 0 {
            gram = ops.gram(&y, &y)?;
        }
        let step = (DMatrix::identity(r, r) * 3.0 - &gram) * 0.5;
        y = ops.mul_small(&y, &step)?;
    }
    Ok(y)
}
