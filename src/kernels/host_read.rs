//! Reading tensors and their gradients to the host: the copies a host step starts with.

use super::{Flat, Real};
use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Device;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The gradient of `t` in `grads`, or `None` where it has none.
///
/// dfdx 0.13 offers no non-panicking gradient lookup outside the crate
/// (`Gradients::get` unwraps), so a missing gradient is detected by catching that
/// lookup's panic; its message still reaches stderr. Gradients from
/// `model.alloc_grads()` are never missing.
pub fn gradient_of<E: Real, D: Device<E>>(
    grads: &Gradients<E, D>,
    t: &Flat<E, D>,
) -> Option<Flat<E, D>> {
    catch_unwind(AssertUnwindSafe(|| grads.get(t))).ok()
}

/// One copy of a host read, into a buffer as long as the tensor.
pub enum Read<'a, E: Real, D: Device<E>> {
    /// The tensor's data.
    Tensor(&'a Flat<E, D>, &'a mut [E]),
    /// The tensor's gradient; the flag tells whether there was one.
    Gradient(&'a Flat<E, D>, &'a mut [E], &'a mut bool),
}

impl<E: Real, D: Device<E>> Read<'_, E, D> {
    /// Makes the copy.
    pub fn run(self, grads: &Gradients<E, D>) {
        match self {
            Read::Tensor(t, dst) => t.copy_into(dst),
            Read::Gradient(t, dst, found) => {
                let g = gradient_of(grads, t);
                *found = g.is_some();
                if let Some(g) = g {
                    g.copy_into(dst);
                }
            }
        }
    }
}
