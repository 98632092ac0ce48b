//! Cayley retraction.

use super::{from_step_grams, Steps};
use crate::kernels::{Real, TallOps};
use crate::small;
use crate::Error;
use nalgebra::DMatrix;

/// `R_X(xi) = (I - W/2)^{-1} (I + W/2) X` with the skew matrix
/// `W = P xi X^T - X (P xi)^T`, `P = I - X X^T / 2`, computed without forming anything
/// `n x n` through the Sherman-Morrison-Woodbury identity (Wen and Yin 2013):
///
/// `R_X(xi) = X + U (I - V^T U / 2)^{-1} V^T X`, `U = [P xi, X]`, `V = [X, -P xi]`,
///
/// so that `W = U V^T`. Everything `r x r` comes from `K = X^T X`, `A = X^T xi` and
/// `S = xi^T xi` (one host round trip): with `P xi = xi - X A / 2`,
/// `X^T P xi = A - K A / 2` and `(P xi)^T P xi = S - A^T A + A^T K A / 4`. With
/// `Z = (I - V^T U / 2)^{-1} V^T X = [Z1; Z2]` (`2r x r`), the result is
/// `X (I + Z2 - A Z1 / 2) + xi Z1`. The `2r x 2r` system is solved on the host
/// ([`Error::Singular`] if it is numerically singular).
pub fn cayley<E: Real, B: TallOps<E>>(
    ops: &B,
    steps: &Steps<B::Mat>,
) -> Result<Vec<B::Mat>, Error> {
    from_step_grams(ops, steps, |[k, a, s]| coefficients(&k, &a, &s))
}

/// The coefficients `[I + Z2 - A Z1 / 2, Z1]` of `X` and `xi` from `K`, `A`, `S`.
fn coefficients(
    k: &DMatrix<f64>,
    a: &DMatrix<f64>,
    s: &DMatrix<f64>,
) -> Result<[DMatrix<f64>; 2], Error> {
    let r = k.nrows();
    let xtp = a - k * a * 0.5;
    let ptp = s - a.transpose() * a + a.transpose() * k * a * 0.25;
    // V^T U = [[X^T P xi, X^T X], [-(P xi)^T P xi, -(P xi)^T X]],  V^T X = [X^T X; -(P xi)^T X]
    let mut vtu = DMatrix::zeros(2 * r, 2 * r);
    vtu.view_mut((0, 0), (r, r)).copy_from(&xtp);
    vtu.view_mut((0, r), (r, r)).copy_from(k);
    vtu.view_mut((r, 0), (r, r)).copy_from(&(-&ptp));
    vtu.view_mut((r, r), (r, r)).copy_from(&(-xtp.transpose()));
    let mut vtx = DMatrix::zeros(2 * r, r);
    vtx.view_mut((0, 0), (r, r)).copy_from(k);
    vtx.view_mut((r, 0), (r, r)).copy_from(&(-xtp.transpose()));
    let lhs = DMatrix::identity(2 * r, 2 * r) - vtu * 0.5;
    let z = small::solve(&lhs, &vtx, "Cayley retraction")?;
    let z1 = z.rows(0, r).into_owned();
    let c_x = DMatrix::identity(r, r) + z.rows(r, r) - a * &z1 * 0.5;
    Ok([c_x, z1])
}
