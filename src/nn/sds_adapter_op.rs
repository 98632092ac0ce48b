//! The SDS adapter `c ((x V) S^T) U^T` with its scale-decoupled backward pass.

use super::core::{CoreRef, CoreTensor};
use super::grad_add::add_into_grad;
use super::{Batch, GradientMode};
use dfdx::prelude::*;

/// The adapter's trainable tensors, borrowed from the layer.
#[derive(Debug, Clone, Copy)]
pub struct SdsFactors<'a, const I: usize, const O: usize, const R: usize, E: Dtype, D: Storage<E>> {
    /// `U: [O, R]`.
    pub u: &'a Tensor<Rank2<O, R>, E, D>,
    /// The core `S`: `[R, R]`, or `[R]` for `diag(s)`.
    pub s: CoreRef<'a, R, E, D>,
    /// `V: [I, R]`.
    pub v: &'a Tensor<Rank2<I, R>, E, D>,
}

/// `z S^T` for rows `z: [B, R]` (`z * s` for a diagonal core).
fn times_core_t<B: Dim, const R: usize, E: Dtype, D: Device<E>>(
    z: Tensor<(B, Const<R>), E, D>,
    s: CoreRef<'_, R, E, D>,
) -> Result<Tensor<(B, Const<R>), E, D>, D::Err> {
    match s {
        CoreRef::Full(s) => z.try_matmul(s.clone().try_permute::<_, Axes2<1, 0>>()?),
        CoreRef::Diagonal(s) => {
            let shape = *z.shape();
            z.try_mul(s.clone().try_broadcast_like(&shape)?)
        }
    }
}

/// `z S` for rows `z: [B, R]` (`z * s` for a diagonal core).
fn times_core<B: Dim, const R: usize, E: Dtype, D: Device<E>>(
    z: Tensor<(B, Const<R>), E, D>,
    s: CoreRef<'_, R, E, D>,
) -> Result<Tensor<(B, Const<R>), E, D>, D::Err> {
    match s {
        CoreRef::Full(s) => z.try_matmul(s.clone()),
        diagonal => times_core_t(z, diagonal),
    }
}

/// `c ((x V) S^T) U^T` for `x: [B, I]`, `U: [O, R]`, `S: [R, R]` (or `diag(s)`),
/// `V: [I, R]`, as one op whose backward pass (with `Gy = dL/dy`, `xV = x V`,
/// `GyU = Gy U`) adds:
///
/// | tensor | [`GradientMode::Decoupled`] | [`GradientMode::Coupled`] |
/// |---|---|---|
/// | `U` | `P = c Gy^T xV` | `c Gy^T (xV S^T)` |
/// | `V` | `Q = c x^T GyU` | `c x^T (GyU S)` |
/// | `S` | `M = c GyU^T xV` (diagonal core: `diag(M)`) | same |
/// | `x` | `c (GyU S) V^T` | same |
///
/// With `G = Gy^T x` the full fine-tuning gradient of the layer's weight, `P = c G V`,
/// `Q = c G^T U` and `M = U^T P`. `x` and `S` get their exact gradients in both modes;
/// `Coupled` is exactly the autodiff of the formula, `Decoupled` drops the factor `S`
/// from the bases' gradients (design.md).
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
    let xv = x.clone().try_matmul(v.clone())?;
    let xvs = times_core_t(xv.clone(), s)?;
    let y = xvs
        .clone()
        .try_mul(c)?
        .try_matmul(u.clone().try_permute::<_, Axes2<1, 0>>()?)?;
    if T::OWNS_TAPE {
        let y_ghost = y.ghost();
        let (u, v) = (u.clone(), v.clone());
        let core = s.to_owned();
        tape.add_backward_op(move |grads| {
            let s = core.as_ref();
            grads.try_alloc_for(&y_ghost)?;
            let gy = grads.get(&y_ghost);
            let gyu = gy.clone().try_matmul(u.clone())?;
            let gyus = times_core(gyu.clone(), s)?;
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
            let dx = gyus
                .try_mul(c)?
                .try_matmul(v.clone().try_permute::<_, Axes2<1, 0>>()?)?;
            match &core {
                CoreTensor::Full(full) => {
                    let ds = gyu
                        .try_permute::<_, Axes2<1, 0>>()?
                        .try_matmul(xv)?
                        .try_mul(c)?;
                    add_into_grad(grads, full, ds)?;
                }
                CoreTensor::Diagonal(diagonal) => {
                    let ds = gyu.try_mul(xv)?.try_sum::<Rank1<R>, _>()?.try_mul(c)?;
                    add_into_grad(grads, diagonal, ds)?;
                }
            }
            add_into_grad(grads, &u, du)?;
            add_into_grad(grads, &v, dv)?;
            add_into_grad(grads, &x, dx)
        });
    }
    Ok(y.put_tape(tape))
}
