//! Euclidean update rules: small per-tensor pieces with their own state, on plain slices.
//!
//! A rule turns a gradient `g` into the update `u` that is subtracted from the parameter
//! (`p <- p - u`), learning rate and weight decay included. On the host a rule reads the
//! old state and returns the new one in fresh buffers (state in, state out): the stored
//! state changes only when the caller keeps the result, so a step that fails later costs
//! no copy to undo. The Riemannian composition
//! (`super::riemannian`) calls the same rules on projected gradients. A [`Rule`] has two
//! forms of the same formulas: [`ElementwiseRule`] on host slices (the CPU path, applied
//! over pieces of a tensor) and [`TensorRule`] in dfdx ops on device tensors (the composed
//! path, used on CUDA); an optimizer's config names one rule type for both
//! ([`SdsConfig::Rule`](super::SdsConfig::Rule)).

mod adam;
mod lane;
mod sgd;
mod tensor_state;

pub use adam::{AdamRule, AdamUpdate, SecondMoment};
pub use sgd::{Momentum, SgdRule};
pub use tensor_state::TensorRuleState;

pub(crate) use adam::AdamStep;
pub(crate) use lane::Lane;
pub(crate) use sgd::SgdStep;

use crate::kernels::{Flat, Real};
use crate::Error;
use dfdx::tensor_ops::Device;
use lane::OnDevice;
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
    /// Second moments per singular direction of an adapter's core (basis-update Adam,
    /// [`SecondMomentPer::SingularDirection`](crate::optim::SecondMomentPer)), kept with
    /// the core as two symmetric `r x r` matrices free of its frame
    /// ([`AdapterMoments::v_directions`](crate::optim::AdapterMoments::v_directions)).
    #[serde(default)]
    pub second_directions: Vec<f64>,
    /// Running maxima of `second_directions` (AMSGrad).
    #[serde(default)]
    pub second_directions_max: Vec<f64>,
}

impl<E: Real> RuleState<E> {
    /// The state after this one, with no buffers yet and the step count advanced.
    pub(crate) fn successor(&self) -> Self {
        Self {
            step: self.step.saturating_add(1),
            first: Vec::new(),
            second: Vec::new(),
            second_max: Vec::new(),
            second_scalar: self.second_scalar,
            second_scalar_max: self.second_scalar_max,
            second_directions: self.second_directions.clone(),
            second_directions_max: self.second_directions_max.clone(),
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
                *new = E::pooled_copy(old);
            }
        }
        self
    }

    /// The state cut into consecutive ranges of `lens` elements (summing to the buffers'
    /// length), for [`ElementwiseRule::apply`].
    pub fn ranges(&mut self, lens: &[usize]) -> Vec<StateRange<'_, E>> {
        let (step, second_scalar, second_scalar_max) =
            (self.step, self.second_scalar, self.second_scalar_max);
        let firsts = cut_into(&mut self.first, lens);
        let seconds = cut_into(&mut self.second, lens);
        let maxima = cut_into(&mut self.second_max, lens);
        let offsets = lens.iter().scan(0, |at, &len| {
            let offset = *at;
            *at += len;
            Some(offset)
        });
        offsets
            .zip(firsts.into_iter().zip(seconds).zip(maxima))
            .map(|(offset, ((first, second), second_max))| StateRange {
                step,
                second_scalar,
                second_scalar_max,
                offset,
                first,
                second,
                second_max,
            })
            .collect()
    }

    /// Gives the buffers back to the pool (`scratch`) when the state is replaced.
    pub fn recycle(self) {
        E::recycle(self.first);
        E::recycle(self.second);
        E::recycle(self.second_max);
    }
}

/// A rule whose update of an element depends on that element's gradient and state alone
/// (and on constants of the step), so that it can be applied to a tensor range by range:
/// the host Stiefel step (`super::riemannian::stiefel_step`) runs it on each piece of
/// rows right after the product that forms the piece's gradient, while it is in cache.
///
/// A step is [`ElementwiseRule::next_state`] once, then [`ElementwiseRule::apply`] on
/// ranges that cover the tensor once each, in any order.
pub trait ElementwiseRule: Copy + Send + Sync {
    /// Whether [`ElementwiseRule::next_state`] needs `||g||_F^2` of the whole gradient
    /// (Adam's per-matrix second moment); otherwise it is passed `0`.
    fn needs_grad_norm(&self) -> bool {
        false
    }

    /// The state after `old` for a tensor of `len` elements: step count and scalars
    /// advanced (`grad_norm2 = ||g||_F^2` where [`ElementwiseRule::needs_grad_norm`]),
    /// the buffers this rule writes allocated with unspecified contents (every range's
    /// [`ElementwiseRule::apply`] overwrites its part), the others carried over from `old`.
    fn next_state<E: Real>(&self, old: &RuleState<E>, len: usize, grad_norm2: f64) -> RuleState<E>;

    /// Overwrites `g`, the gradient of the elements of `next`'s range, with the update `u`
    /// (`p <- p - u`, learning rate `lr` included), reading `old`'s buffers over that range
    /// and writing `next`'s. Ranges of one step can be applied on several threads at once.
    fn apply<E: Real>(&self, lr: f64, old: &RuleState<E>, next: StateRange<'_, E>, g: &mut [E]);

    /// The whole-tensor update with weight decay (`g <- g + wd p` before the rule for
    /// [`WeightDecay::L2`], `u <- u + lr wd p` after it for [`WeightDecay::Decoupled`]):
    /// overwrites `g` with `u` (`p <- p - u`; `p` is read only for weight decay and may be
    /// empty without it) and returns the new state; `state` is read only.
    fn update<E: Real>(
        &self,
        lr: f64,
        weight_decay: Option<WeightDecay>,
        state: &RuleState<E>,
        p: &[E],
        g: &mut [E],
    ) -> RuleState<E> {
        if let Some(WeightDecay::L2(wd)) = weight_decay {
            let wd = E::of_f64(wd);
            g.iter_mut()
                .zip(p)
                .for_each(|(gi, &pi)| *gi = decay(*gi, pi, wd));
        }
        let norm2 = if self.needs_grad_norm() {
            E::squared_norm(g)
        } else {
            0.0
        };
        let mut next = self.next_state(state, g.len(), norm2);
        let whole = next.ranges(&[g.len()]).remove(0);
        self.apply(lr, state, whole, g);
        if let Some(WeightDecay::Decoupled(wd)) = weight_decay {
            let wd_lr = E::of_f64(wd * lr);
            g.iter_mut()
                .zip(p)
                .for_each(|(u, &pi)| *u = decay(*u, pi, wd_lr));
        }
        next
    }
}

/// A rule's device form: the same formulas as [`ElementwiseRule::apply`] (written once,
/// over a `rules::lane::Lane`) in dfdx ops on whole tensors, for the composed path.
pub trait TensorRule: Copy {
    /// Returns the update `u` for the gradient `g` (`p <- p - u`, learning rate `lr`
    /// included, no weight decay) and advances `state`.
    fn step_tensor<E: Real, D: Device<E>>(
        &self,
        lr: f64,
        state: &mut TensorRuleState<E, D>,
        g: Flat<E, D>,
    ) -> Result<Flat<E, D>, Error>;

    /// [`TensorRule::step_tensor`] with weight decay, as [`ElementwiseRule::update`] has
    /// it; `p` is needed only with weight decay.
    fn update_tensor<E: Real, D: Device<E>>(
        &self,
        lr: f64,
        weight_decay: Option<WeightDecay>,
        state: &mut TensorRuleState<E, D>,
        p: Option<&Flat<E, D>>,
        g: Flat<E, D>,
    ) -> Result<Flat<E, D>, Error> {
        let decayed = |x: Flat<E, D>, c: f64| {
            let p = p.expect("TensorRule::update_tensor: weight decay needs the parameter");
            decay(OnDevice::of(x), OnDevice::of(p.clone()), E::of_f64(c)).into_tensor()
        };
        let g = match weight_decay {
            Some(WeightDecay::L2(wd)) => decayed(g, wd)?,
            _ => g,
        };
        let u = self.step_tensor(lr, state, g)?;
        match weight_decay {
            Some(WeightDecay::Decoupled(wd)) => decayed(u, wd * lr),
            _ => Ok(u),
        }
    }
}

/// Weight decay's one formula, `x + c p`: `g <- g + wd p` before the rule
/// ([`WeightDecay::L2`]), `u <- u + lr wd p` after it ([`WeightDecay::Decoupled`]).
#[inline(always)]
fn decay<E: Real, L: Lane<E>>(x: L, p: L, c: E) -> L {
    x + p * c
}

/// A rule in both forms: host slices ([`ElementwiseRule`]) and device tensors
/// ([`TensorRule`]).
pub trait Rule: ElementwiseRule + TensorRule {}

impl<R: ElementwiseRule + TensorRule> Rule for R {}

/// A range of elements of a new state ([`RuleState::ranges`]): its buffers' parts (empty
/// for a buffer the state does not have) and the state's scalars.
#[derive(Debug)]
pub struct StateRange<'a, E> {
    /// The state's step count.
    pub step: u64,
    /// [`RuleState::second_scalar`].
    pub second_scalar: f64,
    /// [`RuleState::second_scalar_max`].
    pub second_scalar_max: f64,
    /// The first element of the range.
    pub offset: usize,
    /// [`RuleState::first`] over the range.
    pub first: &'a mut [E],
    /// [`RuleState::second`] over the range.
    pub second: &'a mut [E],
    /// [`RuleState::second_max`] over the range.
    pub second_max: &'a mut [E],
}

/// `buf` cut into consecutive parts of `lens` elements; an empty `buf` into empty parts.
fn cut_into<'a, E>(buf: &'a mut [E], lens: &[usize]) -> Vec<&'a mut [E]> {
    let mut rest = buf;
    lens.iter()
        .map(|&len| {
            let at = if rest.is_empty() { 0 } else { len };
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(at);
            rest = tail;
            part
        })
        .collect()
}

/// Elements `range` of an old buffer: `buf[range]`, or zeros for a buffer not used yet
/// (empty).
pub(crate) fn old_range<E: Real>(
    buf: &[E],
    range: std::ops::Range<usize>,
) -> std::borrow::Cow<'_, [E]> {
    if buf.is_empty() {
        std::borrow::Cow::Owned(vec![E::zero(); range.len()])
    } else {
        assert!(buf.len() >= range.end, "rule state: buffer length");
        std::borrow::Cow::Borrowed(&buf[range])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::HostElement;

    /// Applied over uneven ranges (in reverse order), a rule gives the whole-tensor
    /// update's bits, and so does the following step.
    #[test]
    fn ranges_give_the_whole_update() {
        fn check<R: ElementwiseRule>(rule: R) {
            let g0: Vec<f64> = (0..103)
                .map(|i| ((i * 37) % 19) as f64 / 7.0 - 1.2)
                .collect();
            let (mut whole, mut split) = (RuleState::default(), RuleState::default());
            for step in 0..2 {
                let mut gw = g0
                    .iter()
                    .map(|g| g * (1.0 + step as f64))
                    .collect::<Vec<_>>();
                let mut gs = gw.clone();
                let norm2 = f64::squared_norm(&gw);
                let mut next = rule.next_state(&whole, gw.len(), norm2);
                let part = next.ranges(&[gw.len()]).remove(0);
                rule.apply(0.1, &whole, part, &mut gw);
                whole = next;

                let lens = [40, 1, 0, 62];
                let mut next = rule.next_state(&split, gs.len(), norm2);
                let mut gs_parts: Vec<&mut [f64]> = Vec::new();
                let mut rest = &mut gs[..];
                for len in lens {
                    let (part, tail) = rest.split_at_mut(len);
                    gs_parts.push(part);
                    rest = tail;
                }
                for (range, g) in next.ranges(&lens).into_iter().zip(gs_parts).rev() {
                    rule.apply(0.1, &split, range, g);
                }
                split = next;
                assert_eq!(gw, gs, "update, step {step}");
                assert_eq!(whole, split, "state, step {step}");
            }
        }
        for second_moment in [SecondMoment::Elementwise, SecondMoment::Matrix] {
            for amsgrad in [false, true] {
                let rule = AdamRule {
                    amsgrad,
                    ..AdamRule::default()
                };
                check(AdamUpdate {
                    rule,
                    second_moment,
                });
            }
        }
        for momentum in [None, Some(Momentum::Nesterov(0.9))] {
            check(SgdRule {
                momentum,
                dampening: 0.2,
            });
        }
    }

    /// A buffer the step does not use (AMSGrad switched off between steps) is carried
    /// over unchanged; the used ones are new.
    #[test]
    fn unused_buffers_survive_a_step() {
        let g0 = [0.5f64, -1.0, 2.0];
        let elementwise = |rule| AdamUpdate {
            rule,
            second_moment: SecondMoment::Elementwise,
        };
        let on = elementwise(AdamRule {
            amsgrad: true,
            ..AdamRule::default()
        });
        let s1 = on.update(0.1, None, &RuleState::default(), &[], &mut g0.clone());
        assert_eq!(s1.second_max.len(), 3);
        let off = elementwise(AdamRule::default());
        let s2 = off.update(0.1, None, &s1, &[], &mut g0.clone());
        assert_eq!(s2.second_max, s1.second_max, "AMSGrad maximum kept");
        assert_ne!(s2.second, s1.second, "second moment advanced");
        assert_eq!(s2.step, 2);
    }
}
