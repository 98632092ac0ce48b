//! Stochastic gradient descent with momentum, dampening and weight decay.

use super::{
    old_range, ElementwiseRule, RuleState, StateRange, TensorRule, TensorRuleState, WeightDecay,
};
use crate::kernels::{Flat, Real};
use crate::Error;
use dfdx::tensor_ops::{Device, TryMul};
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
/// - `g <- g + wd p` for [`WeightDecay::L2`];
/// - with momentum `mu`: `v <- g` on the first step, then `v <- mu v + (1 - dampening) g`;
///   `u = lr v` (classic) or `u = lr (g + mu v)` (Nesterov); without momentum `u = lr g`;
/// - `u <- u + lr wd p` for [`WeightDecay::Decoupled`].
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

impl TensorRule for SgdRule {
    fn update_tensor<E: Real, D: Device<E>>(
        &self,
        lr: f64,
        weight_decay: Option<WeightDecay>,
        state: &mut TensorRuleState<E, D>,
        p: Option<&Flat<E, D>>,
        mut g: Flat<E, D>,
    ) -> Result<Flat<E, D>, Error> {
        let first_step = state.step == 0;
        state.step = state.step.saturating_add(1);
        let param = || p.expect("SgdRule::update_tensor: weight decay needs the parameter");
        if let Some(WeightDecay::L2(wd)) = weight_decay {
            g.try_axpy(1.0, param(), wd).map_err(Error::device)?;
        }
        let mut u = match self.momentum {
            Some(Momentum::Classic(mu) | Momentum::Nesterov(mu)) => {
                let v = match state.first.as_mut() {
                    Some(v) if !first_step => {
                        v.try_axpy(mu, &g, 1.0 - self.dampening)
                            .map_err(Error::device)?;
                        v
                    }
                    _ => state.first.insert(g.clone()),
                };
                if matches!(self.momentum, Some(Momentum::Nesterov(_))) {
                    // lr (g + mu v)
                    let mut u = g;
                    u.try_axpy(lr, v, lr * mu).map_err(Error::device)?;
                    u
                } else {
                    v.clone().try_mul(E::of_f64(lr)).map_err(Error::device)?
                }
            }
            None => g.try_mul(E::of_f64(lr)).map_err(Error::device)?,
        };
        if let Some(WeightDecay::Decoupled(wd)) = weight_decay {
            u.try_axpy(1.0, param(), wd * lr).map_err(Error::device)?;
        }
        Ok(u)
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
        let lr_e = E::of_f64(lr);
        let Some(Momentum::Classic(mu) | Momentum::Nesterov(mu)) = self.momentum else {
            g.iter_mut().for_each(|gi| *gi *= lr_e);
            return;
        };
        let first_step = old.step == 0;
        let keep = E::one() - E::of_f64(self.dampening);
        let nesterov = matches!(self.momentum, Some(Momentum::Nesterov(_)));
        let mu = E::of_f64(mu);
        let range = next.offset..next.offset + g.len();
        let v_old = old_range(&old.first, range);
        let velocity = next.first.iter_mut().zip(v_old.iter());
        E::vectorised(|| {
            for (gi, (v, &v0)) in g.iter_mut().zip(velocity) {
                *v = if first_step {
                    *gi
                } else {
                    *gi * keep + mu * v0
                };
                *gi = if nesterov {
                    (*gi + mu * *v) * lr_e
                } else {
                    *v * lr_e
                };
            }
        });
    }
}
