//! Euclidean update rules: small per-tensor pieces with their own state, on plain slices.
//!
//! A rule turns a gradient `g` into the update `u` that is subtracted from the parameter
//! (`p <- p - u`), learning rate and weight decay included. The Riemannian composition
//! ([`super::riemannian`]) calls the same rules on projected gradients. Each rule has two
//! forms of the same formulas: `update` on host slices (the CPU path) and `update_tensor`
//! in dfdx ops on device tensors (the composed path, used on CUDA).

mod adam;
mod sgd;
mod tensor_state;

pub use adam::{AdamRule, SecondMoment};
pub use sgd::{Momentum, SgdRule};
pub use tensor_state::TensorRuleState;

use crate::kernels::Real;
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
    /// Sizes a buffer on first use.
    pub(crate) fn sized(buf: &mut Vec<E>, len: usize) -> &mut Vec<E> {
        if buf.len() != len {
            buf.clear();
            buf.resize(len, E::zero());
        }
        buf
    }
}
