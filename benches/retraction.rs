//! Retraction costs on Cpu, f32, and `project_tangent` + `Qr` against one dfdx `Adam`
//! update of a tensor of the same shape, in the same run (also with dfdx's allocation
//! cache on, where the returned tensors' buffers come from the cache, not the allocator).
//!
//! `cargo bench --bench retraction` (all), `cargo bench --bench retraction -- vs_adam`
//! (the comparison only).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use sds_lora::stiefel::{project_tangent, random_point, retract, Retraction};
use std::hint::black_box;
use std::time::Duration;

type Mat = Tensor<(usize, usize), f32, Cpu>;

/// A point and a moderate tangent step at it.
fn point_and_step(dev: &Cpu, n: usize, r: usize) -> (Mat, Mat) {
    let x: Mat = random_point(dev, (n, r), 1).unwrap();
    let g: Mat = dev.sample_normal_like(&(n, r));
    let xi = project_tangent(&x, &g).unwrap() * (0.1 / (n * r) as f32).sqrt();
    (x, xi)
}

fn retractions(c: &mut Criterion) {
    let dev = Cpu::default();
    let mut group = c.benchmark_group("retraction");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for n in [1024usize, 4096, 16384] {
        for r in [4usize, 16, 64] {
            let (x, xi) = point_and_step(&dev, n, r);
            for kind in Retraction::all(5) {
                let id = BenchmarkId::new(kind.name(), format!("n{n}_r{r}"));
                group.bench_with_input(id, &kind, |b, &kind| {
                    b.iter(|| black_box(retract(&x, &xi, kind).unwrap()))
                });
            }
        }
    }
    group.finish();
}

const N: usize = 4096;
const R: usize = 16;

fn vs_adam(c: &mut Criterion) {
    let dev = Cpu::default();
    let mut group = c.benchmark_group("vs_adam");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(3));

    let (x, xi) = point_and_step(&dev, N, R);
    group.bench_function("project_tangent+qr/n4096_r16", |b| {
        b.iter(|| {
            let p = project_tangent(&x, &xi).unwrap();
            black_box(retract(&x, &p, Retraction::Qr).unwrap())
        })
    });
    let cached = Cpu::default();
    cached.enable_cache();
    let (xc, xic) = (x.to_device(&cached), xi.to_device(&cached));
    group.bench_function("project_tangent+qr_device_cache/n4096_r16", |b| {
        b.iter(|| {
            let p = project_tangent(&xc, &xic).unwrap();
            black_box(retract(&xc, &p, Retraction::Qr).unwrap())
        })
    });

    let mut param: Tensor<Rank2<N, R>, f32, Cpu> = dev.sample_normal();
    let mut grads = param.alloc_grads();
    let g: Tensor<Rank2<N, R>, f32, Cpu> = dev.sample_normal();
    grads
        .get_or_alloc_mut(&param)
        .unwrap()
        .copy_from_slice(&g.as_vec());
    let mut adam = Adam::new(&param, AdamConfig::default());
    group.bench_function("dfdx_adam/n4096_r16", |b| {
        b.iter(|| adam.update(&mut param, &grads).unwrap())
    });
    group.finish();
}

criterion_group!(benches, vs_adam, retractions);
criterion_main!(benches);
