//! A rule's state kept on a device, for the composed path.

use super::RuleState;
use crate::kernels::{Flat, Real};
use crate::Error;
use dfdx::shapes::Rank0;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

/// [`RuleState`] with its buffers as device tensors (`None` until first used). Buffers of a
/// Stiefel tensor `[n, r]` are compact here (`n r` values) and padded in [`RuleState`].
#[derive(Debug, Clone)]
pub struct TensorRuleState<E: Real, D: Device<E>> {
    /// Updates applied so far.
    pub step: u64,
    /// First moment (Adam) or velocity (SGD momentum).
    pub first: Option<Flat<E, D>>,
    /// Elementwise second moment (Adam).
    pub second: Option<Flat<E, D>>,
    /// Running maximum of the second moment (AMSGrad).
    pub second_max: Option<Flat<E, D>>,
    /// Second moment as one scalar per matrix (Riemannian Adam).
    pub second_scalar: Option<Tensor<Rank0, E, D>>,
    /// Running maximum of `second_scalar` (AMSGrad).
    pub second_scalar_max: Option<Tensor<Rank0, E, D>>,
    /// Second moments per singular direction of an adapter's core, on the host (the step
    /// computes with them there).
    pub second_directions: Vec<f64>,
    /// Running maxima of `second_directions` (AMSGrad).
    pub second_directions_max: Vec<f64>,
}

impl<E: Real, D: Device<E>> TensorRuleState<E, D> {
    /// An empty state.
    pub fn new() -> Self {
        Self {
            step: 0,
            first: None,
            second: None,
            second_max: None,
            second_scalar: None,
            second_scalar_max: None,
            second_directions: Vec::new(),
            second_directions_max: Vec::new(),
        }
    }

    /// Uploads a host state; `stiefel = Some((n, r))` unpads a Stiefel tensor's buffers.
    pub fn from_host(
        s: &RuleState<E>,
        stiefel: Option<(usize, usize)>,
        dev: &D,
    ) -> Result<Self, Error> {
        let buf = |v: &Vec<E>| -> Result<Option<Flat<E, D>>, Error> {
            if v.is_empty() {
                return Ok(None);
            }
            let data = match stiefel {
                Some((n, r)) => E::compact(n, r, v.clone()),
                None => v.clone(),
            };
            let len = data.len();
            dev.try_tensor_from_vec(data, (len,))
                .map(Some)
                .map_err(Error::device)
        };
        let scalar = |v: f64| -> Result<Option<Tensor<Rank0, E, D>>, Error> {
            dev.try_tensor_from_vec(vec![E::of_f64(v)], ())
                .map(Some)
                .map_err(Error::device)
        };
        Ok(Self {
            step: s.step,
            first: buf(&s.first)?,
            second: buf(&s.second)?,
            second_max: buf(&s.second_max)?,
            second_scalar: scalar(s.second_scalar)?,
            second_scalar_max: scalar(s.second_scalar_max)?,
            second_directions: s.second_directions.clone(),
            second_directions_max: s.second_directions_max.clone(),
        })
    }

    /// Downloads to a host state; `stiefel = Some((n, r))` pads a Stiefel tensor's buffers.
    pub fn to_host(&self, stiefel: Option<(usize, usize)>) -> RuleState<E> {
        let buf = |t: &Option<Flat<E, D>>| match (t, stiefel) {
            (None, _) => Vec::new(),
            (Some(t), Some((n, r))) => E::padded(n, r, t.as_vec()),
            (Some(t), None) => t.as_vec(),
        };
        let scalar =
            |t: &Option<Tensor<Rank0, E, D>>| t.as_ref().map_or(0.0, |t| t.as_vec()[0].to_f64());
        RuleState {
            step: self.step,
            first: buf(&self.first),
            second: buf(&self.second),
            second_max: buf(&self.second_max),
            second_scalar: scalar(&self.second_scalar),
            second_scalar_max: scalar(&self.second_scalar_max),
            second_directions: self.second_directions.clone(),
            second_directions_max: self.second_directions_max.clone(),
        }
    }
}

impl<E: Real, D: Device<E>> Default for TensorRuleState<E, D> {
    fn default() -> Self {
        Self::new()
    }
}
