//! The optimizer's serialisable state.

use super::groups::Group;
use super::rules::RuleState;
use crate::kernels::{HostMat, Real};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything an optimizer carries between steps, keyed by the tensors' dotted paths so
/// that it can be saved (serde) and restored into a fresh optimizer for the same model.
/// Moments of a Stiefel tensor `[n, r]` are stored with rows padded to
/// [`HostMat::stride_for`]`(r)`.
///
/// Restoring gives bit-identical continuation only with a format that round-trips floats
/// exactly: bincode, or serde_json with its `float_roundtrip` feature (its default parser
/// can be off by an ulp).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound = "E: Real")]
pub struct OptimizerState<E> {
    /// Steps taken.
    pub steps: u64,
    /// Per-tensor rule state.
    pub tensors: BTreeMap<String, RuleState<E>>,
}

/// Length of a tensor's state buffers.
pub(crate) fn buffer_len<E: Real>(group: Group, dims: &[usize]) -> usize {
    match (group, dims) {
        (Group::Stiefel, [n, r]) => n * HostMat::<E>::stride_for(*r),
        _ => dims.iter().product(),
    }
}

impl<E: Real> OptimizerState<E> {
    /// Checks that every entry names a trainable tensor of `layout` and that its buffers
    /// are empty or of the right length.
    pub(crate) fn check(
        &self,
        layout: &BTreeMap<String, (Vec<usize>, Group)>,
    ) -> Result<(), Error> {
        for (path, s) in &self.tensors {
            let (dims, group) = layout
                .get(path)
                .ok_or_else(|| Error::StateMismatch(format!("no trainable tensor {path}")))?;
            let len = buffer_len::<E>(*group, dims);
            for (name, buf) in [
                ("first", &s.first),
                ("second", &s.second),
                ("second_max", &s.second_max),
            ] {
                if !buf.is_empty() && buf.len() != len {
                    return Err(Error::StateMismatch(format!(
                        "{path}.{name} has {} values, expected {len}",
                        buf.len()
                    )));
                }
            }
        }
        Ok(())
    }
}
