//! Cholesky-QR2 retraction.

use super::{self_grams, Sums};
use crate::kernels::{Real, TallOps};
use crate::small;
use crate::Error;

/// `R_X(xi) = qf(X + xi)` computed by Cholesky-QR twice: `Y <- Y R^{-1}` with
/// `R = chol(Y^T Y)` (upper, positive diagonal), starting from `Y = X + xi`. The second
/// pass restores orthogonality lost to rounding in the first. Matmul plus `r x r` work
/// only (two host round trips per batch); fails with [`Error::NotPositiveDefinite`] when
/// `X + xi` is numerically rank deficient.
pub fn cholesky_qr2<E: Real, B: TallOps<E>>(
    ops: &B,
    sums: Sums<B::Mat>,
) -> Result<Vec<B::Mat>, Error> {
    let Sums { mut ys, mut grams } = sums;
    for pass in 0..2 {
        if pass > 0 {
            grams = self_grams(ops, &ys)?;
        }
        let r_invs = grams
            .iter()
            .map(|g| small::cholesky_upper_inverse(g, "Cholesky-QR2"))
            .collect::<Result<Vec<_>, _>>()?;
        ys = ops.transform_each(ys.into_iter().zip(r_invs).collect())?;
    }
    Ok(ys)
}
