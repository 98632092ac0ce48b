//! `SdsAdam`: Adam on every group, Riemannian on the Stiefel tensors.

use super::basis_update::{AdapterRule, AdapterSecondMoment, SecondMomentPer};
use super::config::{SdsConfig, StiefelConfig};
use super::groups::ParamGroups;
use super::rules::{AdamRule, AdamUpdate, SecondMoment};
use super::sds::Sds;
use serde::{Deserialize, Serialize};

/// Hyperparameters of [`SdsAdam`]. The default: learning rate `1e-3` for every group, no
/// weight decay, betas `[0.9, 0.999]`, eps `1e-8` (dfdx's `AdamConfig` defaults); adapters
/// take the basis-update step with one second moment per singular direction of the core
/// ([`SecondMomentPer`]), averaged with Adafactor's increasing decay
/// ([`AdapterSecondMoment`]); other Stiefel tensors an elementwise second moment and the
/// `Qr` retraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SdsAdamConfig {
    /// Learning rates and weight decays of bases, scales and other tensors.
    pub groups: ParamGroups,
    /// Betas, eps, AMSGrad.
    pub rule: AdamRule,
    /// The second moment of Stiefel tensors under the per-tensor step: elementwise or one
    /// per matrix.
    pub second_moment: SecondMoment,
    /// How an adapter's second moments average over the steps (basis-update step).
    #[serde(default)]
    pub adapter_second_moment: AdapterSecondMoment,
    /// What an adapter's second moment is kept for: each singular direction of its core
    /// (the default) or the whole adapter (basis-update step).
    #[serde(default)]
    pub adapter_second_moment_per: SecondMomentPer,
    /// Retraction and re-orthonormalisation.
    pub stiefel: StiefelConfig,
}

impl SdsConfig for SdsAdamConfig {
    type Rule = AdamUpdate;

    fn settings(&self) -> (&ParamGroups, &StiefelConfig) {
        (&self.groups, &self.stiefel)
    }

    /// Adam with an elementwise second moment, as dfdx's.
    fn euclidean_rule(&self) -> AdamUpdate {
        AdamUpdate {
            rule: self.rule,
            second_moment: SecondMoment::Elementwise,
        }
    }

    fn stiefel_rule(&self) -> AdamUpdate {
        AdamUpdate {
            rule: self.rule,
            second_moment: self.second_moment,
        }
    }

    fn adapter_rule(&self) -> AdapterRule {
        AdapterRule::Adam(
            self.rule,
            self.adapter_second_moment,
            self.adapter_second_moment_per,
        )
    }
}

/// Riemannian Adam for SDS-LoRA: Adam (or AdamW, AMSGrad) on scales and other tensors,
/// and on Stiefel bases the composition project, Adam, project, retract, transport.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::optim::{SdsAdam, SdsAdamConfig};
///
/// let dev = Cpu::default();
/// let mut model = dev.build_module::<Linear<4, 2>, f32>();
/// let mut opt = SdsAdam::new(&model, SdsAdamConfig::default()).unwrap();
/// let x: Tensor<Rank2<3, 4>, f32, _> = dev.sample_normal();
/// let grads = model.forward(x.trace(model.alloc_grads())).square().mean().backward();
/// opt.update(&mut model, &grads).unwrap();
/// opt.cfg.groups.others.lr = 1e-4; // a schedule changes the public config
/// ```
pub type SdsAdam<M, E, D> = Sds<M, E, D, SdsAdamConfig>;
