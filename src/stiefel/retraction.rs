//! Choosing a retraction and applying it.

use super::retractions::{self, Sums};
use crate::kernels::{Real, StiefelDevice, TallOps};
use crate::Error;
use dfdx::shapes::{Dim, HasShape, Shape};
use dfdx::tensor::Tensor;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// A retraction `R_X(xi)` of St(n, r): a map from a tangent step back onto the manifold
/// with `R_X(0) = X` and `R_X(t xi) = X + t xi + O(t^2)`.
///
/// All cost `O(n r^2)` time and `O(n r)` memory; nothing `n x n` is formed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retraction {
    /// Q factor of `X + xi` with `diag(R) >= 0`: the reference. One Cholesky-QR pass where
    /// `X + xi` is well conditioned (every moderate step), Householder otherwise (see
    /// [`retractions::qr`]).
    #[default]
    Qr,
    /// The same Q factor by Cholesky-QR, twice: matmul plus `r x r` work.
    CholeskyQr2,
    /// The polar factor `(X + xi)(I + xi^T xi)^{-1/2}`: the closest manifold point.
    Polar,
    /// `iters` Newton-Schulz steps towards the polar factor: matmul only, small steps.
    NewtonSchulz {
        /// Number of iterations (4 or more for agreement with `Polar` to 1e-10 at
        /// moderate steps).
        iters: usize,
    },
    /// The Cayley transform of the skew matrix `P xi X^T - X xi^T P`.
    Cayley,
    /// The exponential map: the Euclidean-metric geodesic.
    Exp,
}

impl Retraction {
    /// All six, `NewtonSchulz` with `iters` iterations (for benches and ablations).
    pub fn all(iters: usize) -> [Retraction; 6] {
        [
            Retraction::Qr,
            Retraction::CholeskyQr2,
            Retraction::Polar,
            Retraction::NewtonSchulz { iters },
            Retraction::Cayley,
            Retraction::Exp,
        ]
    }

    /// A short lowercase name (`"qr"`, `"cholesky_qr2"`, `"polar"`, `"newton_schulz"`,
    /// `"cayley"`, `"exp"`).
    pub fn name(&self) -> &'static str {
        match self {
            Retraction::Qr => "qr",
            Retraction::CholeskyQr2 => "cholesky_qr2",
            Retraction::Polar => "polar",
            Retraction::NewtonSchulz { .. } => "newton_schulz",
            Retraction::Cayley => "cayley",
            Retraction::Exp => "exp",
        }
    }

    /// Parses [`Retraction::name`] (NewtonSchulz takes `ns_iters` iterations).
    pub fn from_name(name: &str, ns_iters: usize) -> Option<Self> {
        Self::all(ns_iters).into_iter().find(|r| r.name() == name)
    }

    /// Applies the retraction on a backend's working form, after checking that `x` and
    /// `xi` have the same tall shape and are finite.
    pub fn apply<E: Real, B: TallOps<E>>(
        &self,
        ops: &B,
        x: &B::Mat,
        xi: &B::Mat,
    ) -> Result<B::Mat, Error> {
        Ok(self.apply_batch(ops, &[(x, xi)])?.remove(0))
    }

    /// Applies the retraction to a batch of steps `(X_k, xi_k)` (shapes may differ between
    /// steps), after checking that each pair has one tall shape and is finite. On a device
    /// backend the host round trips are made once for the batch. Any failure fails the
    /// batch.
    pub fn apply_batch<E: Real, B: TallOps<E>>(
        &self,
        ops: &B,
        steps: &[(&B::Mat, &B::Mat)],
    ) -> Result<Vec<B::Mat>, Error> {
        steps
            .iter()
            .try_for_each(|(x, xi)| check_step(ops, x, xi))?;
        // Each retraction checks its inputs for NaN and infinity through the first Gram
        // matrices it forms (`retractions::check_finite`): no separate pass.
        match *self {
            Retraction::Cayley => retractions::cayley(ops, steps),
            Retraction::Exp => retractions::exp(ops, steps),
            _ => SumRetraction(*self).apply_batch(ops, Sums::of_steps(ops, steps)?),
        }
    }

    /// [`Retraction::apply`] on inputs the caller gives up: a sum retraction
    /// ([`Retraction::sum_form`]) forms `X + xi` in the step's storage and frees the
    /// point's before its products, one matrix fewer in flight. A NaN or an infinity in
    /// either input is then reported as one in the sum ([`Error::NonFinite`]): the step
    /// that held it is overwritten.
    pub(crate) fn apply_owned<E: Real, B: TallOps<E>>(
        &self,
        ops: &B,
        x: B::Mat,
        xi: B::Mat,
    ) -> Result<B::Mat, Error> {
        let Some(sum) = self.sum_form() else {
            return self.apply(ops, &x, &xi);
        };
        check_step(ops, &x, &xi)?;
        let y = ops.axpy(E::one(), &x, xi)?;
        drop(x);
        Ok(sum.apply_batch(ops, Sums::new(ops, vec![y])?)?.remove(0))
    }

    /// This retraction as a function of the sum `X + xi`, if it is one (all but `Cayley`
    /// and `Exp`, which need the point and the step apart).
    pub fn sum_form(&self) -> Option<SumRetraction> {
        match self {
            Retraction::Cayley | Retraction::Exp => None,
            _ => Some(SumRetraction(*self)),
        }
    }
}

/// A retraction that depends on the sum `Y = X + xi` alone (`Qr`, `CholeskyQr2`, `Polar`,
/// `NewtonSchulz`; from [`Retraction::sum_form`]). Given the sums, it needs neither the
/// point nor the step, and forms its result in the sums' storage where the backend can:
/// a caller that computes `Y` itself (fused with the step, as the optimizer does) saves
/// the step's buffer and the pass that adds it to the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumRetraction(Retraction);

impl SumRetraction {
    /// The retraction this is.
    pub fn retraction(&self) -> Retraction {
        self.0
    }

    /// The right factor `T` with `R(Y) = Y T` computed from the Gram matrix `G = Y^T Y`
    /// alone, for the sums whose retraction is one: `Qr` where `G` is well conditioned
    /// (`T = R^{-1}`, `R = chol(G)`: [`retractions::cholesky_factor`]) and `Polar`
    /// (`T = G^{-1/2}`: [`retractions::polar_factor`]). `Ok(None)` where the retraction
    /// needs `Y` itself (`CholeskyQr2`, `NewtonSchulz`, or `Qr` by Householder). A caller
    /// holding `G` can then form `Y T` fused with other work; it computes what
    /// [`SumRetraction::apply_batch`] computes.
    pub fn gram_factor(&self, gram: &DMatrix<f64>) -> Result<Option<DMatrix<f64>>, Error> {
        match self.0 {
            Retraction::Qr => Ok(retractions::cholesky_factor(gram)),
            Retraction::Polar => retractions::polar_factor(gram).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether [`SumRetraction::gram_factor`] can answer with a factor.
    pub fn has_gram_factor(&self) -> bool {
        matches!(self.0, Retraction::Qr | Retraction::Polar)
    }

    /// Applies the retraction to a batch of sums ([`Sums`]: built from steps, or from
    /// sums the caller formed). On a device backend the host round trips are made once for
    /// the batch. Any failure fails the batch.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use sds_lora::kernels::{HostOps, TallOps};
    /// use sds_lora::stiefel::retractions::Sums;
    /// use sds_lora::stiefel::{random_point, Retraction};
    ///
    /// let dev = Cpu::default();
    /// let ops = HostOps::new(&dev);
    /// let x = ops.load(&random_point::<f64, _, _, _>(&dev, (32, 4), 0).unwrap()).unwrap();
    /// let xi = ops.lincomb(0.0, &x, 0.0, &x).unwrap(); // a zero step
    /// let qr = Retraction::Qr.sum_form().unwrap();
    /// let y = qr.apply_batch(&ops, Sums::of_steps(&ops, &[(&x, &xi)]).unwrap()).unwrap();
    /// assert!((0..32).all(|i| (0..4).all(|j| (y[0].get(i, j) - x.get(i, j)).abs() < 1e-15)));
    /// ```
    pub fn apply_batch<E: Real, B: TallOps<E>>(
        &self,
        ops: &B,
        sums: Sums<B::Mat>,
    ) -> Result<Vec<B::Mat>, Error> {
        match self.0 {
            Retraction::Qr => retractions::qr(ops, sums),
            Retraction::CholeskyQr2 => retractions::cholesky_qr2(ops, sums),
            Retraction::Polar => retractions::polar(ops, sums),
            Retraction::NewtonSchulz { iters } => retractions::newton_schulz(ops, sums, iters),
            Retraction::Cayley | Retraction::Exp => {
                unreachable!("Retraction::sum_form excludes Cayley and Exp")
            }
        }
    }
}

/// Retracts the step `xi` at the point `x` back onto St(n, r) with `kind`.
///
/// Errors (inputs untouched): shapes differ or are not tall ([`Error::ShapeMismatch`],
/// [`Error::NotTall`]), NaN or infinity in either input ([`Error::NonFinite`]), a failed
/// factorisation or solve, Newton-Schulz outside its convergence region.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::stiefel::{orthogonality_error, project_tangent, random_point, retract, Retraction};
///
/// let dev = Cpu::default();
/// let x = random_point::<f64, _, _, _>(&dev, (32, 4), 0).unwrap();
/// let g: Tensor<(usize, usize), f64, _> = dev.sample_normal_like(&(32, 4));
/// let xi = project_tangent(&x, &g).unwrap() * -0.1;
/// for kind in Retraction::all(5) {
///     let y = retract(&x, &xi, kind).unwrap();
///     assert!(orthogonality_error(&y) < 1e-13, "{kind:?}");
/// }
/// ```
pub fn retract<N: Dim, R: Dim, E: Real, D: StiefelDevice<E>>(
    x: &Tensor<(N, R), E, D>,
    xi: &Tensor<(N, R), E, D>,
    kind: Retraction,
) -> Result<Tensor<(N, R), E, D>, Error> {
    let ops = x.device().tall_ops();
    ops.sized_call(x.shape().num_elements(), || {
        let (x_mat, xi_mat) = ops.load_pair(x, xi)?;
        let y = match kind.apply_owned(&ops, x_mat, xi_mat) {
            // The sum overwrote the step: read both again to name the input at fault.
            Err(Error::NonFinite { .. }) if kind.sum_form().is_some() => {
                let (x_mat, xi_mat) = ops.load_pair(x, xi)?;
                kind.apply(&ops, &x_mat, &xi_mat)
            }
            y => y,
        }?;
        ops.store(y, *x.shape())
    })
}

/// Fails unless the point and the step have one tall shape.
fn check_step<E: Real, B: TallOps<E>>(ops: &B, x: &B::Mat, xi: &B::Mat) -> Result<(), Error> {
    Error::check_shape(ops.dims(x), ops.dims(xi))?;
    let (rows, cols) = ops.dims(x);
    if cols > rows {
        return Err(Error::NotTall { rows, cols });
    }
    Ok(())
}
