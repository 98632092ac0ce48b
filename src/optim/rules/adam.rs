//! Adam, with AMSGrad, decoupled weight decay (AdamW), and a per-matrix second moment.

use super::lane::{Lane, Linear, OnDevice};
use super::{old_range, ElementwiseRule, RuleState, StateRange, TensorRule, TensorRuleState};
use crate::kernels::{Flat, Real};
use crate::Error;
use dfdx::shapes::{HasShape, Rank0, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{BroadcastTo, Device, SumTo};
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
/// - `g <- g + wd p` for [`WeightDecay::L2`](super::WeightDecay::L2);
/// - `m <- b1 m + (1 - b1) g`, `v <- b2 v + (1 - b2) g^2` (or, per matrix,
///   `v <- b2 v + (1 - b2) ||g||_F^2`); with AMSGrad `v_max <- max(v_max, v)` replaces `v`;
/// - `u = lr m_hat / (sqrt(v_hat) + eps)` with `m_hat = m / (1 - b1^t)`,
///   `v_hat = v / (1 - b2^t)`;
/// - `u <- u + lr wd p` for [`WeightDecay::Decoupled`](super::WeightDecay::Decoupled) (AdamW).
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

/// Adam's constants at one step, in the type `S` its formulas run in, and the formulas
/// themselves, written once for both paths (on `E` in the host loops, on tensors in the
/// composed path: [`Lane`]).
pub(crate) struct AdamStep<S> {
    b1: S,
    b2: S,
    keep1: S,
    keep2: S,
    m_scale: S,
    v_scale: S,
    eps: S,
    lr: S,
}

impl<S: Real> AdamStep<S> {
    /// The constants of `rule` at learning rate `lr` on its `step`-th update (from 1):
    /// `m_scale = 1 / (1 - b1^t)`, `v_scale = 1 / (1 - b2^t)`.
    pub(crate) fn new(rule: &AdamRule, lr: f64, step: u64) -> Self {
        let t = i32::try_from(step).unwrap_or(i32::MAX);
        let [b1, b2] = rule.betas.map(S::of_f64);
        Self {
            b1,
            b2,
            keep1: S::one() - b1,
            keep2: S::one() - b2,
            m_scale: (S::one() - b1.powi(t)).recip(),
            v_scale: (S::one() - b2.powi(t)).recip(),
            eps: S::of_f64(rule.eps),
            lr: S::of_f64(lr),
        }
    }

    /// `m <- b1 m + (1 - b1) g`.
    #[inline(always)]
    pub(crate) fn first<L: Linear<S>>(&self, m: L, g: L) -> L {
        m * self.b1 + g * self.keep1
    }

    /// `v <- b2 v + (1 - b2) sq`, with `sq = g^2` (or `||g||_F^2` per matrix).
    #[inline(always)]
    pub(crate) fn second<L: Linear<S>>(&self, v: L, sq: L) -> L {
        v * self.b2 + sq * self.keep2
    }

    /// `sqrt(v_hat) + eps`, `v_hat = v / (1 - b2^t)`.
    #[inline(always)]
    pub(crate) fn denominator<L: Lane<S>>(&self, v: L) -> L {
        (v * self.v_scale).sqrt_of() + self.eps
    }

    /// `u = lr m_hat / denominator`, `m_hat = m / (1 - b1^t)`.
    #[inline(always)]
    pub(crate) fn update<L: Lane<S>>(&self, m: L, denominator: L) -> L {
        m * self.m_scale * self.lr / denominator
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
    fn step_tensor<E: Real, D: Device<E>>(
        &self,
        lr: f64,
        state: &mut TensorRuleState<E, D>,
        g: Flat<E, D>,
    ) -> Result<Flat<E, D>, Error> {
        state.step = state.step.saturating_add(1);
        let c = AdamStep::<E>::new(&self.rule, lr, state.step);
        let m = c.first(OnDevice::stored(&state.first, &g), OnDevice::of(g.clone()));
        let m = state.first.insert(m.into_tensor()?).clone();
        let square = OnDevice::of(g.clone()) * OnDevice::of(g.clone());
        let denominator = match self.second_moment {
            SecondMoment::Elementwise => {
                let v = c
                    .second(OnDevice::stored(&state.second, &g), square)
                    .into_tensor()?;
                let v = state.second.insert(v).clone();
                self.used(&mut state.second_max, v, &c)?
            }
            SecondMoment::Matrix => {
                let norm2 = square.into_tensor()?.try_sum::<Rank0, _>();
                let norm2 = norm2.map_err(Error::device)?;
                let v = c.second(
                    OnDevice::stored(&state.second_scalar, &norm2),
                    OnDevice::of(norm2),
                );
                let v = state.second_scalar.insert(v.into_tensor()?).clone();
                let used = self.used(&mut state.second_scalar_max, v, &c)?;
                used.try_broadcast_like(g.shape()).map_err(Error::device)?
            }
        };
        c.update(OnDevice::of(m), OnDevice::of(denominator))
            .into_tensor()
    }
}

impl AdamUpdate {
    /// The device form's `sqrt(v_hat) + eps` from the new second moment `v`, or under
    /// AMSGrad from the running maximum `v_max <- max(v, v_max)`, kept in `v_max`.
    fn used<S: Shape, E: Real, D: Device<E>>(
        &self,
        v_max: &mut Option<Tensor<S, E, D>>,
        v: Tensor<S, E, D>,
        c: &AdamStep<E>,
    ) -> Result<Tensor<S, E, D>, Error> {
        let used = match (self.rule.amsgrad, v_max.clone()) {
            (false, _) => v,
            (true, None) => v_max.insert(v).clone(),
            (true, Some(old)) => {
                let vm = OnDevice::of(v).max_with(OnDevice::of(old));
                v_max.insert(vm.into_tensor()?).clone()
            }
        };
        c.denominator(OnDevice::of(used)).into_tensor()
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
                // One scalar for the matrix, in f64.
                let c = AdamStep::<f64>::new(&self.rule, 0.0, next.step);
                next.second_scalar = c.second(old.second_scalar, grad_norm2);
                next.second_scalar_max = next.second_scalar.max_with(old.second_scalar_max);
            }
        }
        next.keep_unused(old)
    }

    fn apply<E: Real>(&self, lr: f64, old: &RuleState<E>, next: StateRange<'_, E>, g: &mut [E]) {
        let c = AdamStep::<E>::new(&self.rule, lr, next.step);
        let range = next.offset..next.offset + g.len();
        let m_old = old_range(&old.first, range.clone());
        let first = next.first;
        // Each case is its own loop over zipped slices, with no branch inside, so that it
        // is vectorised (compiled for the widest vector unit: `dispatch`).
        match (self.second_moment, self.rule.amsgrad) {
            (SecondMoment::Elementwise, false) => {
                let v_old = old_range(&old.second, range.clone());
                let moments = first.iter_mut().zip(next.second.iter_mut());
                let old = m_old.iter().zip(v_old.iter());
                E::vectorised(|| {
                    for ((gi, (m, v)), (&m0, &v0)) in g.iter_mut().zip(moments).zip(old) {
                        *m = c.first(m0, *gi);
                        *v = c.second(v0, *gi * *gi);
                        *gi = c.update(*m, c.denominator(*v));
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
                        *m = c.first(m0, *gi);
                        *v = c.second(v0, *gi * *gi);
                        *vm = v.max_with(vm0);
                        *gi = c.update(*m, c.denominator(*vm));
                    }
                });
            }
            (SecondMoment::Matrix, amsgrad) => {
                let v = match amsgrad {
                    true => next.second_scalar_max,
                    false => next.second_scalar,
                };
                // In f64, as the scalar is kept.
                let step = AdamStep::<f64>::new(&self.rule, lr, next.step);
                let denominator = E::of_f64(step.denominator(v));
                E::vectorised(|| {
                    for ((gi, m), &m0) in g.iter_mut().zip(first.iter_mut()).zip(m_old.iter()) {
                        *m = c.first(m0, *gi);
                        *gi = c.update(*m, denominator);
                    }
                });
            }
        }
    }
}
