//! `SdsSgd`: SGD on every group, Riemannian on the Stiefel tensors.

use super::basis_update::AdapterRule;
use super::config::{SdsConfig, StiefelConfig};
use super::groups::ParamGroups;
use super::rules::SgdRule;
use super::sds::Sds;
use serde::{Deserialize, Serialize};

/// Hyperparameters of [`SdsSgd`]. The default: learning rate `1e-2` for every group (as
/// dfdx's `SgdConfig`), no momentum, no weight decay, the `Qr` retraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SdsSgdConfig {
    /// Learning rates and weight decays of bases, scales and other tensors.
    pub groups: ParamGroups,
    /// Momentum and dampening.
    pub rule: SgdRule,
    /// Retraction and re-orthonormalisation.
    pub stiefel: StiefelConfig,
}

impl Default for SdsSgdConfig {
    fn default() -> Self {
        Self {
            groups: ParamGroups::uniform(1e-2),
            rule: SgdRule::default(),
            stiefel: StiefelConfig::default(),
        }
    }
}

impl SdsConfig for SdsSgdConfig {
    type Rule = SgdRule;

    fn settings(&self) -> (&ParamGroups, &StiefelConfig) {
        (&self.groups, &self.stiefel)
    }

    fn euclidean_rule(&self) -> SgdRule {
        self.rule
    }

    fn stiefel_rule(&self) -> SgdRule {
        self.rule
    }

    fn adapter_rule(&self) -> AdapterRule {
        AdapterRule::Sgd(self.rule)
    }
}

/// Riemannian SGD for SDS-LoRA: SGD (momentum, Nesterov, dampening, weight decay) on
/// scales and other tensors, and on Stiefel bases the composition project, SGD, project,
/// retract, transport the velocity.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::optim::{Momentum, SdsSgd, SdsSgdConfig};
///
/// let dev = Cpu::default();
/// let mut model = dev.build_module::<Linear<4, 2>, f64>();
/// let mut cfg = SdsSgdConfig::default();
/// cfg.rule.momentum = Some(Momentum::Nesterov(0.9));
/// let mut opt = SdsSgd::new(&model, cfg).unwrap();
/// let x: Tensor<Rank2<3, 4>, f64, _> = dev.sample_normal();
/// let grads = model.forward(x.trace(model.alloc_grads())).square().mean().backward();
/// opt.update(&mut model, &grads).unwrap();
/// ```
pub type SdsSgd<M, E, D> = Sds<M, E, D, SdsSgdConfig>;
