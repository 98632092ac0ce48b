//! Adding a tensor into a gradient buffer, on any dfdx device.

use dfdx::optim::{Momentum, WeightDecay};
use dfdx::shapes::{Dtype, Shape};
use dfdx::tensor::{Gradients, Tensor};
use dfdx::tensor_ops::{Device, SgdConfig};

/// `grads[key] += delta` (allocating zeros first if `key` has no gradient yet).
///
/// dfdx 0.13 has no public "add into a gradient". Its SGD kernel does it exactly on every
/// device: with `lr = 0`, classic momentum 1 and L2 weight decay 1, a zero gradient and
/// `delta` as the parameter, it computes `g = 0 + 1 * delta`, `v <- g + 1 * v` (the
/// velocity being the gradient buffer) and leaves `delta` unchanged (`delta -= 0 * v`).
pub(crate) fn add_into_grad<S: Shape, E: Dtype, D: Device<E>, T>(
    grads: &mut Gradients<E, D>,
    key: &Tensor<S, E, D, T>,
    mut delta: Tensor<S, E, D>,
) -> Result<(), D::Err> {
    let mut zeros = Gradients::leaky();
    let zero = zeros.get_or_alloc_mut(&delta)?;
    let acc = SgdConfig {
        lr: 0.0,
        momentum: Some(Momentum::Classic(1.0)),
        weight_decay: Some(WeightDecay::L2(1.0)),
    };
    acc.try_update(&mut delta, grads.get_or_alloc_mut(key)?, zero)
}
