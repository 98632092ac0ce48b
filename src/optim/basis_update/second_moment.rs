//! How the basis-update Adam keeps its second moment: for the whole adapter or for each
//! singular direction of its core, and averaged over the steps.

use serde::{Deserialize, Serialize};

/// How the adapter's second moment `v` (the squared tangent-gradient norm per tangent
/// dimension, `x_t` at step `t`) averages over the steps.
///
/// Adam's moving average with `b2 = 0.999` remembers about a thousand steps: when the
/// gradient starts large and falls (a domain shift starts at a high loss), `v` keeps the
/// early norms and every later step shrinks with them. One scalar per adapter pools
/// `(o + i) r - r^2` squares a step, so it needs far less averaging over time than an
/// elementwise second moment; [`IncreasingDecay`](Self::IncreasingDecay) is Adafactor's
/// answer for its pooled (factored) second moments (Shazeer and Stern 2018, section 7.2),
/// whose memory grows with the step count. It is the default (exponent `0.8`):
/// `docs/experiments.md` measures both.
///
/// ```
/// use sds_lora::optim::{AdapterSecondMoment, SdsAdamConfig};
///
/// let default = AdapterSecondMoment::default();
/// assert_eq!(default, AdapterSecondMoment::IncreasingDecay { exponent: 0.8 });
/// // With a constant input both averages give that constant once corrected.
/// let v = (1..=3).fold(0.0, |v, t| default.average(0.999, v, 2.0, t));
/// assert!((v * default.correction(0.999, 3) - 2.0).abs() < 1e-12);
/// // Adam's own average, e.g. with AMSGrad:
/// let mut cfg = SdsAdamConfig::default();
/// cfg.rule.amsgrad = true;
/// cfg.adapter_second_moment = AdapterSecondMoment::MovingAverage;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum AdapterSecondMoment {
    /// Adam's: `v <- b2 v + (1 - b2) x_t` with the rule's `b2` (`betas[1]`), used as
    /// `v_hat = v / (1 - b2^t)`.
    MovingAverage,
    /// Adafactor's increasing decay: `v <- b2_t v + (1 - b2_t) x_t` with
    /// `b2_t = 1 - t^(-exponent)`, used as `v_hat = v` (`b2_1 = 0`: the weights sum to one
    /// at every step, no correction is due). The memory grows like `t^exponent` steps:
    /// `exponent = 1` is the plain mean of every step so far, Adafactor's default is `0.8`.
    /// The rule's `b2` is not used. With AMSGrad the running maximum keeps the first,
    /// fully weighted value: pair AMSGrad with the moving average.
    IncreasingDecay {
        /// In `(0, 1]`.
        exponent: f64,
    },
}

impl Default for AdapterSecondMoment {
    /// Adafactor's increasing decay with its exponent, `0.8`.
    fn default() -> Self {
        Self::IncreasingDecay { exponent: 0.8 }
    }
}

/// What one second moment of the basis-update Adam is kept for.
///
/// The tangent gradient's squared norm `||P||^2 + ||Q||^2 - ||M||^2` splits exactly among
/// the `r` singular directions of the core `S = A diag(sigma) B^T` (the adapter's own modes,
/// `U a_j`, `V b_j`): direction `j` holds `||(I - U U^T) P b_j||^2 + ||(I - V V^T) Q a_j||^2
/// + (||M~ e_j||^2 + ||M~^T e_j||^2) / 2` with `M~ = A^T M B`, over `o + i - r` of the
/// tangent's `(o + i) r - r^2` dimensions. One second moment per direction is Adam's
/// equalisation in the frame of the adapter's modes: each direction's step is normalised
/// by its own gradient scale, so a direction whose gradient is small (a mode the loss has
/// only begun to use) is not starved by a dominant one. The frame is the adapter's own, so
/// the step stays invariant to the factor split; where the frame turns between steps the
/// moments follow it (each new direction takes the old moments weighted by its squared
/// overlaps with the old directions). One second moment per adapter is the coarser choice,
/// a normalised gradient step with momentum. `docs/experiments.md` compares them.
///
/// With a constant learning rate on a deterministic (full-batch) problem, once the error
/// is far below the step size every second moment decays with the gradient, and the
/// normalised step of the weakest direction outgrows its stability limit: the error jumps
/// back to about the learning rate's scale and converges again (one moment per adapter
/// does the same later). There, pair it with [`AdapterSecondMoment::MovingAverage`], whose
/// longer memory holds the step down to rounding, or decay the learning rate.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::nn::builders::SdsLinear;
/// use sds_lora::optim::{SdsAdam, SdsAdamConfig, SecondMomentPer};
///
/// let dev = Cpu::default();
/// let mut model = dev.build_module::<SdsLinear<8, 6, 2>, f64>();
/// for per in [SecondMomentPer::SingularDirection, SecondMomentPer::Adapter] {
///     let cfg = SdsAdamConfig {
///         adapter_second_moment_per: per,
///         ..Default::default()
///     };
///     let mut opt = SdsAdam::new(&model, cfg).unwrap();
///     let x: Tensor<Rank2<3, 8>, f64, _> = dev.sample_normal();
///     let grads = model.forward(x.trace(model.alloc_grads())).square().mean().backward();
///     opt.update(&mut model, &grads).unwrap();
///     // The core's state holds the directions' second moments as two 2 x 2 matrices
///     // (rank 2), or nothing.
///     let held = opt.state().tensors["core"].second_directions.len();
///     assert_eq!(held, if per == SecondMomentPer::default() { 8 } else { 0 });
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecondMomentPer {
    /// One second moment for the adapter: `x_t` is the squared tangent-gradient norm per
    /// tangent dimension.
    Adapter,
    /// One second moment for each singular direction of the core (the default).
    #[default]
    SingularDirection,
}

impl AdapterSecondMoment {
    /// The new average after `old` at step `t` (from 1), `x` this step's value.
    pub fn average(self, b2: f64, old: f64, x: f64, t: u64) -> f64 {
        let decay = match self {
            Self::MovingAverage => b2,
            Self::IncreasingDecay { exponent } => 1.0 - (t as f64).powf(-exponent),
        };
        decay * old + (1.0 - decay) * x
    }

    /// `v_hat / v` at step `t`: `1 / (1 - b2^t)` for the moving average, `1` for the
    /// increasing decay.
    pub fn correction(self, b2: f64, t: u64) -> f64 {
        match self {
            Self::MovingAverage => 1.0 / (1.0 - b2.powi(i32::try_from(t).unwrap_or(i32::MAX))),
            Self::IncreasingDecay { .. } => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AdapterSecondMoment;

    /// Both averages of a constant are that constant at every step once corrected, and
    /// the increasing decay weighs step `k` of `t` by what its formula says.
    #[test]
    fn averages_are_unbiased_and_weigh_steps_as_documented() {
        let kinds = [
            AdapterSecondMoment::MovingAverage,
            AdapterSecondMoment::IncreasingDecay { exponent: 0.8 },
        ];
        for kind in kinds {
            let mut v = 0.0;
            for t in 1..=50 {
                v = kind.average(0.999, v, 2.5, t);
                assert!(
                    (v * kind.correction(0.999, t) - 2.5).abs() < 1e-12,
                    "{kind:?}"
                );
            }
        }
        // exponent 1: the running mean.
        let mean = AdapterSecondMoment::IncreasingDecay { exponent: 1.0 };
        let xs = [4.0, 1.0, 7.0, 0.5];
        let v = (1..=4).fold(0.0, |v, t| mean.average(0.0, v, xs[t as usize - 1], t));
        assert!((v - 12.5 / 4.0).abs() < 1e-15);
        // exponent 0.8, three steps: x3 weighs 3^-0.8, x2 (1 - 3^-0.8) 2^-0.8,
        // x1 (1 - 3^-0.8)(1 - 2^-0.8).
        let c = AdapterSecondMoment::IncreasingDecay { exponent: 0.8 };
        let v = (1..=3).fold(0.0, |v, t| {
            c.average(0.0, v, [1.0, 10.0, 100.0][t as usize - 1], t)
        });
        let (w3, w2) = (3f64.powf(-0.8), 2f64.powf(-0.8));
        let want = 100.0 * w3 + 10.0 * (1.0 - w3) * w2 + (1.0 - w3) * (1.0 - w2);
        assert!((v - want).abs() < 1e-12);
    }
}
