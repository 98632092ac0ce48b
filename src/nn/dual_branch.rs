//! `SdsDualBranch`: the paper's own parameterisation, `dW = k (Q_B A + B Q_A^T)` with
//! constant orthonormal bases, after a plain-LoRA warm-up.

use super::frozen_linear::frozen_linear;
use super::init::{fill_stiefel, host, kaiming_uniform};
use super::options::{Phase, Scaling};
use crate::kernels::Real;
use crate::small;
use crate::Error;
use dfdx::nn::tensor_collection::{ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions};
use dfdx::prelude::*;
use nalgebra::DMatrix;

/// Builders for [`build_module`](dfdx::nn::DeviceBuildExt::build_module).
pub mod builder {
    /// Builds an [`SdsDualBranch`](super::SdsDualBranch).
    #[derive(Debug, Clone, Copy)]
    pub struct SdsDualBranch<const I: usize, const O: usize, const R: usize>;
}

/// The dual-branch SDS layer of arXiv 2606.16454: `y = x W0^T + b + x dW^T` with
///
/// - [`Phase::Warmup`]: `dW = k B A` (plain LoRA, `A = lora_a: [R, I]`, `B = lora_b: [O, R]`);
/// - [`Phase::Dual`]: `dW = k (Q_B A + B Q_A^T)` with `Q_B = q_b: [O, R]` and
///   `Q_A = q_a: [I, R]` orthonormal and constant in the backward pass, so that
///   `dL/dA = k Q_B^T G` and `dL/dB = k G Q_A` (`G = Gy^T x`, the full fine-tuning
///   gradient): the gradient reaches each factor through an orthonormal basis only.
///
/// [`reparameterize`](Self::reparameterize) ends the warm-up exactly;
/// [`refresh`](Self::refresh) moves the bases to the factors' current spans, also exactly.
/// `W0`, `b`, `Q_A`, `Q_B` are frozen; `A` and `B` train with dfdx's optimizers.
#[derive(Debug, Clone)]
pub struct SdsDualBranch<const I: usize, const O: usize, const R: usize, E: Dtype, D: Storage<E>> {
    /// Frozen weight `W0: [O, I]`.
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// Frozen bias `b: [O]`.
    pub bias: Tensor<Rank1<O>, E, D>,
    /// `A: [R, I]`.
    pub lora_a: Tensor<Rank2<R, I>, E, D>,
    /// `B: [O, R]`.
    pub lora_b: Tensor<Rank2<O, R>, E, D>,
    /// `Q_A: [I, R]`, an orthonormal basis of `A`'s rows (frozen).
    pub q_a: Tensor<Rank2<I, R>, E, D>,
    /// `Q_B: [O, R]`, an orthonormal basis of `B`'s columns (frozen).
    pub q_b: Tensor<Rank2<O, R>, E, D>,
    /// `alpha` of the scaling `k`.
    pub alpha: f64,
    /// How `k` follows from `alpha` and `R`.
    pub scaling: Scaling,
    /// Warm-up or dual branches.
    pub phase: Phase,
}

module_and_builder!(SdsDualBranch);

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>> TensorCollection<E, D>
    for SdsDualBranch<I, O, R, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = SdsDualBranch<I, O, R, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        const {
            assert!(
                R <= I && R <= O,
                "SdsDualBranch: the rank R must not exceed I or O"
            )
        };
        visitor.visit_fields(
            (
                (
                    frozen_weight_and_bias!(I),
                    Self::tensor(
                        "lora_a",
                        |s| &s.lora_a,
                        |s| &mut s.lora_a,
                        TensorOptions::reset_with(kaiming_uniform::<I, _, _, _>),
                    ),
                    Self::tensor(
                        "lora_b",
                        |s| &s.lora_b,
                        |s| &mut s.lora_b,
                        TensorOptions::reset_to_zeros(),
                    ),
                    Self::tensor(
                        "q_a",
                        |s| &s.q_a,
                        |s| &mut s.q_a,
                        TensorOptions::detached(fill_stiefel),
                    ),
                    Self::tensor(
                        "q_b",
                        |s| &s.q_b,
                        |s| &mut s.q_b,
                        TensorOptions::detached(fill_stiefel),
                    ),
                ),
                (
                    alpha_and_scaling!(R),
                    Self::scalar(
                        "phase",
                        |s| &s.phase,
                        |s| &mut s.phase,
                        ScalarOptions::from_default(Phase::Warmup),
                    ),
                ),
            ),
            |(((weight, bias), lora_a, lora_b, q_a, q_b), ((alpha, scaling), phase))| {
                SdsDualBranch {
                    weight,
                    bias,
                    lora_a,
                    lora_b,
                    q_a,
                    q_b,
                    alpha,
                    scaling,
                    phase,
                }
            },
        )
    }
}

impl<
        B: Dim,
        const I: usize,
        const O: usize,
        const R: usize,
        E: Real,
        D: Device<E>,
        T: Tape<E, D>,
    > Module<Tensor<(B, Const<I>), E, D, T>> for SdsDualBranch<I, O, R, E, D>
{
    type Output = Tensor<(B, Const<O>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, Const<I>), E, D, T>) -> Result<Self::Output, D::Err> {
        let (x, tape) = x.split_tape();
        let base = frozen_linear(x.clone().put_tape(tape), &self.weight, &self.bias)?;
        let k = E::of_f64(self.scale());
        let a_t = self.lora_a.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?;
        let b_t = self.lora_b.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?;
        let adapter = match self.phase {
            Phase::Warmup => x.put_tape(T::default()).try_matmul(a_t)?.try_matmul(b_t)?,
            Phase::Dual => {
                // The bases enter without a tape: constants of the backward pass.
                let q_b_t = self.q_b.clone().try_permute::<_, Axes2<1, 0>>()?;
                let through_a = x
                    .clone()
                    .put_tape(T::default())
                    .try_matmul(a_t)?
                    .try_matmul(q_b_t)?;
                let through_b = x
                    .put_tape(T::default())
                    .try_matmul(self.q_a.clone())?
                    .try_matmul(b_t)?;
                through_a.try_add(through_b)?
            }
        };
        base.try_add(adapter.try_mul(k)?)
    }
}

/// `qf(M)` with `diag(R) >= 0`, then each column's sign matched to `previous`'s.
fn aligned_basis(m: &DMatrix<f64>, previous: &DMatrix<f64>) -> DMatrix<f64> {
    let (mut q, r) = m.clone().qr().unpack();
    for j in 0..q.ncols() {
        let flip = if r[(j, j)] < 0.0 { -1.0 } else { 1.0 };
        let flip = if flip * q.column(j).dot(&previous.column(j)) < 0.0 {
            -flip
        } else {
            flip
        };
        q.column_mut(j).scale_mut(flip);
    }
    q
}

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>>
    SdsDualBranch<I, O, R, E, D>
{
    /// The scaling `k`.
    pub fn scale(&self) -> f64 {
        self.scaling.factor(self.alpha, R)
    }

    /// `dW` of the current phase, on the host in `f64`.
    pub fn delta_weight(&self) -> DMatrix<f64> {
        let (a, b) = (host(&self.lora_a), host(&self.lora_b));
        let k = self.scale();
        match self.phase {
            Phase::Warmup => b * a * k,
            Phase::Dual => (host(&self.q_b) * a + b * host(&self.q_a).transpose()) * k,
        }
    }

    /// Starts the layer from a trained LoRA pair (still in warm-up): `A`, `B` copied.
    pub fn set_lora(
        &mut self,
        lora_b: &Tensor<Rank2<O, R>, E, D>,
        lora_a: &Tensor<Rank2<R, I>, E, D>,
    ) {
        self.lora_b.copy_from(&lora_b.as_vec());
        self.lora_a.copy_from(&lora_a.as_vec());
        self.phase = Phase::Warmup;
    }

    /// Ends the warm-up, leaving `dW` unchanged: with `B = Q_B R_B`, `A^T = Q_A R_A` (QR)
    /// and `k R_B R_A^T = P diag(sigma) Q^T` (Jacobi SVD), `Q_B <- Q_B P`, `Q_A <- Q_A Q`,
    /// `A = diag(sigma / 2k) Q_A^T`, `B = Q_B diag(sigma / 2k)`.
    pub fn reparameterize(&mut self) -> Result<(), Error> {
        if self.phase != Phase::Warmup {
            return Err(Error::StateMismatch(
                "SdsDualBranch is already reparameterised".into(),
            ));
        }
        let k = self.scale();
        let (qb, rb) = host(&self.lora_b).qr().unpack();
        let (qa, ra) = host(&self.lora_a).transpose().qr().unpack();
        let (p, sigma, q) = small::svd_jacobi(&(rb * ra.transpose() * k));
        let (qb, qa) = (qb * p, qa * q);
        let half = DMatrix::from_diagonal(&nalgebra::DVector::from_iterator(
            R,
            sigma.iter().map(|s| s / (2.0 * k)),
        ));
        self.write(&(&half * qa.transpose()), &(&qb * &half), &qa, &qb);
        self.phase = Phase::Dual;
        Ok(())
    }

    /// Moves the bases to the factors' current spans, `Q_B' = qf(B)`, `Q_A' = qf(A^T)`
    /// (signs aligned with the previous bases), and re-expresses the factors so that `dW`
    /// is unchanged: with `M = Q_B A + B Q_A^T`, `A' = Q_B'^T M` and
    /// `B' = (I - Q_B' Q_B'^T) M Q_A'`. This is exact because `M`'s part outside
    /// `span(Q_B')` has its rows in `span(Q_A')`.
    pub fn refresh(&mut self) -> Result<(), Error> {
        if self.phase != Phase::Dual {
            return Err(Error::StateMismatch("refresh needs the dual phase".into()));
        }
        let (a, b) = (host(&self.lora_a), host(&self.lora_b));
        let (qa_old, qb_old) = (host(&self.q_a), host(&self.q_b));
        let m = &qb_old * &a + &b * qa_old.transpose();
        let qb = aligned_basis(&b, &qb_old);
        let qa = aligned_basis(&a.transpose(), &qa_old);
        let a_new = qb.transpose() * &m;
        let b_new = &m * &qa - &qb * (&a_new * &qa);
        self.write(&a_new, &b_new, &qa, &qb);
        Ok(())
    }

    fn write(&mut self, a: &DMatrix<f64>, b: &DMatrix<f64>, qa: &DMatrix<f64>, qb: &DMatrix<f64>) {
        self.lora_a.copy_from(&E::row_major(a));
        self.lora_b.copy_from(&E::row_major(b));
        self.q_a.copy_from(&E::row_major(qa));
        self.q_b.copy_from(&E::row_major(qb));
    }
}
