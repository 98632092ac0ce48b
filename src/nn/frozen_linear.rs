//! `y = x W0^T + b` with `W0` and `b` frozen: the backward pass computes `dx = Gy W0` only.

use super::grad_add::add_into_grad;
use super::Batch;
use dfdx::prelude::*;

/// `x W0^T + b` for `x: [B, I]`, `W0: [O, I]`, `b: [O]`. The backward pass adds
/// `Gy W0` to `x`'s gradient and nothing else: dfdx's own matmul would also compute the
/// `O x I` gradient of the frozen weight (and `b`'s), which is wasted work.
pub fn frozen_linear<
    B: Dim,
    const I: usize,
    const O: usize,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
>(
    x: Batch<B, I, E, D, T>,
    weight: &Tensor<Rank2<O, I>, E, D>,
    bias: &Tensor<Rank1<O>, E, D>,
) -> Result<Batch<B, O, E, D, T>, D::Err> {
    let (x, mut tape) = x.split_tape();
    let batch = x.shape().0;
    let y = x
        .clone()
        .try_matmul(weight.clone().try_permute::<_, Axes2<1, 0>>()?)?
        .try_add(bias.clone().try_broadcast_like(&(batch, Const::<O>))?)?;
    if T::OWNS_TAPE {
        let y_ghost = y.ghost();
        let weight = weight.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&y_ghost)?;
            let gy = grads.get(&y_ghost);
            add_into_grad(grads, &x, gy.try_matmul(weight)?)
        });
    }
    Ok(y.put_tape(tape))
}
