//! QR retraction.

use super::{sums, Steps};
use crate::kernels::{Real, TallOps};
use crate::Error;

/// `R_X(xi) = qf(X + xi)`, the Q factor of the thin QR with `diag(R) >= 0` (Householder).
pub fn qr<E: Real, B: TallOps<E>>(ops: &B, steps: &Steps<B::Mat>) -> Result<Vec<B::Mat>, Error> {
    ops.qr_qs(sums(ops, steps)?)
}
