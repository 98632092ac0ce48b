//! Why a step did not happen: the error and the tensors it concerns (dfdx's error type can
//! only name tensors), and the step's outcome when it does.

use super::walk::Value;
use crate::kernels::Real;
use crate::Error;
use dfdx::tensor_ops::Device;
use std::collections::BTreeMap;

/// A step's new values and rule states, by path (written only if the step succeeds).
pub(super) type Outcome<E, D, S> = (BTreeMap<String, Value<E, D>>, BTreeMap<String, S>);

/// Why a step did not happen, with the tensors concerned (for dfdx's error type).
pub(super) struct Refusal {
    pub(super) error: Error,
    pub(super) tensors: Vec<String>,
}

impl Refusal {
    /// Non-finite gradients of `tensors`.
    pub(super) fn non_finite(tensors: Vec<String>) -> Self {
        Self {
            error: Error::NonFinite {
                what: format!("the gradient of {}", tensors.join(", ")),
            },
            tensors,
        }
    }

    /// A device error while writing `values`.
    pub(super) fn device<E: Real, D: Device<E>>(
        e: D::Err,
        values: &BTreeMap<String, Value<E, D>>,
    ) -> Self {
        Self {
            error: Error::device(e),
            tensors: values.keys().cloned().collect(),
        }
    }
}
