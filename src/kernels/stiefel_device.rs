//! Which [`TallOps`] backend each dfdx device uses.

use super::{parallel, ComposedOps, HostOps, Read, Real, TallOps};
use dfdx::tensor::Cpu;
use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Device;

/// A dfdx device the Stiefel geometry runs on, with its [`TallOps`] backend: `Cpu` uses
/// the fused slice path ([`HostOps`]); `Cuda` (feature `cuda`) the dfdx-op path
/// ([`ComposedOps`](super::ComposedOps)).
pub trait StiefelDevice<E: Real>: Device<E> {
    /// The backend for this device.
    type Ops: TallOps<E, Device = Self>;

    /// The backend bound to this device.
    fn tall_ops(&self) -> Self::Ops;

    /// The composed backend where whole optimizer steps should run as dfdx ops on this
    /// device (`Cuda`), or `None` where copying to the host is faster (`Cpu`).
    fn composed_steps(&self) -> Option<ComposedOps<Self>>;

    /// Makes the copies of a host read. On `Cpu` they are shared between two threads
    /// (`parallel::run`): a gradient's copy (after the clone `Gradients::get` makes) on
    /// one while the tensor's own copy runs on the other.
    fn read_to_host(reads: Vec<Read<'_, E, Self>>, grads: &Gradients<E, Self>) {
        reads.into_iter().for_each(|read| read.run(grads));
    }
}

impl<E: Real> StiefelDevice<E> for Cpu
where
    Cpu: Device<E>,
{
    type Ops = HostOps;

    fn tall_ops(&self) -> HostOps {
        HostOps::new(self)
    }

    fn composed_steps(&self) -> Option<ComposedOps<Self>> {
        None
    }

    fn read_to_host(reads: Vec<Read<'_, E, Self>>, grads: &Gradients<E, Self>) {
        parallel::run(reads, |read| read.run(grads));
    }
}

#[cfg(feature = "cuda")]
impl<E: Real> StiefelDevice<E> for dfdx::tensor::Cuda
where
    dfdx::tensor::Cuda: Device<E>,
{
    type Ops = ComposedOps<dfdx::tensor::Cuda>;

    fn tall_ops(&self) -> Self::Ops {
        ComposedOps::new(self)
    }

    fn composed_steps(&self) -> Option<ComposedOps<Self>> {
        Some(ComposedOps::new(self))
    }
}
