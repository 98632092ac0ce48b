//! Euclidean update rules: small per-tensor pieces with their own state, on plain slices.
//!
//! A rule turns a gradient `g` into the update `u` that is subtracted from the parameter
//! (`p <- p - u`), learning rate and weight decay included. On the host a rule reads the
//! old state and returns the new one in fresh buffers (state in, state out): the stored
//! state changes only when the caller keeps the result, so a step that fails later costs
//! no copy to undo. The Riemannian composition
//! ([`super::riemannian`]) calls the same rules on projected gradients. Each rule has two
//! forms of the same formulas: `update` on host slices (the CPU path) and `update_tensor`
//! in dfdx ops on device tensors (the composed path, used on CUDA).

mod adam;
mod sgd;
mod tensor_state;

pub use adam::{AdamRule, SecondMoment};
pub use sgd::{Momentum, SgdRule};
pub use tensor_state::TensorRuleState;

use crate::kernels::{scratch, Real};
use serde::{Deserialize, Serialize};

/// Weight decay of a parameter group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum WeightDecay {
    /// `g <- g + wd p` before the rule (L2 regularisation).
    L2(f64),
    /// `u <- u + lr wd p` after the rule (decoupled; with Adam, AdamW).
    Decoupled(f64),
}

/// The state a rule keeps for one tensor. Buffers are empty until first used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound = "E: Real")]
pub struct RuleState<E> {
    /// Updates applied so far.
    pub step: u64,
    /// First moment (Adam) or velocity (SGD momentum).
    pub first: Vec<E>,
    /// Elementwise second moment (Adam).
    pub second: Vec<E>,
    /// Running maximum of the second moment (AMSGrad).
    pub second_max: Vec<E>,
    /// Second moment as one scalar per matrix (Riemannian Adam).
    pub second_scalar: f64,
    /// Running maximum of `second_scalar` (AMSGrad).
    pub second_scalar_max: f64,
}

impl<E: Real> RuleState<E> {
    /// The state after this one, with no buffers yet and the step count advanced.
    pub(crate) fn successor(&self) -> Self {
        Self {
            step: self.step + 1,
            first: Vec::new(),
            second: Vec::new(),
            second_max: Vec::new(),
            second_scalar: self.second_scalar,
            second_scalar_max: self.second_scalar_max,
        }
    }

    /// Copies into this (new) state the buffers of `old` that this step did not use (a
    /// rule option changed between steps, say), so that none is lost; in the usual case,
    /// where every buffer is rewritten, there is nothing to copy.
    pub(crate) fn keep_unused(mut self, old: &Self) -> Self {
        for (new, old) in [
            (&mut self.first, &old.first),
            (&mut self.second, &old.second),
            (&mut self.second_max, &old.second_max),
        ] {
            if new.is_empty() && !old.is_empty() {
                *new = scratch::copied(old);
            }
        }
        self
    }

    /// Gives the buffers back to the pool ([`scratch`]) when the state is replaced.
    pub fn recycle(self) {
        scratch::recycle(self.first);
        scratch::recycle(self.second);
        scratch::recycle(self.second_max);
    }
}

/// An old buffer of `len` values: `buf`, or zeros for a buffer not used yet (empty).
pub(crate) fn old_or_zeros<E: Real>(buf: &[E], len: usize) -> std::borrow::Cow<'_, [E]> {
    if buf.is_empty() {
        std::borrow::Cow::Owned(vec![E::zero(); len])
    } else {
        assert_eq!(buf.len(), len, "rule state: buffer length");
        std::borrow::Cow::Borrowed(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer the step does not use (AMSGrad switched off between steps) is carried
    /// over unchanged; the used ones are new.
    #[test]
    fn unused_buffers_survive_a_step() {
        let g0 = [0.5f64, -1.0, 2.0];
        let on = AdamRule {
            amsgrad: true,
            ..AdamRule::default()
        };
        let s1 = on.update(
            0.1,
            None,
            SecondMoment::Elementwise,
            &RuleState::default(),
            &[],
            &mut g0.clone(),
        );
        assert_eq!(s1.second_max.len(), 3);
        let off = AdamRule::default();
        let s2 = off.update(
            0.1,
            None,
            SecondMoment::Elementwise,
            &s1,
            &[],
            &mut g0.clone(),
        );
        assert_eq!(s2.second_max, s1.second_max, "AMSGrad maximum kept");
        assert_ne!(s2.second, s1.second, "second moment advanced");
        assert_eq!(s2.step, 2);
    }
}
