//! Optimizers: the basis-update step for adapters ([`basis_update`](mod@basis_update)), Euclidean rules
//! ([`rules`]), parameter groups ([`groups`]), the per-tensor Riemannian composition
//! (`riemannian`) and the dfdx optimizers [`SdsAdam`] and [`SdsSgd`].
//!
//! Tensors are classified by dotted path: `*.basis_out` and `*.basis_in` (and any path a
//! user predicate accepts) are Stiefel points, `*.core` and `*.scales` adapter cores, every
//! other trainable tensor is Euclidean; frozen tensors are skipped. A `basis_out`, `core`,
//! `basis_in` triple under one path is an adapter and takes the basis-update step (unless
//! [`StiefelConfig::adapter_step`] says [`AdapterStep::PerTensor`]). Each group has its own
//! learning rate and weight decay; bases take no weight decay.

mod adapter_step;
pub mod basis_update;
mod config;
pub mod groups;
pub(crate) mod riemannian;
pub mod rules;
mod sds;
mod sds_adam;
mod sds_sgd;
mod state;
mod validate;
pub(crate) mod walk;

pub use adapter_step::AdapterStep;
pub use basis_update::{
    basis_update, AdapterGrad, AdapterMoments, AdapterPoint, AdapterRule, AdapterSecondMoment,
    AdapterStepSizes, SecondMomentPer,
};
pub use config::{SdsConfig, StiefelConfig};
pub use groups::{Group, GroupConfig, ParamGroups};
pub use rules::{AdamRule, Momentum, RuleState, SecondMoment, SgdRule, WeightDecay};
pub use sds::Sds;
pub use sds_adam::{SdsAdam, SdsAdamConfig};
pub use sds_sgd::{SdsSgd, SdsSgdConfig};
pub use state::OptimizerState;
