//! The `layers` bench's train step, timed with the two stacks alternated: three
//! `SdsLinear<1024, 1024, 16>` with SdsAdam against three `LoraLinear<1024, 1024, 16>`
//! with dfdx's Adam (`Cpu`, `f32`, batch 64), in alternating batches of about 2 ms
//! ([`timing::paired_median_ns`]), so that both sides see the same machine. Criterion's
//! `cargo bench --bench layers` times one stack after the other, which on a shared
//! machine moves their ratio by several percent from run to run.
//!
//! Prints, for each of `--runs` runs (default 3), JSON lines
//! `{"part","sds_us","lora_us","ratio"}` for the forward and backward pass
//! (`"fwd_bwd"`), the optimizer's update alone (`"update"`, the same gradients each time)
//! and the whole train step (`"train_step"`), medians over `--samples` batches (default 30).
//!
//! ```text
//! cargo run --release --example train_step_bench -- --runs 3
//! ```

#[path = "common/stacks.rs"]
mod stacks;
#[path = "common/timing.rs"]
mod timing;

use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use sds_lora::optim::{SdsAdam, SdsAdamConfig};
use stacks::{Lora, Sds, BATCH, WIDTH};
use std::hint::black_box;
use timing::paired_median_ns;

type Batch = Tensor<Rank2<BATCH, WIDTH>, f32, Cpu>;
type SdsModel = <Sds as BuildOnDevice<Cpu, f32>>::Built;
type LoraModel = <Lora as BuildOnDevice<Cpu, f32>>::Built;

/// The value of `flag` (a count), or `default`.
fn count(flag: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a count")),
        None => default,
    }
}

fn main() {
    let (runs, samples) = (count("--runs", 3), count("--samples", 30));
    let dev = Cpu::seed_from_u64(2);
    let (x, y): (Batch, Batch) = (dev.sample_normal(), dev.sample_normal());
    let mut sds = dev.build_module::<Sds, f32>();
    let mut sds_opt = SdsAdam::new(&sds, SdsAdamConfig::default()).unwrap();
    let mut lora = dev.build_module::<Lora, f32>();
    let mut lora_opt = Adam::new(&lora, AdamConfig::default());
    // The gradients of the mean squared error on (x, y).
    let sds_grads_of =
        |m: &SdsModel| mse_loss(m.forward(x.trace(m.alloc_grads())), y.clone()).backward();
    let lora_grads_of =
        |m: &LoraModel| mse_loss(m.forward(x.trace(m.alloc_grads())), y.clone()).backward();
    let (sds_grads, lora_grads) = (sds_grads_of(&sds), lora_grads_of(&lora));
    for _ in 0..runs {
        let parts = [
            (
                "fwd_bwd",
                paired_median_ns(
                    samples,
                    || drop(black_box(sds_grads_of(&sds))),
                    || drop(black_box(lora_grads_of(&lora))),
                ),
            ),
            (
                "update",
                paired_median_ns(
                    samples,
                    || sds_opt.update(&mut sds, &sds_grads).unwrap(),
                    || lora_opt.update(&mut lora, &lora_grads).unwrap(),
                ),
            ),
        ];
        // The whole step (needs the models mutably: after the two parts above).
        let step = paired_median_ns(
            samples,
            || {
                let g = sds_grads_of(&sds);
                sds_opt.update(&mut sds, &g).unwrap()
            },
            || {
                let g = lora_grads_of(&lora);
                lora_opt.update(&mut lora, &g).unwrap()
            },
        );
        for (part, (s, l)) in parts.into_iter().chain([("train_step", step)]) {
            println!(
                "{{\"part\":\"{part}\",\"sds_us\":{:.1},\"lora_us\":{:.1},\"ratio\":{:.3}}}",
                s / 1e3,
                l / 1e3,
                s / l
            );
        }
    }
}
