//! QR retraction.

use super::Sums;
use crate::kernels::{Real, TallOps};
use crate::small;
use crate::Error;
use nalgebra::DMatrix;

/// The largest bound on the condition number of `Y^T Y` (computed by
/// `small::conditioned_cholesky_upper_inverse`, at least `kappa_2(Y)^2`) for which the
/// Q factor is taken from one Cholesky factorisation. One-pass Cholesky-QR loses
/// orthogonality in proportion to `kappa_2(Y)^2` (Yamamoto, Nakatsukasa, Yanagisawa and
/// Fukaya 2015); measured in `f32` at `kappa_2(Y)^2 = 4` it stays below the Householder
/// error at the same shapes and well inside `10 eps sqrt(r)` (at `8` it comes within 15%
/// of that bound for `r = 2`).
pub const CHOLESKY_MAX_CONDITION: f64 = 4.0;

/// `R_X(xi) = qf(X + xi)`, the Q factor of the thin QR `Y = X + xi = Q R` with
/// `diag(R) >= 0`.
///
/// The factor is unique, and two algorithms compute it:
/// - where `Y` is well conditioned, `Q = Y R^{-1}` with `R = chol(Y^T Y)` (one Gram
///   product, one product with a small matrix). For a tangent step
///   `Y^T Y = I + xi^T xi`, so every step of moderate size (`||xi||_2 <= sqrt(3)` where the
///   bound is tight) takes this path;
/// - otherwise ([`CHOLESKY_MAX_CONDITION`] exceeded, or `Y^T Y` numerically singular)
///   Householder QR, which is backward stable for any `Y`.
pub fn qr<E: Real, B: TallOps<E>>(ops: &B, sums: Sums<B::Mat>) -> Result<Vec<B::Mat>, Error> {
    let Sums { ys, grams } = sums;
    let factors: Vec<_> = grams.iter().map(cholesky_factor).collect();
    let mut by_cholesky = Vec::new();
    let mut by_householder = Vec::new();
    for (y, r_inv) in ys.into_iter().zip(&factors) {
        match r_inv {
            Some(r_inv) => by_cholesky.push((y, r_inv.clone())),
            None => by_householder.push(y),
        }
    }
    let mut cholesky_qs = ops.transform_each(by_cholesky)?.into_iter();
    let mut householder_qs = ops.qr_qs(by_householder)?.into_iter();
    Ok(factors
        .iter()
        .map(|r_inv| {
            let next = match r_inv {
                Some(_) => cholesky_qs.next(),
                None => householder_qs.next(),
            };
            next.expect("one Q factor per step")
        })
        .collect())
}

/// The right factor of [`qr`]'s Cholesky path from the Gram matrix `G = Y^T Y` alone:
/// `R^{-1}` with `R = chol(G)`, so that `qf(Y) = Y R^{-1}`; `None` where `G` is not
/// conditioned for it ([`CHOLESKY_MAX_CONDITION`]) and `Y` needs Householder QR.
pub fn cholesky_factor(gram: &DMatrix<f64>) -> Option<DMatrix<f64>> {
    small::conditioned_cholesky_upper_inverse(gram, CHOLESKY_MAX_CONDITION)
}

/// The largest bound on the condition number of `Y^T Y` for which [`q_factors`] takes the
/// Q factor by Cholesky-QR2: `1 / (64 eps)`, so that `kappa_2(Y) <= (64 eps)^{-1/2}`
/// (about 360 in `f32`, 8e6 in `f64`), inside the range where the second pass restores
/// orthogonality to rounding (Yamamoto, Nakatsukasa, Yanagisawa and Fukaya 2015).
pub fn cholesky_qr2_max_condition<E: Real>() -> f64 {
    1.0 / (64.0 * E::EPSILON.to_f64())
}

/// `qf(Y)`, the Q factor of the thin QR `Y = Q R` with `diag(R) >= 0`, of each sum,
/// whatever its conditioning: one Cholesky pass (`Y R^{-1}`, `R = chol(Y^T Y)`) where
/// `Y^T Y` is within [`CHOLESKY_MAX_CONDITION`] (as [`qr`]), two passes (Cholesky-QR2)
/// where it is within [`cholesky_qr2_max_condition`], Householder QR otherwise. All
/// compute the same factor; the passes are matmul plus `r x r` work, cheaper than
/// Householder's sweeps. For factors far from a manifold point, such as the basis-update
/// step's `U S - eta P` (conditioned as the core `S` is).
pub fn q_factors<E: Real, B: TallOps<E>>(
    ops: &B,
    sums: Sums<B::Mat>,
) -> Result<Vec<B::Mat>, Error> {
    let Sums { ys, grams } = sums;
    let max2 = cholesky_qr2_max_condition::<E>();
    let pass = |y: B::Mat, t: DMatrix<f64>| -> Result<B::Mat, Error> {
        Ok(ops.transform_each(vec![(y, t)])?.remove(0))
    };
    ys.into_iter()
        .zip(&grams)
        .map(|(y, gram)| {
            if let Some(t) = cholesky_factor(gram) {
                return pass(y, t);
            }
            let Some(t) = small::conditioned_cholesky_upper_inverse(gram, max2) else {
                return ops.qr_q(y);
            };
            let y = pass(y, t)?;
            match small::conditioned_cholesky_upper_inverse(&ops.gram(&y, &y)?, max2) {
                Some(t) => pass(y, t),
                None => ops.qr_q(y),
            }
        })
        .collect()
}
