//! Adam, with AMSGrad, decoupled weight decay (AdamW), and a per-matrix second moment.

use super::{RuleState, WeightDecay};
use crate::kernels::Real;
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
    /// Overwrites `g` with the update `u` (`p <- p - u`).
    pub fn update<E: Real>(
        &self,
        lr: f64,
        weight_decay: Option<WeightDecay>,
        second_moment: SecondMoment,
        state: &mut RuleState<E>,
        p: &[E],
        g: &mut [E],
    ) {
        state.step += 1;
        let t = i32::try_from(state.step).unwrap_or(i32::MAX);
        let [b1, b2] = self.betas.map(E::of_f64);
        let (eps, lr_e) = (E::of_f64(self.eps), E::of_f64(lr));
        let m_scale = (E::one() - b1.powi(t)).recip();
        let v_scale = (E::one() - b2.powi(t)).recip();
        if let Some(WeightDecay::L2(wd)) = weight_decay {
            let wd = E::of_f64(wd);
            g.iter_mut().zip(p).for_each(|(gi, &pi)| *gi += wd * pi);
        }
        let n = g.len();
        RuleState::sized(&mut state.first, n);
        // The denominator sqrt(v_hat) + eps: per element, or one for the whole matrix.
        let shared_denominator = match second_moment {
            SecondMoment::Elementwise => None,
            SecondMoment::Matrix => {
                let sq: f64 = g.iter().map(|&x| x.to_f64() * x.to_f64()).sum();
                let (b2f, t) = (self.betas[1], state.step as i32);
                state.second_scalar = b2f * state.second_scalar + (1.0 - b2f) * sq;
                state.second_scalar_max = state.second_scalar_max.max(state.second_scalar);
                let v = if self.amsgrad {
                    state.second_scalar_max
                } else {
                    state.second_scalar
                };
                Some(E::of_f64((v / (1.0 - b2f.powi(t))).sqrt() + self.eps))
            }
        };
        if shared_denominator.is_none() {
            RuleState::sized(&mut state.second, n);
            if self.amsgrad {
                RuleState::sized(&mut state.second_max, n);
            }
        }
        for i in 0..n {
            let gi = g[i];
            let m = &mut state.first[i];
            *m = *m * b1 + gi * (E::one() - b1);
            let m_hat = *m * m_scale;
            let denominator = match shared_denominator {
                Some(d) => d,
                None => {
                    let v = &mut state.second[i];
                    *v = *v * b2 + gi.powi(2) * (E::one() - b2);
                    let v = if self.amsgrad {
                        let vm = &mut state.second_max[i];
                        if *v > *vm {
                            *vm = *v;
                        }
                        *vm
                    } else {
                        *v
                    };
                    (v * v_scale).sqrt() + eps
                }
            };
            let mut u = lr_e * m_hat / denominator;
            if let Some(WeightDecay::Decoupled(wd)) = weight_decay {
                u += E::of_f64(wd * lr) * p[i];
            }
            g[i] = u;
        }
    }
}
