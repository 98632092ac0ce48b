//! GPU timings (feature `cuda`; built for a GPU machine by `scripts/cuda-build.sh`):
//!
//! 1. one optimizer step over a LLaMA-7B-like adapter set, 224 adapters of 4096 x 4096 at
//!    rank 16 (the tensors the optimizer touches: `basis_out`, `core`, `basis_in`), one
//!    optimizer for the whole set: SdsAdam with the basis-update step (the default) and
//!    with the per-tensor step under each retraction (on the composed path, the CUDA
//!    default: n x r work in dfdx ops, r x r work on the host) against dfdx's Adam on LoRA
//!    factors of the same shapes;
//! 2. forward, backward and step of a stack of four `SdsLinear<4096, 4096, 16>` at batch
//!    2048 (SdsAdam) against the same stack of `LoraLinear` (dfdx Adam).
//!
//! Prints JSON lines `{"bench","variant","median_ms"}` (the SdsAdam lines also give
//! `"to_host"` and `"to_device"`, the host transfers per step).
//! `gpu_step_bench [--steps 10]`

#[path = "common/basis.rs"]
mod basis;

use basis::AdapterFactors;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use sds_lora::nn::{builders, FullCore};
use sds_lora::optim::{AdapterStep, SdsAdam, SdsAdamConfig};
use sds_lora::stiefel::Retraction;
use std::time::Instant;

const LAYERS: usize = 224;
const N: usize = 4096;
const R: usize = 16;
const BATCH: usize = 2048;

/// The trainable tensors of one SDS adapter.
type SdsFactors<E, D> = AdapterFactors<N, R, FullCore, E, D>;

/// The trainable tensors of one LoRA adapter.
#[derive(Debug, Clone)]
struct LoraFactors<E: Dtype, D: Storage<E>> {
    lora_a: Tensor<Rank2<R, N>, E, D>,
    lora_b: Tensor<Rank2<N, R>, E, D>,
}

impl<E: Dtype, D: Device<E>> TensorCollection<E, D> for LoraFactors<E, D> {
    type To<E2: Dtype, D2: Device<E2>> = LoraFactors<E2, D2>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::tensor(
                    "lora_a",
                    |s| &s.lora_a,
                    |s| &mut s.lora_a,
                    TensorOptions::reset_to_zeros(),
                ),
                Self::tensor(
                    "lora_b",
                    |s| &s.lora_b,
                    |s| &mut s.lora_b,
                    TensorOptions::reset_to_zeros(),
                ),
            ),
            |(lora_a, lora_b)| LoraFactors { lora_a, lora_b },
        )
    }
}

fn median_ms(steps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..steps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let steps = flag("--steps", 10);
    let dev = match Cuda::try_build(0, 0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no CUDA device: {e:?}");
            return;
        }
    };
    let sync = |d: &Cuda| d.synchronize();

    // 1. One step over the adapter set, one optimizer for all of it.
    let mut sds = Repeated::<SdsFactors<f32, Cuda>, LAYERS> {
        modules: (0..LAYERS as u64)
            .map(|i| SdsFactors {
                basis_out: sds_lora::stiefel::random_point(&dev, (Const, Const), 2 * i).unwrap(),
                core: dev.sample_normal(),
                basis_in: sds_lora::stiefel::random_point(&dev, (Const, Const), 2 * i + 1).unwrap(),
            })
            .collect(),
    };
    let sds_grads = sds.alloc_grads();
    let variants = std::iter::once(None).chain(Retraction::all(5).map(Some));
    for variant in variants {
        let mut cfg = SdsAdamConfig::default();
        if let Some(retraction) = variant {
            cfg.stiefel.adapter_step = AdapterStep::PerTensor;
            cfg.stiefel.retraction = retraction;
        }
        let name = variant.map_or("basis_update", |r| r.name());
        let mut opt = SdsAdam::new(&sds, cfg).unwrap();
        let ops = opt
            .composed_ops()
            .expect("Cuda steps on the composed path")
            .clone();
        let before = ops.transfers();
        let sds_ms = median_ms(steps, || {
            opt.update(&mut sds, &sds_grads).unwrap();
            sync(&dev);
        });
        let after = ops.transfers();
        let per_step = |a: usize, b: usize| (a - b) / (steps + 1);
        println!(
            r#"{{"bench":"adapter_set_step","variant":"sds_adam_{name}_{LAYERS}x4096x4096_r16","median_ms":{sds_ms:.2},"to_host":{},"to_device":{}}}"#,
            per_step(after.to_host, before.to_host),
            per_step(after.to_device, before.to_device),
        );
    }
    let mut lora = Repeated::<LoraFactors<f32, Cuda>, LAYERS> {
        modules: (0..LAYERS)
            .map(|_| LoraFactors {
                lora_a: dev.sample_normal(),
                lora_b: dev.sample_normal(),
            })
            .collect(),
    };
    let lora_grads = lora.alloc_grads();
    let mut adam = Adam::new(&lora, AdamConfig::default());
    let lora_ms = median_ms(steps, || {
        adam.update(&mut lora, &lora_grads).unwrap();
        sync(&dev);
    });
    println!(
        r#"{{"bench":"adapter_set_step","variant":"dfdx_adam_lora_{LAYERS}x4096x4096_r16","median_ms":{lora_ms:.2}}}"#
    );

    // 2. A training step of a stack at batch 2048.
    type Sds4 = (
        builders::SdsLinear<N, N, R>,
        builders::SdsLinear<N, N, R>,
        builders::SdsLinear<N, N, R>,
        builders::SdsLinear<N, N, R>,
    );
    type Lora4 = (
        builders::LoraLinear<N, N, R>,
        builders::LoraLinear<N, N, R>,
        builders::LoraLinear<N, N, R>,
        builders::LoraLinear<N, N, R>,
    );
    let x: Tensor<Rank2<BATCH, N>, f32, Cuda> = dev.sample_normal();
    let y: Tensor<Rank2<BATCH, N>, f32, Cuda> = dev.sample_normal();
    let mut stack = dev.build_module::<Sds4, f32>();
    let mut opt = SdsAdam::new(&stack, SdsAdamConfig::default()).unwrap();
    let sds_ms = median_ms(steps, || {
        let g = mse_loss(stack.forward(x.trace(stack.alloc_grads())), y.clone()).backward();
        opt.update(&mut stack, &g).unwrap();
        sync(&dev);
    });
    let mut stack = dev.build_module::<Lora4, f32>();
    let mut adam = Adam::new(&stack, AdamConfig::default());
    let lora_ms = median_ms(steps, || {
        let g = mse_loss(stack.forward(x.trace(stack.alloc_grads())), y.clone()).backward();
        adam.update(&mut stack, &g).unwrap();
        sync(&dev);
    });
    println!(
        r#"{{"bench":"stack_train_step","variant":"sds_linear_4x4096_r16_batch2048","median_ms":{sds_ms:.2}}}"#
    );
    println!(
        r#"{{"bench":"stack_train_step","variant":"lora_linear_4x4096_r16_batch2048","median_ms":{lora_ms:.2}}}"#
    );
}
