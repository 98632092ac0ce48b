//! Layers: [`SdsLinear`] (the scale-decoupled adapter `c U S V^T`; [`SdsDiagLinear`] its
//! diagonal-core ablation), [`LoraLinear`] (the baseline) and
//! [`SdsDualBranch`] (the paper's own parameterisation),
//! with merging, conversion from dfdx's `Linear` and from a LoRA pair, and PEFT export
//! ([`peft`]).
//!
//! Adapting an existing dfdx model (the README's example):
//!
//! ```
//! use dfdx::prelude::*;
//! use sds_lora::nn::{peft, Adapter, SdsLinear};
//! use sds_lora::optim::{ParamGroups, SdsAdam, SdsAdamConfig};
//!
//! let dev = Cpu::default();
//! // A pretrained model (here: freshly built) and its adapted copy: each Linear becomes an
//! // SdsLinear around the same weight, starting exactly at it (S = 0).
//! let base = dev.build_module::<(Linear<16, 16>, ReLU, Linear<16, 4>), f32>();
//! let mut model = (
//!     SdsLinear::<16, 16, 4, f32, Cpu>::from_linear(&base.0).unwrap(),
//!     ReLU,
//!     SdsLinear::<16, 4, 2, f32, Cpu>::from_linear(&base.2).unwrap(),
//! );
//! let cfg = SdsAdamConfig { groups: ParamGroups::uniform(1e-2), ..Default::default() };
//! let mut opt = SdsAdam::new(&model, cfg).unwrap();
//! for _ in 0..10 {
//!     let x: Tensor<Rank2<8, 16>, f32, _> = dev.sample_normal();
//!     let y: Tensor<Rank2<8, 4>, f32, _> = dev.sample_normal();
//!     let grads = mse_loss(model.forward(x.trace(model.alloc_grads())), y).backward();
//!     opt.update(&mut model, &grads).unwrap();
//! }
//! assert!(model.0.core.as_vec().iter().any(|&s| s != 0.0)); // the adapter trained
//! // Export for Python's PEFT (B = U S, A = V^T), or fold the update into the weights.
//! let dir = std::env::temp_dir().join("sds_lora_readme_adapter");
//! peft::export_peft(&model, &dir).unwrap();
//! model.0.merge().unwrap();
//! model.2.merge().unwrap();
//! ```

#[macro_use]
mod fields;
mod adapter;
mod core;
mod dual_branch;
mod frozen_linear;
mod grad_add;
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
