//! Householder QR of a tall matrix, returning the thin `Q` with `diag(R) >= 0`.

mod blocking;
mod sweep;
#[cfg(target_arch = "x86_64")]
mod sweep_avx512;

use super::simd::{dispatch, Fma, Kernel};
use super::{HostMat, Real};
use nalgebra::DMatrix;
use sweep::sweep;

/// The thin Q factor of `A = Q R` (`A: n x r`, `r <= n`), with the signs fixed so that
/// `diag(R) >= 0` (a zero diagonal entry counts as positive).
///
/// Reflector `k` is `H_k = I - beta_k v_k v_k^T` with `v_k = x - alpha_k e_k`,
/// `x = A[k.., k]` (after the earlier reflectors), `alpha_k = -sign(x_k) ||x||` and
/// `beta_k = 2 / (v^T v) = 1 / (||x|| (||x|| + |x_k|))`; then `R_kk = alpha_k`.
///
/// The factorisation works row-major in one sweep over the rows per reflector: row `i`
/// receives `A[i, k+1..] -= beta_k v_i w` (with `w = A[k.., k+1..]^T v_k`, read off the
/// inner products of the previous sweep: `w = u - alpha_k A[k, k+1..]` where
/// `u = A[k.., ..]^T x`) and in the same pass adds its share to the inner products the
/// next reflector needs. `R` itself is never stored.
///
/// `Q = H_0 ... H_{r-1} [I; 0]` is then formed in compact WY form (Schreiber and Van Loan
/// 1989): `H_0 ... H_{r-1} = I - V T V^T` with `T` upper triangular,
/// `T_kk = beta_k`, `T[..k, k] = -beta_k T[..k, ..k] V[.., ..k]^T v_k`, so
/// `Q = [I; 0] - V (T V_top^T)` (`V_top` the top `r x r` block of `V`): one product
/// with a small matrix. `V[.., ..k]^T v_k` costs nothing extra: the columns before `k` are
/// final when sweep `k-1` runs, so its `u` holds `V[k.., ..k]^T x` and
/// `V^T v_k = u[..k] - alpha_k A[k, ..k]`. Column `k` is negated where `alpha_k < 0`.
pub fn householder_q<E: Real>(a: HostMat<E>) -> HostMat<E> {
    householder_q_by(a, |k| dispatch(k))
}

/// [`householder_q`] with the sweeps run by `run` (a [`dispatch`] tier, for tests).
fn householder_q_by<E: Real>(
    a: HostMat<E>,
    run: impl for<'a> FnOnce(Reflect<'a, E>) -> Reflectors,
) -> HostMat<E> {
    let (n, r) = (a.rows(), a.cols());
    assert!(r <= n, "householder_q needs a tall matrix");
    let mut v = a;
    let stride = v.stride();
    let Reflectors { alpha, beta, cross } = run(Reflect {
        a: v.storage_mut(),
        r,
        stride,
    });
    // V: reflectors below the diagonal, v_k0 on it, zeros above.
    for i in 0..r {
        v.storage_mut()[i * stride + i + 1..i * stride + r].fill(E::zero());
    }
    let mut t = DMatrix::<f64>::zeros(r, r);
    for k in 0..r {
        t[(k, k)] = beta[k];
        if k > 0 {
            let col = -beta[k] * (t.view((0, 0), (k, k)) * cross.view((0, k), (k, 1)));
            t.view_mut((0, k), (k, 1)).copy_from(&col);
        }
    }
    let v_top = DMatrix::from_fn(r, r, |i, j| v.get(i, j).to_f64());
    // Q D = [D; 0] - V (T V_top^T D), D = diag(sign(alpha)).
    let sign: Vec<f64> = alpha
        .iter()
        .map(|&a| if a < 0.0 { -1.0 } else { 1.0 })
        .collect();
    let mut m = t * v_top.transpose();
    for (k, &s) in sign.iter().enumerate() {
        m.column_mut(k).scale_mut(-s);
    }
    let mut q = v.mul_small_add(&m, None);
    let q_stride = q.stride();
    for (k, &s) in sign.iter().enumerate() {
        q.storage_mut()[k * q_stride + k] += E::of_f64(s);
    }
    q
}

/// The reflection sweeps over row-major data with `stride`-long rows.
struct Reflect<'a, E> {
    a: &'a mut [E],
    r: usize,
    stride: usize,
}

/// What the sweeps leave besides `V` (in `A`'s storage).
struct Reflectors {
    /// `alpha_k = R_kk` before the sign fix.
    alpha: Vec<f64>,
    /// `beta_k = 2 / (v_k^T v_k)`, zero where column `k` was already zero.
    beta: Vec<f64>,
    /// `cross[(i, k)] = v_i^T v_k` for `i < k` (zero elsewhere).
    cross: DMatrix<f64>,
}

impl<E: Real> Kernel for Reflect<'_, E> {
    type Output = Reflectors;

    #[inline(always)]
    fn run<F: Fma>(self) -> Self::Output {
        let Reflect { a, r, stride } = self;
        let mut alpha = vec![0.0; r];
        let mut beta = vec![0.0; r];
        let mut cross = DMatrix::zeros(r, r);
        // u = A[k.., ..]^T A[k.., k] for the current k.
        let mut u = vec![E::zero(); stride];
        let mut w = vec![E::zero(); stride];
        sweep::<E, F>(a, stride, None, &w, &mut u);
        for k in 0..r {
            let sigma = u[k].sqrt();
            let x0 = a[k * stride + k];
            w.fill(E::zero());
            if sigma > E::zero() {
                let al = if x0 >= E::zero() { -sigma } else { sigma };
                let be = E::one() / (sigma * (sigma + x0.abs()));
                alpha[k] = al.to_f64();
                beta[k] = be.to_f64();
                for j in k + 1..r {
                    // -beta w_j, w_j = v^T A[k.., j] = u_j - alpha A[k, j]
                    w[j] = -(u[j] - al * a[k * stride + j]) * be;
                }
                a[k * stride + k] = x0 - al;
                for i in 0..k {
                    cross[(i, k)] = (u[i] - al * a[k * stride + i]).to_f64();
                }
            }
            if k + 1 == r {
                break;
            }
            u.fill(E::zero());
            sweep::<E, F>(&mut a[(k + 1) * stride..], stride, Some(k), &w, &mut u);
        }
        Reflectors { alpha, beta, cross }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(n: usize, r: usize, data: Vec<f64>) {
        let a = HostMat::new(n, r, data.clone());
        let q = householder_q(a);
        let qm = DMatrix::from_row_slice(n, r, &q.to_compact());
        let am = DMatrix::from_row_slice(n, r, &data);
        let rm = qm.transpose() * &am;
        assert!((qm.transpose() * &qm - DMatrix::<f64>::identity(r, r)).norm() < 1e-14);
        for i in 0..r {
            assert!(rm[(i, i)] >= -1e-14);
            for j in 0..i {
                assert!(rm[(i, j)].abs() < 1e-13, "R not upper triangular");
            }
        }
        assert!((&qm * rm - am).norm() < 1e-13);
    }

    #[test]
    fn reproduces_a_with_positive_diagonal() {
        for (n, r) in [(7, 3), (9, 9), (40, 13), (5, 1), (33, 16)] {
            let data = (0..n * r)
                .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0 + (i % 7) as f64 * 0.01)
                .collect();
            check(n, r, data);
        }
    }

    /// The portable sweeps (baseline and AVX2 builds, used where the CPU has no AVX-512)
    /// give the same Q as the dispatched ones.
    #[test]
    fn every_sweep_tier_gives_the_same_q() {
        use crate::kernels::simd::{Fused, Plain};
        for (n, r) in [(40, 13), (33, 16), (70, 24), (9, 1)] {
            // Full rank: entries from an integer hash (splitmix64's finaliser).
            let data: Vec<f64> = (0..(n * r) as u64)
                .map(|i| {
                    let mut h = i.wrapping_add(0x9e3779b97f4a7c15);
                    h = (h ^ (h >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
                    h = (h ^ (h >> 27)).wrapping_mul(0x94d049bb133111eb);
                    (h ^ (h >> 31)) as f64 / u64::MAX as f64 - 0.5
                })
                .collect();
            let q = |run: fn(Reflect<'_, f64>) -> Reflectors| {
                DMatrix::from_row_slice(
                    n,
                    r,
                    &householder_q_by(HostMat::new(n, r, data.clone()), run).to_compact(),
                )
            };
            let dispatched = q(|k| dispatch(k));
            for tier in [q(|k| k.run::<Plain>()), q(|k| k.run::<Fused>())] {
                let diff = (tier - &dispatched).norm();
                assert!(diff < 1e-13, "{n}x{r}: {diff}");
            }
        }
    }

    #[test]
    fn zero_column_keeps_q_orthonormal() {
        let a = HostMat::new(3, 2, vec![1.0f64, 0.0, 1.0, 0.0, 0.0, 0.0]);
        let q = DMatrix::from_row_slice(3, 2, &householder_q(a).to_compact());
        assert!((q.transpose() * &q - DMatrix::<f64>::identity(2, 2)).norm() < 1e-15);
        check(
            4,
            3,
            vec![1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 6.0, 0.0],
        );
    }
}
