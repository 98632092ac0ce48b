//! Which [`TallOps`] backend each dfdx device uses.

use super::{HostOps, Real, TallOps};
use dfdx::tensor::Cpu;
use dfdx::tensor_ops::Device;

/// A dfdx device the Stiefel geometry runs on, with its [`TallOps`] backend: `Cpu` uses
/// the fused slice path ([`HostOps`]); `Cuda` (feature `cuda`) the dfdx-op path
/// ([`ComposedOps`](super::ComposedOps)).
pub trait StiefelDevice<E: Real>: Device<E> {
    /// The backend for this device.
    type Ops: TallOps<E, Device = Self>;

    /// The backend bound to this device.
    fn tall_ops(&self) -> Self::Ops;
}

impl<E: Real> StiefelDevice<E> for Cpu
where
    Cpu: Device<E>,
{
    type Ops = HostOps;

    fn tall_ops(&self) -> HostOps {
        HostOps::new(self)
    }
}

#[cfg(feature = "cuda")]
impl<E: Real> StiefelDevice<E> for dfdx::tensor::Cuda
where
    dfdx::tensor::Cuda: Device<E>,
{
    type Ops = super::ComposedOps<dfdx::tensor::Cuda>;

    fn tall_ops(&self) -> Self::Ops {
        super::ComposedOps::new(self)
    }
}
