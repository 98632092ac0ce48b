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
pub use polar::{polar, polar_factor};
pub use qr::{cholesky_factor, cholesky_qr2_max_condition, q_factors, qr, CHOLESKY_MAX_CONDITION};

use crate::kernels::{Real, TallOps};
use crate::Error;
use nalgebra::DMatrix;

/// A batch of steps: pairs `(X, xi)` of a point and a tangent step.
pub type Steps<'a, M> = [(&'a M, &'a M)];

/// The sums `Y_k = X_k + xi_k` of a batch of steps with their Gram matrices `Y_k^T Y_k`:
/// the input of the retractions that depend on the sum alone (`qr`, `cholesky_qr2`,
/// `polar`, `newton_schulz`), which form their results in the sums' storage where the
/// backend can.
pub struct Sums<M> {
    ys: Vec<M>,
    grams: Vec<DMatrix<f64>>,
}

impl<M> Sums<M> {
    /// `X_k + xi_k` for every step. A non-finite Gram matrix fails with
    /// [`Error::NonFinite`] naming the point or the step that holds NaN or an infinity
    /// (the inputs are scanned only then).
    pub fn of_steps<E: Real, B: TallOps<E, Mat = M>>(
        ops: &B,
        steps: &Steps<M>,
    ) -> Result<Self, Error> {
        let ys = steps
            .iter()
            .map(|(x, xi)| ops.lincomb(E::one(), x, E::one(), xi))
            .collect::<Result<Vec<_>, _>>()?;
        let grams = self_grams(ops, &ys)?;
        check_finite(ops, steps, &grams)?;
        Ok(Self { ys, grams })
    }

    /// Sums the caller formed itself (fused with the step's computation, say). A
    /// non-finite Gram matrix fails with [`Error::NonFinite`]: a point or step held NaN
    /// or an infinity, or the sum overflows.
    pub fn new<E: Real, B: TallOps<E, Mat = M>>(ops: &B, ys: Vec<M>) -> Result<Self, Error> {
        let grams = self_grams(ops, &ys)?;
        Self::with_grams(ys, grams)
    }

    /// Sums the caller formed together with their Gram matrices `Y_k^T Y_k` (in the same
    /// pass, say), checked like [`Sums::new`]. Panics if the counts differ.
    pub fn with_grams(ys: Vec<M>, grams: Vec<DMatrix<f64>>) -> Result<Self, Error> {
        assert_eq!(
            ys.len(),
            grams.len(),
            "Sums::with_grams: one Gram matrix per sum"
        );
        if all_finite(&grams) {
            return Ok(Self { ys, grams });
        }
        Err(Error::NonFinite {
            what: "the sum X + xi of a point and its step (or its Gram matrix overflows)".into(),
        })
    }

    /// The Gram matrices `Y_k^T Y_k`.
    pub fn grams(&self) -> &[DMatrix<f64>] {
        &self.grams
    }

    /// The sums `Y_k`, moved out.
    pub fn into_sums(self) -> Vec<M> {
        self.ys
    }
}

/// Whether every entry of every Gram matrix is finite.
fn all_finite(grams: &[DMatrix<f64>]) -> bool {
    grams.iter().all(|g| g.iter().all(|v| v.is_finite()))
}

/// Fails with [`Error::NonFinite`] naming the first point or step that holds a NaN or an
/// infinity. `grams` are Gram matrices whose diagonals cover every input (those of
/// `X + xi`, or of `X` and `xi`): a non-finite entry makes a diagonal entry non-finite
/// (`X + xi` is finite only where both terms are), so the inputs themselves are scanned
/// only when a Gram matrix is not finite. Finite inputs whose Gram matrix overflows are
/// reported as such.
fn check_finite<E: Real, B: TallOps<E>>(
    ops: &B,
    steps: &Steps<B::Mat>,
    grams: &[DMatrix<f64>],
) -> Result<(), Error> {
    if all_finite(grams) {
        return Ok(());
    }
    let named: Vec<_> = steps
        .iter()
        .flat_map(|&(x, xi)| [(x, "point"), (xi, "tangent step")])
        .collect();
    let overflow = "the Gram matrix of the step (finite entries too large: it overflows)";
    Err(non_finite_input(ops, &named, overflow)?)
}

/// The [`Error::NonFinite`] for inputs whose products came out non-finite: it names the
/// first input that holds a NaN or an infinity (the inputs are scanned now, in one batch),
/// or, where all are finite, says `overflow`. Errors only on a device failure.
pub(crate) fn non_finite_input<E: Real, B: TallOps<E>>(
    ops: &B,
    named: &[(&B::Mat, &'static str)],
    overflow: &'static str,
) -> Result<Error, Error> {
    let mats: Vec<&B::Mat> = named.iter().map(|&(m, _)| m).collect();
    let finite = ops.all_finite_each(&mats)?;
    let what = match finite.iter().position(|ok| !ok) {
        Some(i) => named[i].1,
        None => overflow,
    };
    Ok(Error::NonFinite { what: what.into() })
}

/// `Y_k^T Y_k` for every matrix, in one batch.
fn self_grams<E: Real, B: TallOps<E>>(ops: &B, ys: &[B::Mat]) -> Result<Vec<DMatrix<f64>>, Error> {
    let pairs: Vec<_> = ys.iter().map(|y| (y, y)).collect();
    ops.grams(&pairs)
}

/// `X C_x + xi C_xi` for every step, with `[C_x, C_xi] = coefficients([X^T X, X^T xi,
/// xi^T xi])` (`r x r`, host): the form of the retractions computed from the step's Gram
/// matrices alone (`Cayley`, `Exp`). The Gram matrices come in one batch,
/// [checked](check_finite) for non-finite inputs, and the products go out in one.
fn from_step_grams<E: Real, B: TallOps<E>>(
    ops: &B,
    steps: &Steps<B::Mat>,
    coefficients: impl Fn([DMatrix<f64>; 3]) -> Result<[DMatrix<f64>; 2], Error>,
) -> Result<Vec<B::Mat>, Error> {
    let pairs: Vec<_> = steps
        .iter()
        .flat_map(|&(x, xi)| [(x, x), (x, xi), (xi, xi)])
        .collect();
    let grams = ops.grams(&pairs)?;
    check_finite(ops, steps, &grams)?;
    let mut grams = grams.into_iter();
    let outputs = steps
        .iter()
        .map(|&(x, xi)| {
            let mut next = || grams.next().expect("three Gram matrices per step");
            let [c_x, c_xi] = coefficients([next(), next(), next()])?;
            Ok(vec![(x, c_x), (xi, c_xi)])
        })
        .collect::<Result<Vec<_>, Error>>()?;
    ops.combine(outputs)
}
