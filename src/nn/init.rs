//! Initialisation of adapter tensors: random fills seeded from the device's generator,
//! the principal subspace of a weight, and the exact factorisation of a LoRA pair.

use crate::kernels::Real;
use crate::small;
use crate::stiefel::random_point;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A row-major tensor as an `f64` nalgebra matrix.
pub(crate) fn host<const N: usize, const M: usize, E: Real, D: Device<E>>(
    t: &Tensor<Rank2<N, M>, E, D>,
) -> DMatrix<f64> {
    DMatrix::from_row_iterator(N, M, t.as_vec().into_iter().map(Real::to_f64))
}

/// Fills `t` uniformly on `[-bound, bound]` from a generator seeded by the device's.
pub(crate) fn fill_uniform<S: Shape, E: Real, D: Device<E>>(
    t: &mut Tensor<S, E, D>,
    bound: f64,
) -> Result<(), D::Err> {
    let mut rng = StdRng::seed_from_u64(t.device().random_u64());
    let data: Vec<E> = (0..t.shape().num_elements())
        .map(|_| E::of_f64(rng.gen_range(-bound..=bound)))
        .collect();
    t.copy_from(&data);
    Ok(())
}

/// Kaiming-uniform, as dfdx's `Linear` and PEFT's `lora_A`: uniform on
/// `[-1/sqrt(FAN_IN), 1/sqrt(FAN_IN)]`.
pub(crate) fn kaiming_uniform<const FAN_IN: usize, S: Shape, E: Real, D: Device<E>>(
    t: &mut Tensor<S, E, D>,
) -> Result<(), D::Err> {
    fill_uniform(t, 1.0 / (FAN_IN as f64).sqrt())
}

/// Overwrites `t` with a Haar-random point of St(N, M), seeded by the device's generator.
pub(crate) fn fill_stiefel<const N: usize, const M: usize, E: Real, D: Device<E>>(
    t: &mut Tensor<Rank2<N, M>, E, D>,
) -> Result<(), D::Err> {
    let seed = t.device().random_u64();
    let q: Tensor<Rank2<N, M>, E, D> = random_point(t.device(), (Const, Const), seed)
        .unwrap_or_else(|e| panic!("SdsLinear basis [{N}, {M}]: {e}"));
    t.copy_from(&q.as_vec());
    Ok(())
}

/// The top-`r` left and right singular vectors of `w` (`O x I`), by randomised subspace
/// iteration (Halko, Martinsson and Tropp 2011: oversampling 10, 6 power iterations,
/// re-orthonormalised each time) and a Rayleigh-Ritz step with a Jacobi SVD. `O(O I r)`
/// per iteration; accurate where the spectrum has a gap after the `r`-th value.
pub(crate) fn principal_subspace(
    w: &DMatrix<f64>,
    r: usize,
    seed: u64,
) -> (DMatrix<f64>, DMatrix<f64>) {
    let (o, i) = w.shape();
    let k = (r + 10).min(o).min(i);
    let mut rng = StdRng::seed_from_u64(seed);
    let omega = DMatrix::from_fn(i, k, |_, _| rng.gen_range(-1.0..1.0));
    let mut q = (w * omega).qr().q();
    for _ in 0..6 {
        let z = (w.transpose() * &q).qr().q();
        q = (w * z).qr().q();
    }
    // W ~ Q (Q^T W); (Q^T W)^T = Ub diag(s) Vb^T, so W ~ (Q Vb) diag(s) Ub^T.
    let (ub, _, vb) = small::svd_jacobi(&(w.transpose() * &q));
    (
        (&q * vb).columns(0, r).into_owned(),
        ub.columns(0, r).into_owned(),
    )
}

/// Bases and scales reproducing a LoRA update exactly: with `B = Q_B R_B`,
/// `A^T = Q_A R_A` (QR) and `ratio R_B R_A^T = P diag(sigma) Q^T` (SVD of the `r x r`
/// core), `U = Q_B P`, `V = Q_A Q`, `s = sigma`, so that
/// `U diag(s) V^T = ratio B A`.
pub(crate) fn factor_lora_pair(
    b: &DMatrix<f64>,
    a: &DMatrix<f64>,
    ratio: f64,
) -> (DMatrix<f64>, Vec<f64>, DMatrix<f64>) {
    let (qb, rb) = b.clone().qr().unpack();
    let (qa, ra) = a.transpose().qr().unpack();
    let (p, sigma, q) = small::svd_jacobi(&((rb * ra.transpose()) * ratio));
    (qb * p, sigma, qa * q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_subspace_matches_dense_svd() {
        let (o, i, r) = (30, 20, 3);
        let lu = DMatrix::<f64>::from_fn(o, o, |a, b| ((a * 7 + b * 3) % 11) as f64)
            .qr()
            .q();
        let ru = DMatrix::<f64>::from_fn(i, i, |a, b| ((a * 5 + b * 2) % 13) as f64)
            .qr()
            .q();
        let sv: Vec<f64> = (0..i)
            .map(|k| {
                if k < r {
                    10.0 - k as f64
                } else {
                    1.0 / (1.0 + k as f64)
                }
            })
            .collect();
        let mut sigma = DMatrix::zeros(o, i);
        for (k, &v) in sv.iter().enumerate() {
            sigma[(k, k)] = v;
        }
        let w = &lu * sigma * ru.transpose();
        let (u, v) = principal_subspace(&w, r, 1);
        for k in 0..r {
            // Singular vectors are defined up to sign.
            let du = (u.column(k) - lu.column(k))
                .norm()
                .min((u.column(k) + lu.column(k)).norm());
            let dv = (v.column(k) - ru.column(k))
                .norm()
                .min((v.column(k) + ru.column(k)).norm());
            assert!(du < 1e-10 && dv < 1e-10, "vector {k}: {du:e} {dv:e}");
        }
    }
}
