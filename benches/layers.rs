//! Layer costs on Cpu, f32, batch 64:
//! - `frozen_base`: forward + backward of `frozen_linear` (no weight gradient) against
//!   dfdx's `Linear` of the same shape (which computes the `O x I` weight gradient);
//! - `train_step`: forward, backward and optimizer step of a stack of three
//!   `SdsLinear<1024, 1024, 16>` with SdsAdam against three `LoraLinear<1024, 1024, 16>`
//!   with dfdx's Adam.
//!
//! `cargo bench --bench layers`

#[path = "../examples/common/stacks.rs"]
mod stacks;

use criterion::{criterion_group, criterion_main, Criterion};
use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use sds_lora::nn::frozen_linear;
use sds_lora::optim::{SdsAdam, SdsAdamConfig};
use stacks::{Lora, Sds, BATCH, WIDTH};
use std::hint::black_box;
use std::time::Duration;

fn frozen_base(c: &mut Criterion) {
    let dev = Cpu::seed_from_u64(1);
    let mut group = c.benchmark_group("frozen_base");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    let linear = dev.build_module::<Linear<WIDTH, WIDTH>, f32>();
    let x: Tensor<Rank2<BATCH, WIDTH>, f32, Cpu> = dev.sample_normal();
    group.bench_function("frozen_linear_fwd_bwd", |b| {
        b.iter(|| {
            let y =
                frozen_linear(x.trace(Gradients::leaky()), &linear.weight, &linear.bias).unwrap();
            black_box(y.sum().backward())
        })
    });
    group.bench_function("dfdx_linear_fwd_bwd", |b| {
        b.iter(|| {
            let y = linear.forward(x.trace(linear.alloc_grads()));
            black_box(y.sum().backward())
        })
    });
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let dev = Cpu::seed_from_u64(2);
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let x: Tensor<Rank2<BATCH, WIDTH>, f32, Cpu> = dev.sample_normal();
    let y: Tensor<Rank2<BATCH, WIDTH>, f32, Cpu> = dev.sample_normal();

    let mut sds = dev.build_module::<Sds, f32>();
    let mut opt = SdsAdam::new(&sds, SdsAdamConfig::default()).unwrap();
    group.bench_function("sds_linear_x3_sds_adam", |b| {
        b.iter(|| {
            let grads = mse_loss(sds.forward(x.trace(sds.alloc_grads())), y.clone()).backward();
            opt.update(&mut sds, &grads).unwrap();
        })
    });

    let mut lora = dev.build_module::<Lora, f32>();
    let mut adam = Adam::new(&lora, AdamConfig::default());
    group.bench_function("lora_linear_x3_dfdx_adam", |b| {
        b.iter(|| {
            let grads = mse_loss(lora.forward(x.trace(lora.alloc_grads())), y.clone()).backward();
            adam.update(&mut lora, &grads).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, frozen_base, train_step);
criterion_main!(benches);
