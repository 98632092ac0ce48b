//! The train step's two stacks, shared by the `layers` bench and the `train_step_bench`
//! example so that both time the same models: three `SdsLinear<1024, 1024, 16>` and three
//! `LoraLinear<1024, 1024, 16>`, at batch 64.

#![allow(dead_code)] // shared by a bench and an example; each uses part of it

use sds_lora::nn::builders;

pub const BATCH: usize = 64;
pub const WIDTH: usize = 1024;
pub const RANK: usize = 16;

/// Three SDS-LoRA layers (the builder).
pub type Sds = (
    builders::SdsLinear<WIDTH, WIDTH, RANK>,
    builders::SdsLinear<WIDTH, WIDTH, RANK>,
    builders::SdsLinear<WIDTH, WIDTH, RANK>,
);

/// Three LoRA layers (the builder).
pub type Lora = (
    builders::LoraLinear<WIDTH, WIDTH, RANK>,
    builders::LoraLinear<WIDTH, WIDTH, RANK>,
    builders::LoraLinear<WIDTH, WIDTH, RANK>,
);
