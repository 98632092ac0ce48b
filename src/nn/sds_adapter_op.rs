//! The SDS adapter `c ((x V) * s) U^T` with its scale-decoupled backward pass.

use super::{Batch, GradientMode};
use crate::kernels::add_into_grad;
use dfdx::prelude::*;

/// The adapter's trainable tensors, borrowed from the layer.
#[derive(Debug, Clone, Copy)]
pub struct SdsFactors<'a, const I: usize, const O: usize, const R: usize, E: Dtype, D: Storage<E>> {
    /// `U: [O, R]`.
    pub u: &'a Tensor<Rank2<O, R>, E, D>,
    /// `s: [R]`.
    pub s: &'a Tensor<Rank1<R>, E, D>,
    /// `V: [I, R]`.
    pub v: &'a Tensor<Rank2<I, R>, E, D>,
}

/// `c ((x V) * s) U^T` for `x: [B, I]`, `U: [O, R]`, `s: [R]`, `V: [I, R]`, as one op whose
/// backward pass (with `Gy = dL/dy`, `xV = x V`, `GyU = Gy U`) adds:
///
/// | tensor | [`GradientMode::Decoupled`] | [`GradientMode::Coupled`] |
/// |---|---|---|
/// | `U` | `c Gy^T xV` | `c Gy^T (xV * s)` |
/// | `V` | `c x^T GyU` | `c x^T (GyU * s)` |
/// | `s` | `c colsum(GyU * xV)` | same |
/// | `x` | `c (GyU * s) V^T` | same |
///
/// `x` and `s` get their exact gradients in both modes; `Coupled` is exactly the autodiff
/// of the formula, `Decoupled` drops the factor `s` from the bases' gradients (design.md).
pub fn sds_adapter<
    B: Dim,
    const I: usize,
    const O: usize,
    const R: usize,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
>(
    x: Batch<B, I, E, D, T>,
    factors: SdsFactors<'_, I, O, R, E, D>,
    c: E,
    mode: GradientMode,
) -> Result<Batch<B, O, E, D, T>, D::Err> {
    let SdsFactors { u, s, v } = factors;
    let (x, mut tape) = x.split_tape();
    let batch = x.shape().0;
    let xv = x.clone().try_matmul(v.clone())?;
    let xvs = xv
        .clone()
        .try_mul(s.clone().try_broadcast_like(&(batch, Const::<R>))?)?;
    let y = xvs
        .clone()
        .try_mul(c)?
        .try_matmul(u.clone().try_permute::<_, Axes2<1, 0>>()?)?;
    if T::OWNS_TAPE {
        let y_ghost = y.ghost();
        let (u, s, v) = (u.clone(), s.clone(), v.clone());
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&y_ghost)?;
            let gy = grads.get(&y_ghost);
            let gyu = gy.clone().try_matmul(u.clone())?;
            let gyus = gyu
                .clone()
                .try_mul(s.clone().try_broadcast_like(&(batch, Const::<R>))?)?;
            let (u_factor, v_factor) = match mode {
                GradientMode::Decoupled => (xv.clone(), gyu.clone()),
                GradientMode::Coupled => (xvs, gyus.clone()),
            };
            let du = gy
                .try_permute::<_, Axes2<1, 0>>()?
                .try_matmul(u_factor)?
                .try_mul(c)?;
            let dv = x
                .clone()
                .try_permute::<_, Axes2<1, 0>>()?
                .try_matmul(v_factor)?
                .try_mul(c)?;
            let ds = gyu.try_mul(xv)?.try_sum::<Rank1<R>, _>()?.try_mul(c)?;
            let dx = gyus
                .try_mul(c)?
                .try_matmul(v.clone().try_permute::<_, Axes2<1, 0>>()?)?;
            add_into_grad(grads, &u, du)?;
            add_into_grad(grads, &v, dv)?;
            add_into_grad(grads, &s, ds)?;
            add_into_grad(grads, &x, dx)
        });
    }
    Ok(y.put_tape(tape))
}
