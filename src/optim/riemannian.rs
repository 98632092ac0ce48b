//! The Riemannian composition: one optimizer step on a Stiefel point.

use super::rules::RuleState;
use crate::kernels::{HostMat, Real, TallOps};
use crate::stiefel::{project_mat, transport_mat, Retraction};
use crate::Error;

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
/// 2. `u = rule(g)`: the Euclidean rule on `g`, learning rate included, which updates
///    the moments in `state` with `g`;
/// 3. `xi = -P_X(u)` (an elementwise rule such as Adam leaves the tangent space);
/// 4. `X+ = R_X(xi)`, then optionally `X+ <- qf(X+)`;
/// 5. the first moment is carried to the new point: `m <- P_{X+}(m)`.
///
/// `rule` overwrites the slice it receives (the padded storage of `g`; padding is zero and
/// must stay zero, which every rule does for a zero gradient).
pub fn stiefel_step<E: Real, B: TallOps<E, Mat = HostMat<E>>>(
    ops: &B,
    x: &HostMat<E>,
    egrad: HostMat<E>,
    state: &mut RuleState<E>,
    rule: impl FnOnce(&mut RuleState<E>, &mut [E]),
    geometry: Geometry,
) -> Result<HostMat<E>, Error> {
    let (n, r) = (x.rows(), x.cols());
    let mut u = project_mat(ops, x, egrad)?;
    rule(state, u.storage_mut());
    let mut xi = project_mat(ops, x, u)?;
    xi.storage_mut().iter_mut().for_each(|v| *v = -*v);
    let mut x_new = geometry.retraction.apply(ops, x, &xi)?;
    if geometry.reorthonormalize {
        x_new = ops.qr_q(x_new)?;
    }
    if !state.first.is_empty() {
        let m = HostMat::from_storage(n, r, std::mem::take(&mut state.first));
        state.first = transport_mat(ops, &x_new, m)?.into_storage();
    }
    Ok(x_new)
}
