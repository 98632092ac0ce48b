//! Layers: [`SdsLinear`] (the scale-decoupled adapter `c U S V^T`; [`SdsDiagLinear`] its
//! diagonal-core ablation), [`LoraLinear`] (the baseline) and
//! [`SdsDualBranch`] (the paper's own parameterisation),
//! with merging, conversion from dfdx's `Linear` and from a LoRA pair, and PEFT export
//! ([`peft`]).

mod adapter;
mod core;
mod dual_branch;
mod frozen_linear;
mod init;
mod lora_linear;
mod options;
pub mod peft;
mod scalar_enum;
mod sds_adapter_op;
mod sds_linear;

/// A batch of `N`-wide rows: `[B, N]` with `B` constant or runtime.
pub type Batch<B, const N: usize, E, D, T> =
    dfdx::tensor::Tensor<(B, dfdx::shapes::Const<N>), E, D, T>;

pub use self::core::{CoreKind, CoreRef, DiagonalCore, FullCore, CORE_NAME, SCALES_NAME};
pub use adapter::{Adapter, FrozenMut};
pub use dual_branch::SdsDualBranch;
pub use frozen_linear::frozen_linear;
pub use lora_linear::LoraLinear;
pub use options::{GradientMode, MergeState, Phase, Scaling};
pub use sds_adapter_op::{sds_adapter, SdsFactors};
pub use sds_linear::{SdsDiagLinear, SdsLinear};

/// Builders for [`build_module`](dfdx::nn::DeviceBuildExt::build_module).
pub mod builders {
    pub use super::dual_branch::builder::SdsDualBranch;
    pub use super::lora_linear::builder::LoraLinear;
    pub use super::sds_linear::builder::{SdsDiagLinear, SdsLinear};
}
