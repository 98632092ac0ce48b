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
/// step's `U S - eta P` (conditioned as the core `S` is). Each round (first passes, the
/// second passes' Gram matrices, second passes, Householder) runs for the whole batch at
/// once.
pub fn q_factors<E: Real, B: TallOps<E>>(
    ops: &B,
    sums: Sums<B::Mat>,
) -> Result<Vec<B::Mat>, Error> {
    let Sums { ys, grams } = sums;
    let max2 = cholesky_qr2_max_condition::<E>();
    let mut done: Vec<Option<B::Mat>> = ys.iter().map(|_| None).collect();
    // First passes, each marked with whether a second one follows.
    let mut first = Vec::new();
    let mut householder = Vec::new();
    for (k, (y, gram)) in ys.into_iter().zip(&grams).enumerate() {
        match cholesky_factor(gram) {
            Some(t) => first.push((k, false, y, t)),
            None => match small::conditioned_cholesky_upper_inverse(gram, max2) {
                Some(t) => first.push((k, true, y, t)),
                None => householder.push((k, y)),
            },
        }
    }
    let (marks, pairs): (Vec<_>, Vec<_>) = first
        .into_iter()
        .map(|(k, again, y, t)| ((k, again), (y, t)))
        .unzip();
    let mut again = Vec::new();
    for ((k, twice), y) in marks.into_iter().zip(ops.transform_each(pairs)?) {
        if twice {
            again.push((k, y));
        } else {
            done[k] = Some(y);
        }
    }
    // Second passes.
    let pairs: Vec<_> = again.iter().map(|(_, y)| (y, y)).collect();
    let grams = ops.grams(&pairs)?;
    let mut second = Vec::new();
    for ((k, y), gram) in again.into_iter().zip(&grams) {
        match small::conditioned_cholesky_upper_inverse(gram, max2) {
            Some(t) => second.push((k, (y, t))),
            None => householder.push((k, y)),
        }
    }
    let (at, pairs): (Vec<_>, Vec<_>) = second.into_iter().unzip();
    for (k, y) in at.into_iter().zip(ops.transform_each(pairs)?) {
        done[k] = Some(y);
    }
    let (at, mats): (Vec<_>, Vec<_>) = householder.into_iter().unzip();
    for (k, y) in at.into_iter().zip(ops.qr_qs(mats)?) {
        done[k] = Some(y);
    }
    Ok(done
        .into_iter()
        .map(|y| y.expect("one Q factor per sum"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{HostMat, HostOps};
    use dfdx::tensor::Cpu;

    /// A `40 x 4` matrix with singular values `sv` (orthonormal factors from the QR of
    /// fixed integer patterns).
    fn with_singular_values(sv: [f64; 4], seed: usize) -> DMatrix<f64> {
        let pattern = |n: usize, k: usize| {
            DMatrix::from_fn(n, k, |i, j| {
                ((i * (7 + seed) + j * 3 + seed) % 11) as f64 - 5.0
            })
            .qr()
            .q()
        };
        pattern(40, 4)
            * DMatrix::from_diagonal(&nalgebra::DVector::from_row_slice(&sv))
            * pattern(4, 4).transpose()
    }

    /// `qf(Y)` with `diag(R) >= 0` by nalgebra's Householder QR.
    fn reference(y: &DMatrix<f64>) -> DMatrix<f64> {
        let (q, r) = y.clone().qr().unpack();
        let signs = DMatrix::from_diagonal(&r.diagonal().map(|d| d.signum()));
        q * signs
    }

    /// A batch with one sum for each route (one Cholesky pass, Cholesky-QR2, Householder)
    /// gives each sum its own Q factor, in order.
    #[test]
    fn q_factors_route_each_sum_by_its_conditioning_in_order() {
        let ops = HostOps::new(&Cpu::default());
        let cases = [
            // kappa(Y^T Y) = 1.8: one pass.
            ([1.0, 1.2, 0.9, 1.1], 1e-13),
            // 400: two passes.
            ([1.0, 0.3, 0.1, 0.05], 1e-13),
            // 1e18: Householder; Q is determined to about kappa(Y) eps.
            ([1.0, 1e-9, 1.0, 0.5], 1e-5),
        ];
        let ys: Vec<_> = (cases.iter().enumerate())
            .map(|(k, (sv, _))| with_singular_values(*sv, k))
            .collect();
        let gram = |y: &DMatrix<f64>| y.transpose() * y;
        let twice = |g: &DMatrix<f64>| {
            small::conditioned_cholesky_upper_inverse(g, cholesky_qr2_max_condition::<f64>())
        };
        assert!(cholesky_factor(&gram(&ys[0])).is_some());
        assert!(cholesky_factor(&gram(&ys[1])).is_none() && twice(&gram(&ys[1])).is_some());
        assert!(twice(&gram(&ys[2])).is_none());
        let mats = (ys.iter())
            .map(|y| HostMat::new(40, 4, f64::row_major(y)))
            .collect();
        let qs = q_factors(&ops, Sums::new(&ops, mats).unwrap()).unwrap();
        for ((y, q), (_, tol)) in ys.iter().zip(qs).zip(cases) {
            let q = f64::from_row_major(40, 4, &q.to_compact());
            let orthogonality = (q.transpose() * &q - DMatrix::identity(4, 4)).norm();
            assert!(orthogonality < 1e-13, "orthogonality {orthogonality:e}");
            let gap = (&q - reference(y)).norm();
            assert!(gap < tol, "gap to the reference {gap:e}");
        }
    }
}
