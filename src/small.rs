//! Small `r x r` (or `2r x 2r`) work on the host, in `f64`, through nalgebra.

use crate::Error;
use nalgebra::DMatrix;

/// `sym(A) = (A + A^T) / 2`.
pub fn sym(a: &DMatrix<f64>) -> DMatrix<f64> {
    (a + a.transpose()) * 0.5
}

/// `R^{-1}` for the upper Cholesky factor `R` of an SPD matrix `G = R^T R` (read from
/// `G`'s upper triangle).
///
/// Column by column (Cholesky-Crout): `R_jj = sqrt(G_jj - sum_{k<j} R_kj^2)`,
/// `R_ji = (G_ji - sum_{k<j} R_kj R_ki) / R_jj` for `i > j`; then `R^{-1}` column by
/// column by back substitution. Plain loops over contiguous columns: at `r = 16` this is
/// a few thousand flops, where nalgebra's general path spends most of its time allocating.
pub fn cholesky_upper_inverse(g: &DMatrix<f64>, what: &'static str) -> Result<DMatrix<f64>, Error> {
    let n = g.nrows();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    // `r` column-major: column `j` is `r[j * n..(j + 1) * n]`.
    let mut r = vec![0.0; n * n];
    for j in 0..n {
        let (col_j, after) = r[j * n..].split_at_mut(n);
        let d = g[(j, j)] - dot(&col_j[..j], &col_j[..j]);
        if d.is_nan() || d <= 0.0 {
            return Err(Error::NotPositiveDefinite { what });
        }
        let r_jj = d.sqrt();
        col_j[j] = r_jj;
        for (i, col_i) in after.chunks_exact_mut(n).enumerate() {
            col_i[j] = (g[(j, j + 1 + i)] - dot(&col_j[..j], &col_i[..j])) / r_jj;
        }
    }
    // R x = e_c, for k = c down to 0: x_k = b_k / R_kk, b[..k] -= x_k R[..k, k].
    let mut inv = DMatrix::<f64>::zeros(n, n);
    let mut b = vec![0.0; n];
    for c in 0..n {
        b.fill(0.0);
        b[c] = 1.0;
        for k in (0..=c).rev() {
            let col_k = &r[k * n..(k + 1) * n];
            let x_k = b[k] / col_k[k];
            inv[(k, c)] = x_k;
            b[..k]
                .iter_mut()
                .zip(&col_k[..k])
                .for_each(|(bi, rik)| *bi -= x_k * rik);
        }
    }
    if !inv.iter().all(|v| v.is_finite()) {
        return Err(Error::NotPositiveDefinite { what });
    }
    Ok(inv)
}

/// `R^{-1}` for the upper Cholesky factor of `G = R^T R`, but only where `G` is well
/// conditioned: `kappa_bound = ||G||_inf ||R^{-1}||_inf ||R^{-1}||_1 <= max_condition`.
/// Since `G^{-1} = R^{-1} R^{-T}` and `||R^{-T}||_inf = ||R^{-1}||_1`, the bound is at
/// least `kappa_inf(G) = ||G||_inf ||G^{-1}||_inf`, itself at least the 2-norm
/// condition number `kappa_2(G)`. `None` where `G` is not numerically positive definite
/// or the bound is exceeded.
pub fn conditioned_cholesky_upper_inverse(
    g: &DMatrix<f64>,
    max_condition: f64,
) -> Option<DMatrix<f64>> {
    let r_inv = cholesky_upper_inverse(g, "").ok()?;
    let bound = inf_norm(g) * inf_norm(&r_inv) * inf_norm(&r_inv.transpose());
    (bound <= max_condition).then_some(r_inv)
}

/// `||A||_inf`, the largest absolute row sum (`A` is stored column by column).
fn inf_norm(a: &DMatrix<f64>) -> f64 {
    let mut sums = vec![0.0; a.nrows()];
    for col in a.as_slice().chunks_exact(a.nrows().max(1)) {
        sums.iter_mut().zip(col).for_each(|(s, v)| *s += v.abs());
    }
    sums.into_iter().fold(0.0, f64::max)
}

/// `G^{-1/2}` for a symmetric positive definite `G`, by the coupled Newton-Schulz
/// iteration (Higham, *Functions of Matrices*, 2008, sec. 6.7): with `c = ||G||_F`,
/// `Y_0 = G / c`, `Z_0 = I`, repeat `T = (3I - Z Y) / 2`, `Y <- Y T`, `Z <- T Z`; then
/// `Z -> (G / c)^{-1/2}` quadratically, and `G^{-1/2} = Z / sqrt(c)`.
///
/// Matmul only, and accurate to a few ulps where an eigendecomposition is not (nalgebra's
/// symmetric eigensolver loses up to 1e-8 on near-identity Gram matrices). Fails with
/// [`Error::NotPositiveDefinite`] if `G` is not, or if the iteration has not converged
/// after 100 steps (condition number beyond about 1e15).
pub fn inv_sqrt_spd(g: &DMatrix<f64>, what: &'static str) -> Result<DMatrix<f64>, Error> {
    let g = sym(g);
    if nalgebra::Cholesky::new(g.clone()).is_none() {
        return Err(Error::NotPositiveDefinite { what });
    }
    let n = g.nrows();
    let id = DMatrix::<f64>::identity(n, n);
    let c = g.norm();
    let (mut y, mut z) = (&g / c, id.clone());
    for _ in 0..100 {
        let t = newton_schulz_factor(&(&z * &y));
        let residual = (&t - &id).norm();
        y = &y * &t;
        z = &t * &z;
        if !residual.is_finite() {
            break;
        }
        if residual <= 1e-9 {
            // quadratic convergence: one more step reaches rounding
            let t = newton_schulz_factor(&(&z * &y));
            return Ok(sym(&(&t * &z)) / c.sqrt());
        }
    }
    Err(Error::NotPositiveDefinite { what })
}

/// The Newton-Schulz factor `(3I - M) / 2`: `Y (3I - Y^T Y) / 2` moves `Y` towards
/// orthonormal columns, and the coupled iterations below use the same factor.
pub fn newton_schulz_factor(m: &DMatrix<f64>) -> DMatrix<f64> {
    let [alpha, beta] = NEWTON_SCHULZ;
    identity_plus(alpha, beta, m)
}

/// A Newton-Schulz step's coefficients `[alpha, beta]`: `Y <- Y (alpha I + beta Y^T Y)`,
/// `(3I - Y^T Y) / 2`.
pub const NEWTON_SCHULZ: [f64; 2] = [1.5, -0.5];

/// `alpha I + beta M` for a square `M`.
pub fn identity_plus(alpha: f64, beta: f64, m: &DMatrix<f64>) -> DMatrix<f64> {
    let mut out = m * beta;
    out.set_diagonal(&(out.diagonal().add_scalar(alpha)));
    out
}

/// One Newton-Schulz polish of a coefficient matrix `C` against a Gram matrix `H`:
/// `C (3I - C^T H C) / 2`. If `Y = Z C` with `Z^T Z = H`, then `Y^T Y = C^T H C`, and the
/// polish takes `||C^T H C - I||` from `d` to about `3 d^2 / 4`: it removes the rounding
/// left by an eigendecomposition or a matrix exponential without any `n x r` work.
pub fn polish(c: &DMatrix<f64>, h: &DMatrix<f64>) -> DMatrix<f64> {
    c * newton_schulz_factor(&(c.transpose() * h * c))
}

/// Whether `||G - I||_2 < 1` for symmetric `G`, i.e. `0 < lambda(G) < 2`: decided exactly
/// by two Cholesky factorisations (of `G` and of `2I - G`). On failure returns an estimate
/// of `||G - I||_2` (from eigenvalues, for the error message only).
pub fn within_unit_distance_of_identity(g: &DMatrix<f64>) -> Result<(), f64> {
    let g = sym(g);
    let n = g.nrows();
    let two_minus = DMatrix::<f64>::identity(n, n) * 2.0 - &g;
    if nalgebra::Cholesky::new(g.clone()).is_some() && nalgebra::Cholesky::new(two_minus).is_some()
    {
        return Ok(());
    }
    let distance = g
        .symmetric_eigenvalues()
        .iter()
        .fold(f64::NAN, |m, &l| f64::max(m, (l - 1.0).abs()));
    Err(distance.max(1.0))
}

/// Solves `A Z = B` by LU with partial pivoting.
pub fn solve(
    a: &DMatrix<f64>,
    b: &DMatrix<f64>,
    what: &'static str,
) -> Result<DMatrix<f64>, Error> {
    let z = a.clone().lu().solve(b).ok_or(Error::Singular { what })?;
    if z.iter().all(|v| v.is_finite()) {
        Ok(z)
    } else {
        Err(Error::Singular { what })
    }
}

/// The thin SVD `A = U diag(sigma) V^T` of a small `m x n` matrix (`m >= n`) by one-sided
/// Jacobi rotations (Demmel and Veselic 1992): columns of `A V` are rotated pairwise until
/// orthogonal; then `sigma_j = ||(A V)_j||`, `U_j = (A V)_j / sigma_j`. Accurate to
/// rounding (nalgebra's bidiagonal SVD and symmetric eigensolver lose digits on clustered
/// spectra). Singular values are returned in decreasing order. `U` has orthonormal
/// columns whatever the rank: a column whose singular value is zero or lost in rounding
/// (at most `n eps sigma_max`) is a completion of the others ([`complete_columns`]), not
/// the rounding noise of `(A V)_j`; `A = U diag(sigma) V^T` still holds to rounding.
pub fn svd_jacobi(a: &DMatrix<f64>) -> (DMatrix<f64>, Vec<f64>, DMatrix<f64>) {
    let (m, n) = a.shape();
    assert!(m >= n, "svd_jacobi needs a tall matrix");
    let mut w = a.clone();
    let mut v = DMatrix::<f64>::identity(n, n);
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (alpha, beta, gamma) = (
                    w.column(p).norm_squared(),
                    w.column(q).norm_squared(),
                    w.column(p).dot(&w.column(q)),
                );
                if gamma.abs() <= f64::EPSILON * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let cs = 1.0 / (1.0 + t * t).sqrt();
                let sn = cs * t;
                for mat in [&mut w, &mut v] {
                    for i in 0..mat.nrows() {
                        let (x, y) = (mat[(i, p)], mat[(i, q)]);
                        mat[(i, p)] = cs * x - sn * y;
                        mat[(i, q)] = sn * x + cs * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    let norms: Vec<f64> = (0..n).map(|j| w.column(j).norm()).collect();
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let sigma: Vec<f64> = order.iter().map(|&j| norms[j]).collect();
    let negligible = n as f64 * f64::EPSILON * sigma.first().copied().unwrap_or(0.0);
    let kept: Vec<bool> = sigma.iter().map(|&s| s > negligible).collect();
    let mut u = DMatrix::from_fn(m, n, |i, k| {
        let j = order[k];
        if kept[k] {
            w[(i, j)] / norms[j]
        } else {
            0.0
        }
    });
    complete_columns(&mut u, &kept);
    let v = DMatrix::from_fn(n, n, |i, k| v[(i, order[k])]);
    (u, sigma, v)
}

/// Replaces the columns of `u` not marked `kept` so that all columns are orthonormal: each
/// is the unit vector `e_i` with the largest component outside the span of the columns
/// so far, orthogonalised against them by Gram-Schmidt, twice. The kept columns must be
/// orthonormal already.
pub fn complete_columns(u: &mut DMatrix<f64>, kept: &[bool]) {
    let m = u.nrows();
    let mut basis: Vec<usize> = (0..u.ncols()).filter(|&k| kept[k]).collect();
    for k in (0..u.ncols()).filter(|&k| !kept[k]) {
        let residual = |i: usize, u: &DMatrix<f64>, basis: &[usize]| {
            let mut x = nalgebra::DVector::<f64>::zeros(m);
            x[i] = 1.0;
            for _ in 0..2 {
                for &b in basis {
                    let c = u.column(b).dot(&x);
                    x -= u.column(b) * c;
                }
            }
            x
        };
        let best = (0..m)
            .map(|i| residual(i, u, &basis))
            .max_by(|a, b| a.norm().total_cmp(&b.norm()))
            .expect("a column has rows");
        let norm = best.norm();
        u.set_column(k, &(best / norm));
        basis.push(k);
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
    fn svd_of_rank_deficient_matrices_has_orthonormal_factors() {
        let b = DMatrix::from_row_slice(
            4,
            3,
            &[1.0, 2.0, 0.0, 0.5, 1.0, 0.0, -1.0, -2.0, 0.0, 2.0, 4.0, 0.0],
        );
        for a in [DMatrix::zeros(4, 3), b.clone(), &b * 1e-200] {
            let (u, sigma, v) = svd_jacobi(&a);
            let id = DMatrix::<f64>::identity(3, 3);
            assert!((u.transpose() * &u - &id).norm() < 1e-14, "U^T U: {a}");
            assert!((v.transpose() * &v - &id).norm() < 1e-14, "V^T V");
            let back =
                &u * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(sigma)) * v.transpose();
            assert!(
                (back - &a).norm() <= 1e-14 * a.norm().max(1e-300),
                "A reproduced"
            );
        }
    }

    #[test]
    fn conditioned_cholesky_bounds_the_condition_number() {
        // G = [[4, 2], [2, 2]] = R^T R with R = [[2, 1], [0, 1]], R^-1 = [[0.5, -0.5],
        // [0, 1]]: bound = ||G||_inf ||R^-1||_inf ||R^-1||_1 = 6 * 1 * 1.5 = 9
        // (kappa_inf(G) = 9 too, kappa_2(G) = (3 + sqrt 5) / (3 - sqrt 5) = 6.85).
        let g = DMatrix::from_row_slice(2, 2, &[4.0, 2.0, 2.0, 2.0]);
        let r_inv = conditioned_cholesky_upper_inverse(&g, 9.0).expect("bound = 9");
        let expect = DMatrix::from_row_slice(2, 2, &[0.5, -0.5, 0.0, 1.0]);
        assert!((r_inv - expect).norm() < 1e-15);
        assert!(conditioned_cholesky_upper_inverse(&g, 8.9).is_none());
        let indefinite = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert!(conditioned_cholesky_upper_inverse(&indefinite, 1e9).is_none());
    }

    #[test]
    fn jacobi_svd_reconstructs_and_orders() {
        let a = DMatrix::from_fn(6, 4, |i, j| {
            ((i * 5 + j * 3) % 7) as f64 - 3.0 + 0.1 * j as f64
        });
        let (u, s, v) = svd_jacobi(&a);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        let rebuilt =
            &u * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(s.clone())) * v.transpose();
        assert!((rebuilt - &a).norm() < 1e-13 * a.norm());
        assert!((v.transpose() * &v - DMatrix::identity(4, 4)).norm() < 1e-14);
        assert!((u.transpose() * &u - DMatrix::identity(4, 4)).norm() < 1e-13);
        // A known spectrum: diag(3, 2) rotated.
        let c = std::f64::consts::FRAC_1_SQRT_2;
        let r = DMatrix::from_row_slice(2, 2, &[c, -c, c, c]);
        let (_, s, _) = svd_jacobi(&(&r * DMatrix::from_row_slice(2, 2, &[2.0, 0.0, 0.0, 3.0])));
        assert!((s[0] - 3.0).abs() < 1e-15 && (s[1] - 2.0).abs() < 1e-15);
    }

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
    fn inv_sqrt_is_accurate_on_clustered_spectra() {
        // I + K^T K with K small and skew: eigenvalues clustered near 1, where an
        // eigendecomposition-based inverse square root loses digits.
        let k = DMatrix::from_fn(9, 9, |i, j| ((i * 7 + j * 3) % 5) as f64 - 2.0);
        let k = (&k - k.transpose()) * 0.01;
        let g = DMatrix::identity(9, 9) + k.transpose() * &k;
        let w = inv_sqrt_spd(&g, "t").unwrap();
        assert!((&w * &g * &w - DMatrix::identity(9, 9)).norm() < 50.0 * f64::EPSILON);
        assert!((&w - w.transpose()).norm() == 0.0, "symmetric");
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
        assert_eq!(within_unit_distance_of_identity(&g), Ok(()));
        let far = DMatrix::from_row_slice(2, 2, &[2.5, 0.0, 0.0, 0.2]);
        assert!((within_unit_distance_of_identity(&far).unwrap_err() - 1.5).abs() < 1e-12);
        let a = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 4.0]);
        assert!(solve(&a, &DMatrix::identity(2, 2), "t").is_err());
        let e = expm(&DMatrix::from_row_slice(2, 2, &[0.0, 1.0, -1.0, 0.0]));
        assert!((e[(0, 0)] - 1f64.cos()).abs() < 1e-14 && (e[(0, 1)] - 1f64.sin()).abs() < 1e-14);
    }
}
