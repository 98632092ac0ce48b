//! Cholesky-QR2 retraction.

use crate::kernels::{small, Real, TallOps};
use crate::Error;

/// `R_X(xi) = qf(X + xi)` computed by Cholesky-QR twice: `Y <- Y R^{-1}` with
/// `R = chol(Y^T Y)` (upper, positive diagonal), starting from `Y = X + xi`. The second
/// pass restores orthogonality lost to rounding in the first. Matmul plus `r x r` work
/// only; fails with [`Error::NotPositiveDefinite`] when `X + xi` is numerically rank
/// deficient.
pub fn cholesky_qr2<E: Real, B: TallOps<E>>(
    ops: &B,
    x: &B::Mat,
    xi: &B::Mat,
) -> Result<B::Mat, Error> {
    let mut y = ops.lincomb(E::one(), x, E::one(), xi)?;
    for _ in 0..2 {
        let r_inv = small::cholesky_upper_inverse(&ops.gram(&y, &y)?, "Cholesky-QR2")?;
        y = ops.mul_small(&y, &r_inv)?;
    }
    Ok(y)
}
