//! Householder QR of a tall matrix, returning the thin `Q` with `diag(R) >= 0`.

use super::slices::{axpy, dot, transpose};
use super::{HostMat, Real};

/// The thin Q factor of `A = Q R` (`A: n x r`, `r <= n`), with the signs fixed so that
/// `diag(R) >= 0` (a zero diagonal entry counts as positive).
///
/// Reflector `k` is `H_k = I - beta_k v_k v_k^T` with `v_k = x - alpha_k e_1`,
/// `x = A[k.., k]`, `alpha_k = -sign(x_0) ||x||` and `beta_k = 2 / (v^T v)
/// = 1 / (||x|| (||x|| + |x_0|))`; then `R_kk = alpha_k`. `Q = H_0 ... H_{r-1} [I; 0]` is
/// accumulated backwards, and column `k` is negated where `alpha_k < 0`.
///
/// Work is done column-major (contiguous columns), `O(n r^2)` time, `O(n r)` memory.
pub fn householder_q<E: Real>(a: &HostMat<E>) -> HostMat<E> {
    let (n, r) = (a.rows, a.cols);
    assert!(r <= n, "householder_q needs a tall matrix");
    let mut cols = vec![E::zero(); n * r];
    transpose(&a.data, n, r, &mut cols);
    let mut alpha = vec![E::zero(); r];
    let mut beta = vec![E::zero(); r];
    for k in 0..r {
        let (done, rest) = cols.split_at_mut((k + 1) * n);
        let v = &mut done[k * n + k..];
        let sigma = dot(v, v).sqrt();
        if sigma == E::zero() {
            continue; // H_k = I, R_kk = 0
        }
        let x0 = v[0];
        alpha[k] = if x0 >= E::zero() { -sigma } else { sigma };
        beta[k] = E::one() / (sigma * (sigma + x0.abs()));
        v[0] = x0 - alpha[k];
        for col in rest.chunks_exact_mut(n) {
            let target = &mut col[k..];
            let w = dot(v, target) * beta[k];
            axpy(-w, v, target);
        }
    }
    let mut q = vec![E::zero(); n * r];
    for j in 0..r {
        q[j * n + j] = E::one();
    }
    for k in (0..r).rev() {
        if beta[k] == E::zero() {
            continue;
        }
        let v = &cols[k * n + k..(k + 1) * n];
        for col in q[k * n..].chunks_exact_mut(n) {
            let target = &mut col[k..];
            let w = dot(v, target) * beta[k];
            axpy(-w, v, target);
        }
    }
    for (k, col) in q.chunks_exact_mut(n).enumerate() {
        if alpha[k] < E::zero() {
            col.iter_mut().for_each(|x| *x = -*x);
        }
    }
    let mut out = vec![E::zero(); n * r];
    transpose(&q, r, n, &mut out);
    HostMat::new(n, r, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;

    #[test]
    fn reproduces_a_with_positive_diagonal() {
        let (n, r) = (7, 3);
        let data: Vec<f64> = (0..n * r)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let a = HostMat::new(n, r, data.clone());
        let q = householder_q(&a);
        let qm = DMatrix::from_row_slice(n, r, &q.data);
        let am = DMatrix::from_row_slice(n, r, &data);
        let rm = qm.transpose() * &am;
        assert!((qm.transpose() * &qm - DMatrix::<f64>::identity(r, r)).norm() < 1e-14);
        for i in 0..r {
            assert!(rm[(i, i)] > 0.0);
            for j in 0..i {
                assert!(rm[(i, j)].abs() < 1e-13, "R not upper triangular");
            }
        }
        assert!((&qm * rm - am).norm() < 1e-13);
    }

    #[test]
    fn zero_column_keeps_q_orthonormal() {
        let a = HostMat::new(3, 2, vec![1.0f64, 0.0, 1.0, 0.0, 0.0, 0.0]);
        let q = DMatrix::from_row_slice(3, 2, &householder_q(&a).data);
        assert!((q.transpose() * &q - DMatrix::<f64>::identity(2, 2)).norm() < 1e-15);
    }
}
