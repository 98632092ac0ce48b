//! QR retraction.

use crate::kernels::{Real, TallOps};
use crate::Error;

/// `R_X(xi) = qf(X + xi)`, the Q factor of the thin QR with `diag(R) >= 0` (Householder).
pub fn qr<E: Real, B: TallOps<E>>(ops: &B, x: &B::Mat, xi: &B::Mat) -> Result<B::Mat, Error> {
    ops.qr_q(ops.lincomb(E::one(), x, E::one(), xi)?)
}
