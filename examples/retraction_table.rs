//! Times the six retractions on Cpu (f32) and prints a markdown table and JSON lines
//! `{"retraction","n","r","median_ns"}`; then, at n = 4096, r = 16, `project_tangent`
//! followed by `Qr` against one dfdx `Adam` update of a tensor of the same shape, measured
//! in the same run, in alternating batches (`{"baseline", ...}` lines and the ratio).
//!
//! ```text
//! cargo run --release --example retraction_table
//! cargo run --release --example retraction_table -- --rows 1024,4096 --ranks 4,16 --samples 31
//! cargo run --release --example retraction_table -- --device-cache
//! ```
//!
//! `--device-cache` turns on dfdx's allocation cache (`Cpu::enable_cache`): the returned
//! tensors' buffers are then reused from the cache instead of coming from the allocator,
//! which on some heap layouts page-faults each one in.

#[path = "common/timing.rs"]
mod timing;

use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use sds_lora::stiefel::{project_tangent, random_point, retract, Retraction};
use std::hint::black_box;
use timing::{median_ns, paired_median_ns};

type Mat = Tensor<(usize, usize), f32, Cpu>;

fn list(args: &[String], flag: &str, default: &[usize]) -> Vec<usize> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .unwrap_or_else(|| panic!("{flag} needs a value"))
            .split(',')
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{flag}: bad number {v}"))
            })
            .collect(),
        None => default.to_vec(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows = list(&args, "--rows", &[1024, 4096, 16384]);
    let ranks = list(&args, "--ranks", &[4, 16, 64]);
    let samples = list(&args, "--samples", &[21])[0];
    let dev = Cpu::default();
    let device_cache = args.iter().any(|a| a == "--device-cache");
    if device_cache {
        dev.enable_cache();
    }
    let kinds = Retraction::all(5);

    let mut table = Vec::new();
    let mut json = Vec::new();
    for &n in &rows {
        for &r in &ranks {
            let x: Mat = random_point(&dev, (n, r), 1).unwrap();
            let g: Mat = dev.sample_normal_like(&(n, r));
            let xi = project_tangent(&x, &g).unwrap() * (0.1 / (n * r) as f32).sqrt();
            let mut cells = Vec::new();
            for kind in kinds {
                let ns = median_ns(samples, || {
                    black_box(retract(&x, &xi, kind).unwrap());
                });
                cells.push(format!("{:.1}", ns / 1e3));
                json.push(format!(
                    r#"{{"retraction":"{}","n":{n},"r":{r},"median_ns":{ns:.0}}}"#,
                    kind.name()
                ));
            }
            table.push(format!("| {n} | {r} | {} |", cells.join(" | ")));
        }
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    println!("Median time per retraction, microseconds (Cpu, f32):\n");
    println!("| n | r | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for line in &table {
        println!("{line}");
    }
    println!();

    // project_tangent + Qr against one dfdx Adam update, same shape, same run.
    const N: usize = 4096;
    const R: usize = 16;
    let x: Mat = random_point(&dev, (N, R), 2).unwrap();
    let g: Mat = dev.sample_normal_like(&(N, R));
    let xi = project_tangent(&x, &g).unwrap() * 1e-3;
    let mut param: Tensor<Rank2<N, R>, f32, Cpu> = dev.sample_normal();
    let mut grads = param.alloc_grads();
    grads
        .get_or_alloc_mut(&param)
        .unwrap()
        .copy_from_slice(&g.as_vec());
    let mut adam = Adam::new(&param, AdamConfig::default());
    let (composite, adam_ns) = paired_median_ns(
        samples,
        || {
            let p = project_tangent(&x, &xi).unwrap();
            black_box(retract(&x, &p, Retraction::Qr).unwrap());
        },
        || adam.update(&mut param, &grads).unwrap(),
    );
    println!(
        "n = {N}, r = {R}: project_tangent + Qr {:.1} us, dfdx Adam update {:.1} us, ratio {:.2} (device cache {})\n",
        composite / 1e3,
        adam_ns / 1e3,
        composite / adam_ns,
        if device_cache { "on" } else { "off" }
    );
    for line in &json {
        println!("{line}");
    }
    println!(
        r#"{{"baseline":"project_tangent+qr","n":{N},"r":{R},"device_cache":{device_cache},"median_ns":{composite:.0}}}"#
    );
    println!(r#"{{"baseline":"dfdx_adam","n":{N},"r":{R},"median_ns":{adam_ns:.0}}}"#);
}
