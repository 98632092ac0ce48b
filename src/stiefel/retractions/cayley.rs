//! Cayley retraction.

use crate::kernels::{small, Real, TallOps};
use crate::Error;
use nalgebra::DMatrix;

/// `R_X(xi) = (I - W/2)^{-1} (I + W/2) X` with the skew matrix
/// `W = P xi X^T - X (P xi)^T`, `P = I - X X^T / 2`, computed without forming anything
/// `n x n` through the Sherman-Morrison-Woodbury identity (Wen and Yin 2013):
///
/// `R_X(xi) = X + U (I - V^T U / 2)^{-1} V^T X`, `U = [P xi, X]`, `V = [X, -P xi]`,
///
/// so that `W = U V^T`. With `Z = (I - V^T U / 2)^{-1} V^T X = [Z1; Z2]` (`2r x r`), the
/// result is `X (I + Z2) + P xi Z1`. The `2r x 2r` system is solved on the host
/// ([`Error::Singular`] if it is numerically singular).
pub fn cayley<E: Real, B: TallOps<E>>(ops: &B, x: &B::Mat, xi: &B::Mat) -> Result<B::Mat, Error> {
    // P xi = xi - X (X^T xi) / 2
    let p_xi = ops.mul_small_add(x, &(ops.gram(x, xi)? * -0.5), xi.clone())?;
    let xtx = ops.gram(x, x)?;
    let xtp = ops.gram(x, &p_xi)?;
    let ptp = ops.gram(&p_xi, &p_xi)?;
    let r = xtx.nrows();
    // V^T U = [[X^T P xi, X^T X], [-(P xi)^T P xi, -(P xi)^T X]],  V^T X = [X^T X; -(P xi)^T X]
    let mut vtu = DMatrix::zeros(2 * r, 2 * r);
    vtu.view_mut((0, 0), (r, r)).copy_from(&xtp);
    vtu.view_mut((0, r), (r, r)).copy_from(&xtx);
    vtu.view_mut((r, 0), (r, r)).copy_from(&(-&ptp));
    vtu.view_mut((r, r), (r, r)).copy_from(&(-xtp.transpose()));
    let mut vtx = DMatrix::zeros(2 * r, r);
    vtx.view_mut((0, 0), (r, r)).copy_from(&xtx);
    vtx.view_mut((r, 0), (r, r)).copy_from(&(-xtp.transpose()));
    let lhs = DMatrix::identity(2 * r, 2 * r) - vtu * 0.5;
    let z = small::solve(&lhs, &vtx, "Cayley retraction")?;
    let z1 = z.rows(0, r).into_owned();
    let z2 = z.rows(r, r).into_owned() + DMatrix::identity(r, r);
    let p_xi_z1 = ops.mul_small(&p_xi, &z1)?;
    ops.mul_small_add(x, &z2, p_xi_z1)
}
