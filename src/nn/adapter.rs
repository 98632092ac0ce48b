//! What every adapter layer around a frozen linear map offers: its update `dW`, folding it
//! into the frozen weight and back, and construction from a dfdx `Linear`.

use super::options::MergeState;
use crate::kernels::Real;
use crate::Error;
use dfdx::nn::BuildModule;
use dfdx::prelude::*;

/// The frozen part of an adapter, borrowed mutably.
#[derive(Debug)]
pub struct FrozenMut<'a, const I: usize, const O: usize, E: Dtype, D: Storage<E>> {
    /// `W0: [O, I]`.
    pub weight: &'a mut Tensor<Rank2<O, I>, E, D>,
    /// `b: [O]`.
    pub bias: &'a mut Tensor<Rank1<O>, E, D>,
    /// Whether `dW` is folded into `weight`.
    pub merge_state: &'a mut MergeState,
}

/// An adapter `y = x (W0 + dW)^T + b` with `W0: [O, I]` and `b: [O]` frozen.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::nn::{builders, Adapter};
///
/// let dev = Cpu::default();
/// let mut layer = dev.build_module::<builders::SdsLinear<6, 4, 2>, f32>();
/// layer.core.copy_from(&[0.5, 0.1, -0.2, -0.25]); // S: [2, 2], row-major
/// let x: Tensor<Rank2<3, 6>, f32, _> = dev.sample_normal();
/// let y = layer.forward(x.clone()).as_vec();
/// layer.merge().unwrap(); // W0 <- W0 + dW; the forward now skips the adapter
/// let merged = layer.forward(x).as_vec();
/// assert!(y.iter().zip(&merged).all(|(a, b)| (a - b).abs() < 1e-6));
/// ```
pub trait Adapter<const I: usize, const O: usize, E: Real, D: Device<E>>:
    Sized + BuildModule<D, E>
{
    /// The frozen weight and bias and the merge state, mutably.
    fn frozen_mut(&mut self) -> FrozenMut<'_, I, O, E, D>;

    /// The update `dW` (`[O, I]`).
    fn delta_weight(&self) -> Result<Tensor<Rank2<O, I>, E, D>, D::Err>;

    /// Folds the adapter into the frozen weight: `W0 <- W0 + dW`; the forward pass then
    /// skips the adapter. Errors if already merged.
    fn merge(&mut self) -> Result<(), Error> {
        fold(self, MergeState::Merged, "the adapter is already merged")
    }

    /// Undoes [`Adapter::merge`]: `W0 <- W0 - dW` (exact up to one rounding per entry).
    /// Errors if not merged.
    fn unmerge(&mut self) -> Result<(), Error> {
        fold(self, MergeState::Separate, "the adapter is not merged")
    }

    /// The adapter for an existing linear layer: `W0` and `b` copied from it, the
    /// adapter's own tensors built as usual (from `linear`'s device generator), so that a
    /// zero-initialised update starts exactly at `linear`.
    fn from_linear(linear: &dfdx::nn::modules::Linear<I, O, E, D>) -> Result<Self, D::Err> {
        let mut layer = Self::try_build(linear.weight.device())?;
        let frozen = layer.frozen_mut();
        *frozen.weight = linear.weight.clone();
        *frozen.bias = linear.bias.clone();
        Ok(layer)
    }
}

/// Moves `adapter` to the merge state `to`: `W0 <- W0 + dW` into [`MergeState::Merged`],
/// `W0 <- W0 - dW` into [`MergeState::Separate`]; fails with `already` (and changes
/// nothing) where it is in that state.
fn fold<const I: usize, const O: usize, E: Real, D: Device<E>, A: Adapter<I, O, E, D>>(
    adapter: &mut A,
    to: MergeState,
    already: &str,
) -> Result<(), Error> {
    let dw = adapter.delta_weight().map_err(Error::device)?;
    let FrozenMut {
        weight,
        merge_state: state,
        ..
    } = adapter.frozen_mut();
    if *state == to {
        return Err(Error::StateMismatch(already.into()));
    }
    let folded = match to {
        MergeState::Merged => weight.clone().try_add(dw),
        MergeState::Separate => weight.clone().try_sub(dw),
    };
    *weight = folded.map_err(Error::device)?;
    *state = to;
    Ok(())
}
