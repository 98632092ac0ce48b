//! Spectral measures of a matrix's rank.

use crate::small::svd_jacobi;
use nalgebra::DMatrix;

/// Singular values of `m` (decreasing), by a Jacobi SVD of `m` or `m^T`, whichever is tall.
pub fn singular_values(m: &DMatrix<f64>) -> Vec<f64> {
    if m.nrows() >= m.ncols() {
        svd_jacobi(m).1
    } else {
        svd_jacobi(&m.transpose()).1
    }
}

/// Effective rank (Roy and Vetterli 2007): `exp(H(p))`, the exponential of the Shannon
/// entropy of the normalised singular values `p_i = sigma_i / sum_j sigma_j`. Between 1
/// (one direction) and the rank (all singular values equal); 0 for the zero matrix.
pub fn effective_rank(m: &DMatrix<f64>) -> f64 {
    let s = singular_values(m);
    let total: f64 = s.iter().sum();
    if total == 0.0 {
        return 0.0;
    }
    let entropy: f64 = s
        .iter()
        .map(|&x| x / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// Stable rank: `||M||_F^2 / ||M||_2^2` (sum of squared singular values over the largest
/// squared); 0 for the zero matrix.
pub fn stable_rank(m: &DMatrix<f64>) -> f64 {
    let s = singular_values(m);
    match s.first() {
        Some(&top) if top > 0.0 => s.iter().map(|x| x * x).sum::<f64>() / (top * top),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// diag(3, 2, 1) between two rotations: known singular values.
    fn known() -> DMatrix<f64> {
        let (c, s) = (0.6, 0.8);
        let left =
            DMatrix::from_row_slice(4, 3, &[c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        let right = DMatrix::from_row_slice(3, 3, &[1.0, 0.0, 0.0, 0.0, c, s, 0.0, -s, c]);
        left * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![3.0, 2.0, 1.0])) * right
    }

    #[test]
    fn hand_computed_ranks() {
        let m = known();
        let s = singular_values(&m);
        assert!(
            (s[0] - 3.0).abs() < 1e-14 && (s[1] - 2.0).abs() < 1e-14 && (s[2] - 1.0).abs() < 1e-14
        );
        // p = (1/2, 1/3, 1/6): H = ln 2 / 2 + ln 3 / 3 + ln 6 / 6.
        let h = 2f64.ln() / 2.0 + 3f64.ln() / 3.0 + 6f64.ln() / 6.0;
        assert!((effective_rank(&m) - h.exp()).abs() < 1e-13);
        assert!((effective_rank(&m.transpose()) - h.exp()).abs() < 1e-13);
        // (9 + 4 + 1) / 9
        assert!((stable_rank(&m) - 14.0 / 9.0).abs() < 1e-13);
        let flat = DMatrix::<f64>::identity(5, 3) * 2.0;
        assert!(
            (effective_rank(&flat) - 3.0).abs() < 1e-13 && (stable_rank(&flat) - 3.0).abs() < 1e-13
        );
        assert_eq!(effective_rank(&DMatrix::zeros(3, 2)), 0.0);
    }
}
