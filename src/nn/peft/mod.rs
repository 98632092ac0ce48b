//! PEFT interchange: a model's adapters as the LoRA adapter directory that Python's `peft`
//! writes and reads (`adapter_model.safetensors` + `adapter_config.json`), both ways.
//!
//! - [`export_peft`] writes what `PeftModel.from_pretrained(base, dir)` loads onto a PyTorch
//!   model whose layers have the same paths (`nn.Sequential` numbering matches dfdx's
//!   tuples): `SdsLinear` exports `B = U S`, `A = V^T`; `LoraLinear` its own pair.
//! - [`read_peft`] reads what PEFT's `save_pretrained` writes (or [`export_peft`]), finds
//!   the layers from the file's keys and checks them against the config (`target_modules`
//!   as PEFT matches it: names, path suffixes, a regular expression; ranks and alphas with
//!   `rank_pattern`/`alpha_pattern`); [`import_peft`] writes the pairs into a model's
//!   `SdsLinear` or `LoraLinear` layers.
//!
//! Every value is checked finite and every shape checked before anything is written; on
//! error the model is unchanged and the message names the file, key or layer.
//!
//! ```
//! use dfdx::prelude::*;
//! use sds_lora::nn::builders;
//! use sds_lora::nn::peft::{export_peft, import_peft, read_peft, TargetModules};
//!
//! let dev = Cpu::default();
//! type Model = (builders::SdsLinear<8, 6, 2>, ReLU, builders::SdsLinear<6, 4, 2>);
//! let model = dev.build_module::<Model, f32>();
//! let dir = std::env::temp_dir().join("sds_lora_peft_doc");
//! let config = export_peft(&model, &dir).unwrap();
//! assert_eq!(config.target_modules, TargetModules::List(vec!["0".into(), "2".into()]));
//!
//! let adapter = read_peft(&dir).unwrap();
//! let mut lora = dev.build_module::<(builders::LoraLinear<8, 6, 2>, ReLU, builders::LoraLinear<6, 4, 2>), f32>();
//! import_peft(&mut lora, &adapter).unwrap();
//! ```

mod config;
mod file;
mod model;

use crate::nn::Scaling;
use nalgebra::DMatrix;
use std::collections::BTreeMap;

pub use config::{PeftConfig, TargetModules};
pub use file::{read_peft, CONFIG_FILE, KEY_PREFIX, WEIGHTS_FILE};
pub use model::{export_peft, import_peft, lora_pairs};

/// One layer's update `dW = scale B A`, in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// `B: [O, R]`.
    pub b: DMatrix<f64>,
    /// `A: [R, I]`.
    pub a: DMatrix<f64>,
    /// `alpha` of the layer.
    pub alpha: f64,
    /// How the scaling follows from `alpha`.
    pub scaling: Scaling,
}

impl LoraPair {
    /// `dW = c B A`.
    pub fn delta_weight(&self) -> DMatrix<f64> {
        &self.b * &self.a * self.scaling.factor(self.alpha, self.a.nrows())
    }
}

/// A PEFT adapter: its config and one pair per adapted layer, by dotted path.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    /// The config.
    pub config: PeftConfig,
    /// `(B, A)` per layer path.
    pub pairs: BTreeMap<String, LoraPair>,
}
