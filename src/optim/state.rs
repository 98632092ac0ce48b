//! The optimizer's serialisable state.

use super::groups::Group;
use super::rules::RuleState;
use crate::kernels::Real;
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything an optimizer carries between steps, keyed by the tensors' dotted paths so
/// that it can be saved (serde) and restored into a fresh optimizer for the same model.
/// Moments of a Stiefel tensor `[n, r]` are stored with rows padded to
/// the host's vector unit ([`HostElement::padded_len`](crate::kernels::HostElement::padded_len)).
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
    /// The dimensions of each tensor in `tensors`, recorded when the state is taken and
    /// checked when it is restored (a state saved without them is checked by buffer
    /// lengths only).
    #[serde(default)]
    pub shapes: BTreeMap<String, Vec<usize>>,
}

/// Length of a tensor's state buffers.
pub(crate) fn buffer_len<E: Real>(group: Group, dims: &[usize]) -> usize {
    match (group, dims) {
        (Group::Stiefel, [n, r]) => E::padded_len(*n, *r),
        _ => dims.iter().product(),
    }
}

impl<E: Real> OptimizerState<E> {
    /// This state with the dimensions of its tensors recorded from `layout`.
    pub(crate) fn with_shapes(mut self, layout: &BTreeMap<String, (Vec<usize>, Group)>) -> Self {
        self.shapes = self
            .tensors
            .keys()
            .filter_map(|p| layout.get(p).map(|(dims, _)| (p.clone(), dims.clone())))
            .collect();
        self
    }

    /// Checks that every entry names a trainable tensor of `layout`, of the recorded
    /// shape, that its buffers are empty or of the right length, that every value is
    /// finite and every second moment `>= 0`.
    pub(crate) fn check(
        &self,
        layout: &BTreeMap<String, (Vec<usize>, Group)>,
    ) -> Result<(), Error> {
        let mismatch = |what: String| Err(Error::StateMismatch(what));
        for (path, dims) in &self.shapes {
            match layout.get(path) {
                Some((have, _)) if have == dims => {}
                Some((have, _)) => {
                    return mismatch(format!(
                        "{path} was saved with shape {dims:?}; the model's is {have:?}"
                    ))
                }
                None => return mismatch(format!("no trainable tensor {path}")),
            }
        }
        for (path, s) in &self.tensors {
            let (dims, group) = layout
                .get(path)
                .ok_or_else(|| Error::StateMismatch(format!("no trainable tensor {path}")))?;
            let len = buffer_len::<E>(*group, dims);
            let finite = |v: &[E]| v.iter().all(|&x| Real::to_f64(x).is_finite());
            let non_negative = |v: &[E]| v.iter().all(|&x| Real::to_f64(x) >= 0.0);
            let scalars = [s.second_scalar, s.second_scalar_max];
            if !finite(&s.first) || !finite(&s.second) || !finite(&s.second_max) {
                return mismatch(format!("{path}: a moment holds NaN or an infinity"));
            }
            if !non_negative(&s.second)
                || !non_negative(&s.second_max)
                || !scalars.iter().all(|v| v.is_finite() && *v >= 0.0)
            {
                return mismatch(format!(
                    "{path}: a second moment is negative or not finite (they are sums of squares)"
                ));
            }
            // Two symmetric r x r matrices for a square core (or nothing), finite, with
            // non-negative diagonals (each is a sum of squares).
            let directions = [
                ("second_directions", &s.second_directions),
                ("second_directions_max", &s.second_directions_max),
            ];
            for (name, held) in directions {
                let r = dims.first().copied().unwrap_or(0);
                let square = dims.len() == 2 && dims[1] == r;
                if !(held.is_empty() || square && held.len() == 2 * r * r) {
                    return mismatch(format!(
                        "{path}.{name} has {} values, expected two {r} x {r} matrices of a square core",
                        held.len()
                    ));
                }
                let diagonal = (0..2 * r).map(|k| held.get((k / r) * r * r + (k % r) * (r + 1)));
                if !held.iter().all(|x| x.is_finite()) || !diagonal.flatten().all(|&d| d >= 0.0) {
                    return mismatch(format!(
                        "{path}: a second moment is negative or not finite (they are sums of squares)"
                    ));
                }
            }
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
