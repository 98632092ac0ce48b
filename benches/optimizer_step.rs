//! One SdsAdam step (Qr) on a 4096 x 16 Stiefel tensor against one dfdx Adam step on the
//! same tensor, in the same run. `cargo bench --bench optimizer_step`.

#[path = "../examples/common/basis.rs"]
mod basis;

use basis::Basis;
use criterion::{criterion_group, criterion_main, Criterion};
use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use sds_lora::optim::{SdsAdam, SdsAdamConfig, SecondMoment};
use sds_lora::stiefel::random_point;
use std::time::Duration;

const N: usize = 4096;
const R: usize = 16;

fn model_and_grads() -> (Basis<N, R, f32, Cpu>, Gradients<f32, Cpu>) {
    let dev = Cpu::default();
    let model = Basis {
        basis_out: random_point(&dev, (Const::<N>, Const::<R>), 1).unwrap(),
    };
    let mut grads = model.alloc_grads();
    let g: Tensor<Rank2<N, R>, f32, Cpu> = dev.sample_normal();
    let g: Vec<f32> = g.as_vec().iter().map(|v| v / 256.0).collect();
    grads
        .get_or_alloc_mut(&model.basis_out)
        .unwrap()
        .copy_from_slice(&g);
    (model, grads)
}

fn optimizer_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("optimizer_step");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(4));
    for (name, second_moment) in [
        ("sds_adam_qr", SecondMoment::Elementwise),
        ("sds_adam_matrix_qr", SecondMoment::Matrix),
    ] {
        let (mut model, grads) = model_and_grads();
        let cfg = SdsAdamConfig {
            second_moment,
            ..Default::default()
        };
        let mut opt = SdsAdam::new(&model, cfg).unwrap();
        group.bench_function(format!("{name}/n{N}_r{R}"), |b| {
            b.iter(|| opt.update(&mut model, &grads).unwrap())
        });
    }
    let (mut model, grads) = model_and_grads();
    let mut adam = Adam::new(&model, AdamConfig::default());
    group.bench_function(format!("dfdx_adam/n{N}_r{R}"), |b| {
        b.iter(|| adam.update(&mut model, &grads).unwrap())
    });
    group.finish();
}

criterion_group!(benches, optimizer_step);
criterion_main!(benches);
