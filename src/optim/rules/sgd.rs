//! Stochastic gradient descent with momentum, dampening and weight decay.

use super::lane::{Linear, OnDevice};
use super::{old_range, ElementwiseRule, RuleState, StateRange, TensorRule, TensorRuleState};
use crate::kernels::{Flat, Real};
use crate::Error;
use dfdx::tensor_ops::Device;
use serde::{Deserialize, Serialize};

/// Momentum of [`SgdRule`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Momentum {
    /// `v <- mu v + (1 - dampening) g`, `u = lr v`.
    Classic(f64),
    /// `v <- mu v + (1 - dampening) g`, `u = lr (g + mu v)` (Nesterov).
    Nesterov(f64),
}

/// SGD as PyTorch and dfdx define it:
///
/// - `g <- g + wd p` for [`WeightDecay::L2`](super::WeightDecay::L2);
/// - with momentum `mu`: `v <- g` on the first step, then `v <- mu v + (1 - dampening) g`;
///   `u = lr v` (classic) or `u = lr (g + mu v)` (Nesterov); without momentum `u = lr g`;
/// - `u <- u + lr wd p` for [`WeightDecay::Decoupled`](super::WeightDecay::Decoupled).
///
/// With `dampening = 0` this is exactly dfdx's `Sgd` kernel, operation for operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdRule {
    /// Momentum, if any.
    pub momentum: Option<Momentum>,
    /// Dampening of the gradient in the velocity (PyTorch's `dampening`).
    pub dampening: f64,
}

impl Default for SgdRule {
    fn default() -> Self {
        Self {
            momentum: None,
            dampening: 0.0,
        }
    }
}

/// SGD's constants at one step and its formulas, written once for both paths (on `E` in
/// the host loops, on tensors in the composed path: [`Lane`]).
pub(crate) struct SgdStep<S> {
    lr: S,
    /// `mu` and `1 - dampening`, with momentum.
    pub(crate) momentum: Option<(S, S)>,
    nesterov: bool,
}

impl<S: Real> SgdStep<S> {
    pub(crate) fn new(rule: &SgdRule, lr: f64) -> Self {
        let keep = S::one() - S::of_f64(rule.dampening);
        Self {
            lr: S::of_f64(lr),
            momentum: match rule.momentum {
                Some(Momentum::Classic(mu) | Momentum::Nesterov(mu)) => Some((S::of_f64(mu), keep)),
                None => None,
            },
            nesterov: matches!(rule.momentum, Some(Momentum::Nesterov(_))),
        }
    }

    /// `v <- g` on the first step (`v = None`), then `v <- mu v + (1 - dampening) g`.
    #[inline(always)]
    pub(crate) fn velocity<L: Linear<S>>(mu: S, keep: S, v: Option<L>, g: L) -> L {
        match v {
            None => g,
            Some(v) => g * keep + v * mu,
        }
    }

    /// `u = lr (g + mu v)` (Nesterov) or `u = lr v` with momentum, `u = lr g` without.
    #[inline(always)]
    pub(crate) fn update<L: Linear<S>>(&self, g: L, v: Option<L>) -> L {
        match (self.momentum, v) {
            (Some((mu, _)), Some(v)) if self.nesterov => (g + v * mu) * self.lr,
            (_, Some(v)) => v * self.lr,
            (_, None) => g * self.lr,
        }
    }
}

impl TensorRule for SgdRule {
    fn step_tensor<E: Real, D: Device<E>>(
        &self,
        lr: f64,
        state: &mut TensorRuleState<E, D>,
        g: Flat<E, D>,
    ) -> Result<Flat<E, D>, Error> {
        let first_step = state.step == 0;
        state.step = state.step.saturating_add(1);
        let c = SgdStep::<E>::new(self, lr);
        let g = OnDevice::of(g);
        let v = match c.momentum {
            Some((mu, keep)) => {
                let v0 = state
                    .first
                    .clone()
                    .filter(|_| !first_step)
                    .map(OnDevice::of);
                let v = SgdStep::velocity(mu, keep, v0, g.clone()).into_tensor()?;
                Some(OnDevice::of(state.first.insert(v).clone()))
            }
            None => None,
        };
        c.update(g, v).into_tensor()
    }
}

impl ElementwiseRule for SgdRule {
    fn next_state<E: Real>(&self, old: &RuleState<E>, len: usize, _: f64) -> RuleState<E> {
        let mut next = old.successor();
        if self.momentum.is_some() {
            next.first = E::pooled(len);
        }
        next.keep_unused(old)
    }

    fn apply<E: Real>(&self, lr: f64, old: &RuleState<E>, next: StateRange<'_, E>, g: &mut [E]) {
        let c = SgdStep::<E>::new(self, lr);
        let Some((mu, keep)) = c.momentum else {
            E::vectorised(|| g.iter_mut().for_each(|gi| *gi = c.update(*gi, None)));
            return;
        };
        let first_step = old.step == 0;
        let range = next.offset..next.offset + g.len();
        let v_old = old_range(&old.first, range);
        let velocity = next.first.iter_mut().zip(v_old.iter());
        E::vectorised(|| {
            for (gi, (v, &v0)) in g.iter_mut().zip(velocity) {
                *v = SgdStep::velocity(mu, keep, (!first_step).then_some(v0), *gi);
                *gi = c.update(*gi, Some(*v));
            }
        });
    }
}
