//! The Riemannian composition: one optimizer step on a Stiefel point.

use super::rules::{RuleState, TensorRuleState};
use crate::kernels::{ComposedOps, Flat, HostMat, Real, TallOps, TallTensor};
use crate::stiefel::retractions::Sums;
use crate::stiefel::{descent_sum, project_mat, transport_mat, Retraction};
use crate::Error;
use dfdx::shapes::HasShape;
use dfdx::tensor_ops::{Device, ReshapeTo, TryMul};

/// How the step re-enters the manifold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// The retraction.
    pub retraction: Retraction,
    /// Re-orthonormalise the new point by Householder QR after retracting (to remove
    /// drift that the retraction itself does not correct, as with `Cayley` or `Exp`).
    pub reorthonormalize: bool,
}

/// One step on `X` in St(n, r) from the Euclidean gradient `E` (design.md, "One
/// optimizer step"):
///
/// 1. `g = P_X(E) = E - X sym(X^T E)` (Riemannian gradient, Euclidean metric);
/// 2. `u = rule(g)`: the Euclidean rule on `g`, learning rate included, which returns
///    the new moments;
/// 3. `xi = -P_X(u)` (an elementwise rule such as Adam leaves the tangent space);
/// 4. `X+ = R_X(xi)`, then optionally `X+ <- qf(X+)`;
/// 5. the first moment is carried to the new point: `m <- P_{X+}(m)`.
///
/// For the retractions that depend on `X + xi` alone ([`Retraction::sum_form`]) steps 3
/// and 4 never form `xi`: `X + xi = X - P_X(u)` is formed in `u`'s storage
/// ([`descent_sum`]) and retracted there.
///
/// `rule` overwrites the slice it receives (the padded storage of `g`; padding is zero and
/// must stay zero, which every rule does for a zero gradient) and returns the rule's new
/// state, which is returned with `X+`.
pub fn stiefel_step<E: Real, B: TallOps<E, Mat = HostMat<E>>>(
    ops: &B,
    x: &HostMat<E>,
    egrad: HostMat<E>,
    rule: impl FnOnce(&mut [E]) -> RuleState<E>,
    geometry: Geometry,
) -> Result<(HostMat<E>, RuleState<E>), Error> {
    let (n, r) = (x.rows(), x.cols());
    let mut u = project_mat(ops, x, egrad)?;
    let mut state = rule(u.storage_mut());
    let mut x_new = match geometry.retraction.sum_form() {
        // X + xi = X - P_X(u), formed in u's storage.
        Some(sum) => {
            let y = descent_sum(ops, x, u)?;
            sum.apply_batch(ops, Sums::new(ops, vec![y])?)?.remove(0)
        }
        None => {
            let mut xi = project_mat(ops, x, u)?;
            xi.storage_mut().iter_mut().for_each(|v| *v = -*v);
            geometry.retraction.apply(ops, x, &xi)?
        }
    };
    if geometry.reorthonormalize {
        x_new = ops.qr_q(x_new)?;
    }
    if !state.first.is_empty() {
        let m = HostMat::from_storage(n, r, std::mem::take(&mut state.first));
        state.first = transport_mat(ops, &x_new, m)?.into_storage();
    }
    Ok((x_new, state))
}

/// One Stiefel tensor of a composed (device) step: the point, its Euclidean gradient and
/// its rule state, as `[n, r]` device tensors.
pub struct DeviceStiefel<'a, E: Real, D: Device<E>> {
    /// The point `X`.
    pub x: TallTensor<usize, usize, E, D>,
    /// The Euclidean gradient `E`.
    pub egrad: TallTensor<usize, usize, E, D>,
    /// The rule state (moments compact, `n r` values).
    pub state: &'a mut TensorRuleState<E, D>,
}

/// [`stiefel_step`] for a batch of Stiefel tensors on a device, composed from dfdx ops:
/// steps 1-3 per tensor on the device (projections keep their `r x r` products there),
/// step 4 for the whole batch ([`Retraction::apply_batch`]: its host round trips are made
/// once for all the tensors), then step 5 per tensor on the device. `rule` returns `u`.
pub fn stiefel_steps_composed<E: Real, D: Device<E>>(
    ops: &ComposedOps<D>,
    batch: Vec<DeviceStiefel<'_, E, D>>,
    rule: impl Fn(&mut TensorRuleState<E, D>, Flat<E, D>) -> Result<Flat<E, D>, Error>,
    geometry: Geometry,
) -> Result<Vec<TallTensor<usize, usize, E, D>>, Error> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let reshape =
        |t: Flat<E, D>, shape: (usize, usize)| t.try_reshape_like(&shape).map_err(Error::device);
    let flat = |t: TallTensor<usize, usize, E, D>| {
        let (n, r) = *t.shape();
        t.try_reshape_like(&(n * r,)).map_err(Error::device)
    };
    let mut xis = Vec::with_capacity(batch.len());
    let mut states = Vec::with_capacity(batch.len());
    let mut xs = Vec::with_capacity(batch.len());
    for item in batch {
        let shape = *item.x.shape();
        let g = ops.project(&item.x, item.egrad)?;
        let u = reshape(rule(item.state, flat(g)?)?, shape)?;
        let xi = ops
            .project(&item.x, u)?
            .try_mul(-E::one())
            .map_err(Error::device)?;
        xis.push(xi);
        states.push(item.state);
        xs.push(item.x);
    }
    let pairs: Vec<_> = xs.iter().zip(&xis).collect();
    let mut x_new = geometry.retraction.apply_batch(ops, &pairs)?;
    if geometry.reorthonormalize {
        x_new = ops.qr_qs(x_new)?;
    }
    for (state, x) in states.into_iter().zip(&x_new) {
        if let Some(m) = state.first.take() {
            state.first = Some(flat(ops.project(x, reshape(m, *x.shape())?)?)?);
        }
    }
    Ok(x_new)
}
