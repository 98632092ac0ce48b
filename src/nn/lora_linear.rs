//! `LoraLinear`: a frozen linear layer plus the LoRA update `c B A`, the baseline.

use super::adapter::{Adapter, FrozenMut};
use super::frozen_linear::frozen_linear;
use super::init::kaiming_uniform;
use super::options::{MergeState, Scaling};
use crate::kernels::Real;
use dfdx::nn::tensor_collection::{ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions};
use dfdx::prelude::*;

/// Builders for [`build_module`](dfdx::nn::DeviceBuildExt::build_module).
pub mod builder {
    /// Builds a [`LoraLinear`](super::LoraLinear) with `I` inputs, `O` outputs and rank `R`.
    #[derive(Debug, Clone, Copy)]
    pub struct LoraLinear<const I: usize, const O: usize, const R: usize>;
}

/// LoRA (Hu et al. 2021): `y = x W0^T + b + c (x A^T) B^T` with `W0: [O, I]`, `b: [O]`
/// frozen, `A = lora_a: [R, I]` (Kaiming-uniform, bound `1/sqrt(I)` as PEFT), `B =
/// lora_b: [O, R]` (zero), `c = alpha / R` or `alpha / sqrt(R)`. The adapter is trained by
/// plain autodiff with dfdx's own optimizers; `W0` and `b` get no gradient.
///
/// ```
/// use dfdx::optim::{Adam, AdamConfig, Optimizer};
/// use dfdx::prelude::*;
/// use sds_lora::nn::builders::LoraLinear;
///
/// let dev = Cpu::default();
/// let mut layer = dev.build_module::<LoraLinear<8, 6, 2>, f32>();
/// let mut opt = Adam::new(&layer, AdamConfig::default());
/// let x: Tensor<Rank2<3, 8>, f32, _> = dev.sample_normal();
/// let grads = layer.forward(x.trace(layer.alloc_grads())).square().mean().backward();
/// opt.update(&mut layer, &grads).unwrap();
/// assert!(layer.lora_b.as_vec().iter().any(|&v| v != 0.0));
/// ```
#[derive(Debug, Clone)]
pub struct LoraLinear<const I: usize, const O: usize, const R: usize, E: Dtype, D: Storage<E>> {
    /// Frozen weight `W0: [O, I]`.
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// Frozen bias `b: [O]`.
    pub bias: Tensor<Rank1<O>, E, D>,
    /// `A: [R, I]`.
    pub lora_a: Tensor<Rank2<R, I>, E, D>,
    /// `B: [O, R]`.
    pub lora_b: Tensor<Rank2<O, R>, E, D>,
    /// `alpha` of the scaling `c` (default `R`, so `c = 1`).
    pub alpha: f64,
    /// How `c` follows from `alpha` and `R`.
    pub scaling: Scaling,
    /// Whether `dW` has been folded into `weight`.
    pub merge_state: MergeState,
}

module_and_builder!(LoraLinear);

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>> TensorCollection<E, D>
    for LoraLinear<I, O, R, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = LoraLinear<I, O, R, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
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
                ),
                (
                    alpha_and_scaling!(R),
                    Self::scalar(
                        "merge_state",
                        |s| &s.merge_state,
                        |s| &mut s.merge_state,
                        ScalarOptions::from_default(MergeState::Separate),
                    ),
                ),
            ),
            |(((weight, bias), lora_a, lora_b), ((alpha, scaling), merge_state))| LoraLinear {
                weight,
                bias,
                lora_a,
                lora_b,
                alpha,
                scaling,
                merge_state,
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
    > Module<Tensor<(B, Const<I>), E, D, T>> for LoraLinear<I, O, R, E, D>
{
    type Output = Tensor<(B, Const<O>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, Const<I>), E, D, T>) -> Result<Self::Output, D::Err> {
        let (x, tape) = x.split_tape();
        let base = frozen_linear(x.clone().put_tape(tape), &self.weight, &self.bias)?;
        if self.merge_state == MergeState::Merged {
            return Ok(base);
        }
        let adapter = x
            .put_tape(T::default())
            .try_matmul(self.lora_a.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?)?
            .try_matmul(self.lora_b.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?)?
            .try_mul(E::of_f64(self.scale()))?;
        base.try_add(adapter)
    }
}

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>>
    LoraLinear<I, O, R, E, D>
{
    /// The scaling `c`.
    pub fn scale(&self) -> f64 {
        self.scaling.factor(self.alpha, R)
    }
}

impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E>> Adapter<I, O, E, D>
    for LoraLinear<I, O, R, E, D>
{
    fn frozen_mut(&mut self) -> FrozenMut<'_, I, O, E, D> {
        FrozenMut {
            weight: &mut self.weight,
            bias: &mut self.bias,
            merge_state: &mut self.merge_state,
        }
    }

    /// `dW = c B A` (`[O, I]`).
    fn delta_weight(&self) -> Result<Tensor<Rank2<O, I>, E, D>, D::Err> {
        self.lora_b
            .clone()
            .try_matmul(self.lora_a.clone())?
            .try_mul(E::of_f64(self.scale()))
    }
}
