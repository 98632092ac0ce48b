//! Which [`TallOps`] backend each dfdx device uses.

use super::{
    gradient_of, parallel, ComposedBackend, ComposedOps, Flat, HostOps, Read, Real, TallOps,
};
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

    /// The backend of the composed path (whole optimizer steps as dfdx ops on this
    /// device): [`ComposedOps`].
    type Composed: ComposedBackend<E, Self>;

    /// The composed backend where whole optimizer steps should run as dfdx ops on this
    /// device (`Cuda`), or `None` where copying to the host is faster (`Cpu`).
    fn composed_steps(&self) -> Option<Self::Composed>;

    /// The gradient of `t` in `grads`, or `None` where it has none. dfdx 0.13 offers no
    /// non-panicking lookup, so a missing gradient is detected by catching the panic of
    /// `Gradients::get` (its message still reaches stderr); gradients from
    /// `model.alloc_grads()` are never missing.
    fn gradient(grads: &Gradients<E, Self>, t: &Flat<E, Self>) -> Option<Flat<E, Self>> {
        gradient_of(grads, t)
    }

    /// Copies each tensor `t` and its gradient into the buffers beside it (`data`,
    /// `grad`, each as long as `t`), and sets `found` where the gradient exists. On `Cpu`
    /// the copies are shared between two threads (`parallel::run`): a gradient's copy
    /// (after the clone `Gradients::get` makes) on one while the tensor's own copy runs on
    /// the other.
    fn read_to_host(reads: Vec<HostRead<'_, E, Self>>, grads: &Gradients<E, Self>) {
        read_jobs(reads).for_each(|read| read.run(grads));
    }
}

/// One tensor to read to the host: `(t, data, grad, found)` ([`StiefelDevice::read_to_host`]).
pub type HostRead<'a, E, D> = (&'a Flat<E, D>, &'a mut [E], &'a mut [E], &'a mut bool);

/// The copies of `reads`, two per tensor.
fn read_jobs<'a, E: Real, D: Device<E>>(
    reads: Vec<HostRead<'a, E, D>>,
) -> impl Iterator<Item = Read<'a, E, D>> {
    reads
        .into_iter()
        .flat_map(|(t, data, grad, found)| [Read::Tensor(t, data), Read::Gradient(t, grad, found)])
}

impl<E: Real> StiefelDevice<E> for Cpu
where
    Cpu: Device<E>,
{
    type Ops = HostOps;

    fn tall_ops(&self) -> HostOps {
        HostOps::new(self)
    }

    type Composed = ComposedOps<Self>;

    fn composed_steps(&self) -> Option<ComposedOps<Self>> {
        None
    }

    fn read_to_host(reads: Vec<HostRead<'_, E, Self>>, grads: &Gradients<E, Self>) {
        parallel::run(read_jobs(reads).collect(), |read| read.run(grads));
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

    type Composed = ComposedOps<Self>;

    fn composed_steps(&self) -> Option<ComposedOps<Self>> {
        Some(ComposedOps::new(self))
    }
}
