//! Small `r x r` (or `2r x 2r`) work on the host, in `f64`, through nalgebra.

use crate::Error;
use nalgebra::DMatrix;

/// `sym(A) = (A + A^T) / 2`.
pub fn sym(a: &DMatrix<f64>) -> DMatrix<f64> {
    (a + a.transpose()) * 0.5
}

/// `R^{-1}` for the upper Cholesky factor `R` of an SPD matrix `G = R^T R`
/// (`R = L^T` with nalgebra's lower factor `L`, so `R^{-1} = (L^{-1})^T`).
pub fn cholesky_upper_inverse(g: &DMatrix<f64>, what: &'static str) -> Result<DMatrix<f64>, Error> {
    let chol = nalgebra::Cholesky::new(g.clone()).ok_or(Error::NotPositiveDefinite { what })?;
    let l = chol.l();
    let n = g.nrows();
    let l_inv = l
        .solve_lower_triangular(&DMatrix::identity(n, n))
        .ok_or(Error::Singular { what })?;
    if !l_inv.iter().all(|v| v.is_finite()) {
        return Err(Error::NotPositiveDefinite { what });
    }
    Ok(l_inv.transpose())
}

/// `G^{-1/2} = V diag(lambda^{-1/2}) V^T` for a symmetric positive definite `G = V diag(lambda) V^T`.
pub fn inv_sqrt_spd(g: &DMatrix<f64>, what: &'static str) -> Result<DMatrix<f64>, Error> {
    let eig = nalgebra::SymmetricEigen::new(sym(g));
    let max = eig.eigenvalues.amax();
    let floor = max * f64::EPSILON * g.nrows() as f64;
    if eig.eigenvalues.iter().any(|&l| !(l > floor)) {
        return Err(Error::NotPositiveDefinite { what });
    }
    let d = eig.eigenvalues.map(|l| 1.0 / l.sqrt());
    let v = &eig.eigenvectors;
    Ok(v * DMatrix::from_diagonal(&d) * v.transpose())
}

/// `||G - I||_2` for symmetric `G`: the largest `|lambda_i - 1|`.
pub fn spectral_distance_from_identity(g: &DMatrix<f64>) -> f64 {
    nalgebra::SymmetricEigen::new(sym(g))
        .eigenvalues
        .iter()
        .fold(0.0, |m, &l| if (l - 1.0).abs() > m || l.is_nan() { (l - 1.0).abs() } else { m })
}

/// Solves `A Z = B` by LU with partial pivoting.
pub fn solve(a: &DMatrix<f64>, b: &DMatrix<f64>, what: &'static str) -> Result<DMatrix<f64>, Error> {
    let z = a.clone().lu().solve(b).ok_or(Error::Singular { what })?;
    if z.iter().all(|v| v.is_finite()) {
        Ok(z)
    } else {
        Err(Error::Singular { what })
    }
}

/// The matrix exponential `expm(A)` (nalgebra's scaling-and-squaring Pade approximant).
pub fn expm(a: &DMatrix<f64>) -> DMatrix<f64> {
    a.clone().exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_inverse_whitens() {
        let g = DMatrix::from_row_slice(2, 2, &[4.0, 2.0, 2.0, 3.0]);
        let rinv = cholesky_upper_inverse(&g, "t").unwrap();
        // R^{-T} G R^{-1} = I
        let w = rinv.transpose() * &g * &rinv;
        assert!((w - DMatrix::identity(2, 2)).norm() < 1e-14);
        assert!(rinv[(1, 0)] == 0.0, "inverse of upper triangular is upper");
    }

    #[test]
    fn inv_sqrt_squares_to_inverse() {
        let g = DMatrix::from_row_slice(2, 2, &[2.0, 0.5, 0.5, 1.0]);
        let s = inv_sqrt_spd(&g, "t").unwrap();
        assert!((&s * &g * &s - DMatrix::identity(2, 2)).norm() < 1e-14);
        let bad = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert_eq!(
            inv_sqrt_spd(&bad, "t"),
            Err(Error::NotPositiveDefinite { what: "t" })
        );
    }

    #[test]
    fn distance_and_solve() {
        let g = DMatrix::from_row_slice(2, 2, &[1.5, 0.0, 0.0, 0.2]);
        assert!((spectral_distance_from_identity(&g) - 0.8).abs() < 1e-15);
        let a = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 4.0]);
        assert!(solve(&a, &DMatrix::identity(2, 2), "t").is_err());
        let e = expm(&DMatrix::from_row_slice(2, 2, &[0.0, 1.0, -1.0, 0.0]));
        assert!((e[(0, 0)] - 1f64.cos()).abs() < 1e-14 && (e[(0, 1)] - 1f64.sin()).abs() < 1e-14);
    }
}
