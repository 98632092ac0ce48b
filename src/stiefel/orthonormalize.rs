//! Bringing a tensor back onto the manifold: the Q factor of its thin QR.

use crate::kernels::{Real, StiefelDevice, TallOps};
use crate::Error;
use dfdx::shapes::Dim;
use dfdx::tensor::{HasErr, Tensor};
use dfdx::tensor_ops::Device;

/// Replaces `x` in place (same tensor id) by the Q factor of its thin QR with
/// `diag(R) >= 0` (Householder): orthonormal columns spanning the same space when `x` has
/// full rank, completed to orthonormal columns when it has not. The optimizers refuse a
/// Stiefel tensor that is not orthonormal ([`Error::NotOrthonormal`]); this is the way
/// to fix one that was set by hand. Errors, leaving `x` unchanged, if it holds NaN or an
/// infinity or is not tall.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::stiefel::{orthogonality_error, orthonormalize};
///
/// let dev = Cpu::default();
/// let mut x: Tensor<Rank2<5, 2>, f64, _> = dev.sample_normal();
/// assert!(orthogonality_error(&x) > 0.1);
/// orthonormalize(&mut x).unwrap();
/// assert!(orthogonality_error(&x) < 1e-14);
/// ```
pub fn orthonormalize<N: Dim, R: Dim, E: Real, D>(x: &mut Tensor<(N, R), E, D>) -> Result<(), Error>
where
    D: StiefelDevice<E> + Device<E> + HasErr,
{
    let ops = x.device().tall_ops();
    let a = ops.load(x)?;
    let (rows, cols) = ops.dims(&a);
    if cols > rows {
        return Err(Error::NotTall { rows, cols });
    }
    if !ops.all_finite(&a)? {
        return Err(Error::NonFinite {
            what: "the tensor to orthonormalise".into(),
        });
    }
    let q = ops.qr_q(a)?;
    ops.store_into(&q, x)
}
