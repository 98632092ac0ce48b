//! The six retractions, one file each, written once over [`TallOps`]
//! and over a batch of steps: each takes `(X_k, xi_k)` pairs and makes its host round trips
//! (Gram matrices down, small coefficient matrices up) once for the whole batch, so that on
//! a device a model's bases cost one transfer each way per round, not one per tensor.

mod cayley;
mod cholesky_qr2;
mod exp;
mod newton_schulz;
mod polar;
mod qr;

pub use cayley::cayley;
pub use cholesky_qr2::cholesky_qr2;
pub use exp::exp;
pub use newton_schulz::newton_schulz;
pub use polar::polar;
pub use qr::qr;

use crate::kernels::{Real, TallOps};
use crate::Error;

/// A batch of steps: pairs `(X, xi)` of a point and a tangent step.
pub type Steps<'a, M> = [(&'a M, &'a M)];

/// `Y_k = X_k + xi_k` for every step.
fn sums<E: Real, B: TallOps<E>>(ops: &B, steps: &Steps<B::Mat>) -> Result<Vec<B::Mat>, Error> {
    steps
        .iter()
        .map(|(x, xi)| ops.lincomb(E::one(), x, E::one(), xi))
        .collect()
}

/// `Y_k^T Y_k` for every matrix, in one batch.
fn self_grams<E: Real, B: TallOps<E>>(
    ops: &B,
    ys: &[B::Mat],
) -> Result<Vec<nalgebra::DMatrix<f64>>, Error> {
    let pairs: Vec<_> = ys.iter().map(|y| (y, y)).collect();
    ops.grams(&pairs)
}

/// `[X^T X, X^T xi, xi^T xi]` for every step, in one batch.
fn step_grams<E: Real, B: TallOps<E>>(
    ops: &B,
    steps: &Steps<B::Mat>,
) -> Result<Vec<[nalgebra::DMatrix<f64>; 3]>, Error> {
    let pairs: Vec<_> = steps
        .iter()
        .flat_map(|&(x, xi)| [(x, x), (x, xi), (xi, xi)])
        .collect();
    let mut grams = ops.grams(&pairs)?.into_iter();
    Ok(steps
        .iter()
        .map(|_| {
            let mut next = || grams.next().expect("three Gram matrices per step");
            [next(), next(), next()]
        })
        .collect())
}
