//! `SdsLinear`: a frozen linear layer plus the SDS adapter `c U S V^T`.

use super::adapter::{Adapter, FrozenMut};
use super::core::{CoreKind, CoreRef, DiagonalCore, FullCore};
use super::frozen_linear::frozen_linear;
use super::init::{factor_lora_pair, fill_stiefel, host, kaiming_uniform, principal_subspace};
use super::options::{GradientMode, MergeState, Scaling};
use super::sds_adapter_op::{sds_adapter, SdsFactors};
use crate::kernels::Real;
use crate::optim::groups::{BASIS_IN_NAME, BASIS_OUT_NAME};
use crate::Error;
use dfdx::nn::tensor_collection::{ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions};
use dfdx::prelude::*;
use nalgebra::DMatrix;

/// Builders for [`build_module`](dfdx::nn::DeviceBuildExt::build_module).
pub mod builder {
    use super::{DiagonalCore, FullCore};
    use std::marker::PhantomData;

    /// Builds an [`SdsLinear`](super::SdsLinear) with `I` inputs, `O` outputs, rank `R`
    /// and a core of kind `K` (full by default).
    #[derive(Debug, Clone, Copy)]
    pub struct SdsLinear<const I: usize, const O: usize, const R: usize, K = FullCore>(
        PhantomData<K>,
    );

    /// Builds an [`SdsDiagLinear`](super::SdsDiagLinear): the diagonal-core ablation.
    pub type SdsDiagLinear<const I: usize, const O: usize, const R: usize> =
        SdsLinear<I, O, R, DiagonalCore>;
}

/// A linear layer `y = x W0^T + b + c ((x V) S^T) U^T` with `W0: [O, I]` and `b: [O]`
/// frozen, bases `U = basis_out: [O, R]` and `V = basis_in: [I, R]` with orthonormal
/// columns, the core `S = core: [R, R]`, and `c = alpha / R` (or `alpha / sqrt(R)`): the
/// update is `dW = c U S V^T`.
///
/// Built with random bases and `S = 0`, so that it starts exactly at `W0`;
/// [`SdsLinear::init_principal`] and [`SdsLinear::set_from_lora`] give the other starts.
/// The backward pass is one custom op ([`GradientMode`]): no gradient is computed for
/// `W0` or `b`. Train it with [`SdsAdam`](crate::optim::SdsAdam) or
/// [`SdsSgd`](crate::optim::SdsSgd), which find the triple `basis_out`, `core`, `basis_in`
/// by name and update it jointly (the basis-update step, [`crate::optim::basis_update`](mod@crate::optim::basis_update)).
///
/// The core kind `K` is [`FullCore`] by default; [`SdsDiagLinear`] (`K =`
/// [`DiagonalCore`], a tensor `scales: [R]` for `S = diag(s)`) is kept as an ablation: it
/// stalls where the target's singular values differ.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::nn::builders::SdsLinear;
///
/// let dev = Cpu::default();
/// let layer = dev.build_module::<SdsLinear<8, 6, 2>, f32>();
/// let x: Tensor<Rank2<3, 8>, f32, _> = dev.sample_normal();
/// let y = layer.forward(x.clone());
/// // S = 0 at start: the layer is its frozen linear map.
/// let base = x.matmul(layer.weight.clone().permute()) + layer.bias.clone().broadcast();
/// assert_eq!(y.as_vec(), base.as_vec());
/// ```
#[derive(Debug, Clone)]
pub struct SdsLinear<
    const I: usize,
    const O: usize,
    const R: usize,
    E: Dtype,
    D: Storage<E>,
    K: CoreKind<R> = FullCore,
> {
    /// Frozen weight `W0: [O, I]`.
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// Frozen bias `b: [O]`.
    pub bias: Tensor<Rank1<O>, E, D>,
    /// Output basis `U: [O, R]`, orthonormal columns.
    pub basis_out: Tensor<Rank2<O, R>, E, D>,
    /// The core: `S: [R, R]` (tensor `core`), or `s: [R]` (tensor `scales`) for
    /// [`DiagonalCore`].
    pub core: Tensor<K::Shape, E, D>,
    /// Input basis `V: [I, R]`, orthonormal columns.
    pub basis_in: Tensor<Rank2<I, R>, E, D>,
    /// `alpha` of the scaling `c` (default `R`, so `c = 1`).
    pub alpha: f64,
    /// How `c` follows from `alpha` and `R`.
    pub scaling: Scaling,
    /// Which gradients the bases receive.
    pub gradient_mode: GradientMode,
    /// Whether `dW` has been folded into `weight`.
    pub merge_state: MergeState,
}

/// The diagonal-core ablation: `dW = c U diag(s) V^T` with the tensor `scales: [R]`.
pub type SdsDiagLinear<const I: usize, const O: usize, const R: usize, E, D> =
    SdsLinear<I, O, R, E, D, DiagonalCore>;

module_and_builder!(SdsLinear, K: CoreKind<R>);

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>, K: CoreKind<R>>
    TensorCollection<E, D> for SdsLinear<I, O, R, E, D, K>
{
    type To<E2: Dtype, D2: Device<E2>> = SdsLinear<I, O, R, E2, D2, K>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        const {
            assert!(
                R <= I && R <= O,
                "SdsLinear: the rank R must not exceed I or O"
            )
        };
        visitor.visit_fields(
            (
                (
                    frozen_weight_and_bias!(I),
                    Self::tensor(
                        BASIS_OUT_NAME,
                        |s| &s.basis_out,
                        |s| &mut s.basis_out,
                        TensorOptions::reset_with(fill_stiefel),
                    ),
                    Self::tensor(
                        K::NAME,
                        |s| &s.core,
                        |s| &mut s.core,
                        TensorOptions::reset_to_zeros(),
                    ),
                    Self::tensor(
                        BASIS_IN_NAME,
                        |s| &s.basis_in,
                        |s| &mut s.basis_in,
                        TensorOptions::reset_with(fill_stiefel),
                    ),
                ),
                (
                    alpha_and_scaling!(R),
                    Self::scalar(
                        "gradient_mode",
                        |s| &s.gradient_mode,
                        |s| &mut s.gradient_mode,
                        ScalarOptions::from_default(GradientMode::Decoupled),
                    ),
                    Self::scalar(
                        "merge_state",
                        |s| &s.merge_state,
                        |s| &mut s.merge_state,
                        ScalarOptions::from_default(MergeState::Separate),
                    ),
                ),
            ),
            |(
                ((weight, bias), basis_out, core, basis_in),
                ((alpha, scaling), gradient_mode, merge_state),
            )| {
                SdsLinear {
                    weight,
                    bias,
                    basis_out,
                    core,
                    basis_in,
                    alpha,
                    scaling,
                    gradient_mode,
                    merge_state,
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
        K: CoreKind<R>,
    > Module<Tensor<(B, Const<I>), E, D, T>> for SdsLinear<I, O, R, E, D, K>
{
    type Output = Tensor<(B, Const<O>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, Const<I>), E, D, T>) -> Result<Self::Output, D::Err> {
        let (x, tape) = x.split_tape();
        let base = frozen_linear(x.clone().put_tape(tape), &self.weight, &self.bias)?;
        if self.merge_state == MergeState::Merged {
            return Ok(base);
        }
        let bases = SdsFactors {
            u: &self.basis_out,
            s: K::view(&self.core),
            v: &self.basis_in,
        };
        let adapter = sds_adapter(
            x.put_tape(T::default()),
            bases,
            E::of_f64(self.scale()),
            self.gradient_mode,
        )?;
        base.try_add(adapter)
    }
}

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>, K: CoreKind<R>>
    SdsLinear<I, O, R, E, D, K>
{
    /// The scaling `c`.
    pub fn scale(&self) -> f64 {
        self.scaling.factor(self.alpha, R)
    }

    /// `Principal` initialisation: `U` and `V` become the top-`R` left and right singular
    /// vectors of `W0` (randomised subspace iteration), and `S = 0`.
    pub fn init_principal(&mut self) -> Result<(), D::Err> {
        let seed = self.weight.device().random_u64();
        let (u, v) = principal_subspace(&host(&self.weight), R, seed);
        self.basis_out.copy_from(&E::row_major(&u));
        self.basis_in.copy_from(&E::row_major(&v));
        self.core.try_fill_with_zeros()
    }

    /// The dense core `S` (`diag(s)` for a diagonal core) on the host, in `f64`.
    pub fn core_matrix(&self) -> DMatrix<f64> {
        K::view(&self.core).dense()
    }

    /// Sets the adapter to reproduce a trained LoRA pair exactly: `c U S V^T =
    /// lora_scale B A` with `B = lora_b: [O, R]`, `A = lora_a: [R, I]` (QR of `B` and `A^T`,
    /// SVD of the `R x R` product of their R factors, so that `S = diag(sigma)` for either
    /// core kind). `lora_scale` is the pair's own `c`. A pair of rank below `R` (PEFT's
    /// `B = 0` start, say) gives bases completed to orthonormal columns. Errors, changing
    /// nothing, if `B`, `A` or `lora_scale` holds NaN or an infinity.
    pub fn set_from_lora(
        &mut self,
        lora_b: &Tensor<Rank2<O, R>, E, D>,
        lora_a: &Tensor<Rank2<R, I>, E, D>,
        lora_scale: f64,
    ) -> Result<(), Error> {
        let (b, a) = (host(lora_b), host(lora_a));
        let ratio = lora_scale / self.scale();
        if !ratio.is_finite() || !b.iter().chain(a.iter()).all(|v| v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("the LoRA pair given to set_from_lora (scale {lora_scale})"),
            });
        }
        let (u, s, v) = factor_lora_pair(&b, &a, ratio);
        self.basis_out.copy_from(&E::row_major(&u));
        self.basis_in.copy_from(&E::row_major(&v));
        let core = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(s));
        self.core
            .copy_from(&K::data_of::<E>(&core).expect("a diagonal core"));
        Ok(())
    }
}

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>, K: CoreKind<R>>
    Adapter<I, O, E, D> for SdsLinear<I, O, R, E, D, K>
{
    fn frozen_mut(&mut self) -> FrozenMut<'_, I, O, E, D> {
        FrozenMut {
            weight: &mut self.weight,
            bias: &mut self.bias,
            merge_state: &mut self.merge_state,
        }
    }

    /// `dW = c U S V^T` (`[O, I]`).
    fn delta_weight(&self) -> Result<Tensor<Rank2<O, I>, E, D>, D::Err> {
        let u = self.basis_out.clone();
        let us = match K::view(&self.core) {
            CoreRef::Full(s) => u.try_matmul(s.clone())?,
            CoreRef::Diagonal(s) => u.try_mul(s.clone().try_broadcast::<Rank2<O, R>, _>()?)?,
        };
        us.try_matmul(self.basis_in.clone().try_permute::<_, Axes2<1, 0>>()?)?
            .try_mul(E::of_f64(self.scale()))
    }
}
