//! Adam, with AMSGrad, decoupled weight decay (AdamW), and a per-matrix second moment.

use super::{
    old_range, ElementwiseRule, RuleState, StateRange, TensorRule, TensorRuleState, WeightDecay,
};
use crate::kernels::{Flat, Real};
use crate::Error;
use dfdx::shapes::{HasShape, Rank0, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{BroadcastTo, Device, SumTo, TryAdd, TryDiv, TryMul};
use serde::{Deserialize, Serialize};

/// How Adam's second moment is kept for a Stiefel tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecondMoment {
    /// One per element, as in Euclidean Adam.
    #[default]
    Elementwise,
    /// One scalar per matrix: the running average of `||g||_F^2`, the squared norm of the
    /// Riemannian gradient (Becigneul and Ganea 2019, Riemannian Adam).
    Matrix,
}

/// Adam (Kingma and Ba 2015) as dfdx defines it, plus AMSGrad and a per-matrix second
/// moment:
///
/// - `g <- g + wd p` for [`WeightDecay::L2`];
/// - `m <- b1 m + (1 - b1) g`, `v <- b2 v + (1 - b2) g^2` (or, per matrix,
///   `v <- b2 v + (1 - b2) ||g||_F^2`); with AMSGrad `v_max <- max(v_max, v)` replaces `v`;
/// - `u = lr m_hat / (sqrt(v_hat) + eps)` with `m_hat = m / (1 - b1^t)`,
///   `v_hat = v / (1 - b2^t)`;
/// - `u <- u + lr wd p` for [`WeightDecay::Decoupled`] (AdamW).
///
/// Elementwise, without AMSGrad, this is dfdx's `Adam` kernel operation for operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamRule {
    /// `[b1, b2]`.
    pub betas: [f64; 2],
    /// Added to `sqrt(v_hat)`.
    pub eps: f64,
    /// Use the running maximum of the second moment (Reddi, Kale and Kumar 2018).
    pub amsgrad: bool,
}

impl Default for AdamRule {
    fn default() -> Self {
        Self {
            betas: [0.9, 0.999],
            eps: 1e-8,
            amsgrad: false,
        }
    }
}

impl AdamRule {
    /// [`TensorRule::update_tensor`] with the second moment kept as `second_moment` says.
    #[allow(clippy::too_many_arguments)]
    fn update_tensor<E: Real, D: Device<E>>(
        &self,
        lr: f64,
        weight_decay: Option<WeightDecay>,
        second_moment: SecondMoment,
        state: &mut TensorRuleState<E, D>,
        p: Option<&Flat<E, D>>,
        mut g: Flat<E, D>,
    ) -> Result<Flat<E, D>, Error> {
        state.step = state.step.saturating_add(1);
        let t = i32::try_from(state.step).unwrap_or(i32::MAX);
        let [b1, b2] = self.betas;
        let (m_scale, v_scale) = (1.0 / (1.0 - b1.powi(t)), 1.0 / (1.0 - b2.powi(t)));
        let param = || p.expect("AdamRule::update_tensor: weight decay needs the parameter");
        if let Some(WeightDecay::L2(wd)) = weight_decay {
            g.try_axpy(1.0, param(), wd).map_err(Error::device)?;
        }
        let m = TensorRuleState::zeros_if_none(&mut state.first, &g);
        m.try_axpy(b1, &g, 1.0 - b1).map_err(Error::device)?;
        let m = m.clone();
        let square = g.clone().try_square().map_err(Error::device)?;
        let denominator = match second_moment {
            SecondMoment::Elementwise => {
                self.denominator(&mut state.second, &mut state.second_max, square, v_scale)
            }
            SecondMoment::Matrix => {
                let norm2 = square.try_sum::<Rank0, _>().map_err(Error::device)?;
                let (v, v_max) = (&mut state.second_scalar, &mut state.second_scalar_max);
                self.denominator(v, v_max, norm2, v_scale)
                    .and_then(|d| d.try_broadcast_like(g.shape()))
            }
        }
        .map_err(Error::device)?;
        let mut u = m
            .try_mul(E::of_f64(lr * m_scale))
            .and_then(|m| m.try_div(denominator))
            .map_err(Error::device)?;
        if let Some(WeightDecay::Decoupled(wd)) = weight_decay {
            u.try_axpy(1.0, param(), wd * lr).map_err(Error::device)?;
        }
        Ok(u)
    }

    /// The device form's second moment: `v <- b2 v + (1 - b2) sq` (elementwise, or one
    /// scalar per matrix with `sq = ||g||_F^2`), then `sqrt(v_used / (1 - b2^t)) + eps`
    /// with `v_used = v`, or under AMSGrad the running maximum `v_max <- max(v_max, v)`.
    fn denominator<S: Shape, E: Real, D: Device<E>>(
        &self,
        v: &mut Option<Tensor<S, E, D>>,
        v_max: &mut Option<Tensor<S, E, D>>,
        sq: Tensor<S, E, D>,
        v_scale: f64,
    ) -> Result<Tensor<S, E, D>, D::Err> {
        let b2 = self.betas[1];
        let v = TensorRuleState::zeros_if_none(v, &sq);
        v.try_axpy(b2, &sq, 1.0 - b2)?;
        let mut used = v.clone();
        if self.amsgrad {
            let vm = TensorRuleState::zeros_if_none(v_max, &sq);
            *vm = vm.clone().try_maximum(used)?;
            used = vm.clone();
        }
        used.try_mul(E::of_f64(v_scale))?
            .try_sqrt()?
            .try_add(E::of_f64(self.eps))
    }
}

/// Adam with its choice of second moment, as an [`ElementwiseRule`] (the per-matrix second
/// moment is a step constant: it needs `||g||_F^2` before the first range).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamUpdate {
    /// The rule's settings.
    pub rule: AdamRule,
    /// How the second moment is kept.
    pub second_moment: SecondMoment,
}

impl TensorRule for AdamUpdate {
    fn update_tensor<E: Real, D: Device<E>>(
        &self,
        lr: f64,
        weight_decay: Option<WeightDecay>,
        state: &mut TensorRuleState<E, D>,
        p: Option<&Flat<E, D>>,
        g: Flat<E, D>,
    ) -> Result<Flat<E, D>, Error> {
        self.rule
            .update_tensor(lr, weight_decay, self.second_moment, state, p, g)
    }
}

impl ElementwiseRule for AdamUpdate {
    fn needs_grad_norm(&self) -> bool {
        self.second_moment == SecondMoment::Matrix
    }

    fn next_state<E: Real>(&self, old: &RuleState<E>, len: usize, grad_norm2: f64) -> RuleState<E> {
        let mut next = old.successor();
        next.first = E::pooled(len);
        match self.second_moment {
            SecondMoment::Elementwise => {
                next.second = E::pooled(len);
                if self.rule.amsgrad {
                    next.second_max = E::pooled(len);
                }
            }
            SecondMoment::Matrix => {
                // v <- b2 v + (1 - b2) ||g||_F^2, one scalar for the matrix (in f64).
                let b2 = self.rule.betas[1];
                next.second_scalar = b2 * old.second_scalar + (1.0 - b2) * grad_norm2;
                next.second_scalar_max = old.second_scalar_max.max(next.second_scalar);
            }
        }
        next.keep_unused(old)
    }

    fn apply<E: Real>(&self, lr: f64, old: &RuleState<E>, next: StateRange<'_, E>, g: &mut [E]) {
        let rule = &self.rule;
        let t = i32::try_from(next.step).unwrap_or(i32::MAX);
        let [b1, b2] = rule.betas.map(E::of_f64);
        let (eps, lr_e) = (E::of_f64(rule.eps), E::of_f64(lr));
        let m_scale = (E::one() - b1.powi(t)).recip();
        let v_scale = (E::one() - b2.powi(t)).recip();
        let (keep1, keep2) = (E::one() - b1, E::one() - b2);
        let range = next.offset..next.offset + g.len();
        let m_old = old_range(&old.first, range.clone());
        let first = next.first;
        // Each case is its own loop over zipped slices, with no branch inside, so that it
        // is vectorised (compiled for the widest vector unit: `dispatch`).
        match (self.second_moment, rule.amsgrad) {
            (SecondMoment::Elementwise, false) => {
                let v_old = old_range(&old.second, range.clone());
                let moments = first.iter_mut().zip(next.second.iter_mut());
                let old = m_old.iter().zip(v_old.iter());
                E::vectorised(|| {
                    for ((gi, (m, v)), (&m0, &v0)) in g.iter_mut().zip(moments).zip(old) {
                        *m = m0 * b1 + *gi * keep1;
                        *v = v0 * b2 + *gi * *gi * keep2;
                        *gi = lr_e * (*m * m_scale) / ((*v * v_scale).sqrt() + eps);
                    }
                });
            }
            (SecondMoment::Elementwise, true) => {
                let v_old = old_range(&old.second, range.clone());
                let vm_old = old_range(&old.second_max, range.clone());
                let moments = first
                    .iter_mut()
                    .zip(next.second.iter_mut())
                    .zip(next.second_max.iter_mut());
                let old = m_old.iter().zip(v_old.iter()).zip(vm_old.iter());
                E::vectorised(|| {
                    for ((gi, ((m, v), vm)), ((&m0, &v0), &vm0)) in
                        g.iter_mut().zip(moments).zip(old)
                    {
                        *m = m0 * b1 + *gi * keep1;
                        *v = v0 * b2 + *gi * *gi * keep2;
                        *vm = if *v > vm0 { *v } else { vm0 };
                        *gi = lr_e * (*m * m_scale) / ((*vm * v_scale).sqrt() + eps);
                    }
                });
            }
            (SecondMoment::Matrix, amsgrad) => {
                let v = if amsgrad {
                    next.second_scalar_max
                } else {
                    next.second_scalar
                };
                let b2f = rule.betas[1];
                let denominator = E::of_f64((v / (1.0 - b2f.powi(t))).sqrt() + rule.eps);
                E::vectorised(|| {
                    for ((gi, m), &m0) in g.iter_mut().zip(first.iter_mut()).zip(m_old.iter()) {
                        *m = m0 * b1 + *gi * keep1;
                        *gi = lr_e * (*m * m_scale) / denominator;
                    }
                });
            }
        }
    }
}
