//! What differs between [`SdsAdam`](super::SdsAdam) and [`SdsSgd`](super::SdsSgd) (their
//! rule and its settings, [`SdsConfig`]) and the settings they share for Stiefel tensors
//! ([`StiefelConfig`]).

use super::adapter_step::AdapterStep;
use super::basis_update::AdapterRule;
use super::groups::ParamGroups;
use super::rules::Rule;
use crate::stiefel::Retraction;
use crate::Error;

/// What differs between the optimizers: their rule and its settings.
pub trait SdsConfig: Clone + std::fmt::Debug {
    /// The rule, in its host and device forms.
    type Rule: Rule;
    /// The settings both optimizers have: the groups' learning rates and weight decays,
    /// and how Stiefel tensors are stepped.
    fn settings(&self) -> (&ParamGroups, &StiefelConfig);
    /// Learning rates and weight decays of the groups.
    fn groups(&self) -> &ParamGroups {
        self.settings().0
    }
    /// Retraction and re-orthonormalisation period of the Stiefel tensors.
    fn stiefel(&self) -> &StiefelConfig {
        self.settings().1
    }
    /// The rule of Euclidean tensors (and of cores outside the basis-update step), with
    /// its group's weight decay.
    fn euclidean_rule(&self) -> Self::Rule;
    /// The rule on the Riemannian gradient of a Stiefel tensor (no weight decay).
    fn stiefel_rule(&self) -> Self::Rule;
    /// The rule of the basis-update step on adapters ([`super::basis_update`](mod@super::basis_update)).
    fn adapter_rule(&self) -> AdapterRule;

    /// Fails with [`Error::Invalid`] naming the first setting out of range: learning rates
    /// and weight decays finite and `>= 0`, betas and momentum in `[0, 1)`, dampening in
    /// `[0, 1]`, `eps` finite and `> 0`, a re-orthonormalisation period of at least 1.
    /// Checked when the optimizer is built and before every step.
    fn validate(&self) -> Result<(), Error> {
        self.groups().validate()?;
        self.stiefel().validate()?;
        self.adapter_rule().validate()
    }
}

/// Settings of the Stiefel tensors' updates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StiefelConfig {
    /// How adapters (`basis_out`, `core`, `basis_in` under one path) are stepped: the
    /// basis-update step by default.
    #[serde(default)]
    pub adapter_step: AdapterStep,
    /// How per-tensor steps return to the manifold (Stiefel tensors outside adapters, and
    /// adapters under [`AdapterStep::PerTensor`]; the basis-update step always takes the
    /// Q factor of its QR).
    pub retraction: Retraction,
    /// Re-orthonormalise by Householder QR every this many steps (off by default;
    /// per-tensor steps only).
    pub reorthonormalize_every: Option<u64>,
}

impl Default for StiefelConfig {
    fn default() -> Self {
        Self {
            adapter_step: AdapterStep::BasisUpdate,
            retraction: Retraction::Qr,
            reorthonormalize_every: None,
        }
    }
}
