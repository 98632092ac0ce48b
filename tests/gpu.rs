//! The CUDA path against the CPU path (feature `cuda`; run on a GPU machine, see
//! `scripts/cuda-build.sh`): on Cuda the optimizer takes the composed path, on Cpu the host
//! path. Each test prints a message and passes when no GPU is present.
#![cfg(feature = "cuda")]

use dfdx::optim::Optimizer;
use dfdx::prelude::*;
use nalgebra::{DMatrix, DVector};
use sds_lora::nn::{builders, CoreKind, DiagonalCore, FullCore};
use sds_lora::optim::{AdapterStep, ParamGroups, SdsAdam, SdsAdamConfig};
use sds_lora::stiefel::{orthogonality_error, project_tangent, random_point, retract, Retraction};

fn gpu() -> Option<Cuda> {
    match Cuda::try_build(0, 0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            eprintln!("skipped: no CUDA GPU ({e:?})");
            None
        }
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn retractions_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = Cpu::default();
    let x: Tensor<(usize, usize), f32, Cpu> = random_point(&cpu, (512, 16), 1).unwrap();
    let g: Tensor<(usize, usize), f32, Cpu> = cpu.sample_normal_like(&(512, 16));
    let xi = project_tangent(&x, &g).unwrap() * 0.01;
    let (xg, xig) = (x.to_device(&gpu), xi.to_device(&gpu));
    for kind in Retraction::all(6) {
        let a = retract(&x, &xi, kind).unwrap().as_vec();
        let b = retract(&xg, &xig, kind).unwrap().as_vec();
        assert!(max_diff(&a, &b) <= 1e-5, "{kind:?}: {:e}", max_diff(&a, &b));
    }
}

#[test]
fn sds_linear_and_sds_adam_match_cpu() {
    let Some(gpu) = gpu() else { return };
    // The default: a full core and the basis-update step.
    layers_and_optimizer_match_cpu::<FullCore>(&gpu, None);
    // The per-tensor step with each retraction, on the diagonal-core ablation.
    for retraction in Retraction::all(5) {
        layers_and_optimizer_match_cpu::<DiagonalCore>(&gpu, Some(retraction));
    }
}

/// 20 steps of SdsAdam on a small SDS model, on the CPU (host path) and on the GPU
/// (composed path): the basis-update step for `None`, the per-tensor step with a
/// retraction otherwise.
fn layers_and_optimizer_match_cpu<K: CoreKind<4>>(gpu: &Cuda, per_tensor: Option<Retraction>) {
    type Model<K> = (
        builders::SdsLinear<32, 24, 4, K>,
        Tanh,
        builders::SdsLinear<24, 8, 4, K>,
    );
    let cpu = Cpu::seed_from_u64(3);
    let mut on_cpu = cpu.build_module::<Model<K>, f32>();
    let core = DMatrix::from_diagonal(&DVector::from_vec(vec![0.5, -0.2, 0.1, 0.3]));
    on_cpu.0.core.copy_from(&K::data_of::<f32>(&core).unwrap());
    let mut on_gpu = on_cpu.clone().to_device(gpu);
    let mut cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(1e-2),
        ..Default::default()
    };
    if let Some(retraction) = per_tensor {
        cfg.stiefel.adapter_step = AdapterStep::PerTensor;
        cfg.stiefel.retraction = retraction;
    }
    let (mut opt_cpu, mut opt_gpu) = (
        SdsAdam::new(&on_cpu, cfg).unwrap(),
        SdsAdam::new(&on_gpu, cfg).unwrap(),
    );
    assert!(opt_cpu.composed_ops().is_none() && opt_gpu.composed_ops().is_some());
    for step in 0..20 {
        let x: Tensor<Rank2<16, 32>, f32, Cpu> = cpu.sample_normal();
        let y: Tensor<Rank2<16, 8>, f32, Cpu> = cpu.sample_normal();
        let gc = mse_loss(on_cpu.forward(x.trace(on_cpu.alloc_grads())), y.clone()).backward();
        let gg = mse_loss(
            on_gpu.forward(x.to_device(gpu).trace(on_gpu.alloc_grads())),
            y.to_device(gpu),
        )
        .backward();
        if step == 0 {
            let (a, b) = (
                gc.get(&on_cpu.0.basis_out).as_vec(),
                gg.get(&on_gpu.0.basis_out).as_vec(),
            );
            assert!(
                max_diff(&a, &b) <= 1e-5,
                "layer gradient: {:e}",
                max_diff(&a, &b)
            );
        }
        opt_cpu.update(&mut on_cpu, &gc).unwrap();
        opt_gpu.update(&mut on_gpu, &gg).unwrap();
    }
    for (a, b) in [
        (on_cpu.0.basis_out.as_vec(), on_gpu.0.basis_out.as_vec()),
        (on_cpu.0.core.as_vec(), on_gpu.0.core.as_vec()),
        (on_cpu.2.basis_in.as_vec(), on_gpu.2.basis_in.as_vec()),
    ] {
        assert!(
            max_diff(&a, &b) <= 1e-5,
            "{per_tensor:?}, after 20 steps: {:e}",
            max_diff(&a, &b)
        );
    }
}

#[test]
fn orthogonality_over_1000_steps_on_gpu() {
    let Some(gpu) = gpu() else { return };
    let mut layer = gpu.build_module::<builders::SdsLinear<256, 128, 16>, f32>();
    let mut opt = SdsAdam::new(
        &layer,
        SdsAdamConfig {
            groups: ParamGroups::uniform(1e-2),
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..1000 {
        let x: Tensor<Rank2<32, 256>, f32, Cuda> = gpu.sample_normal();
        let g = layer
            .forward(x.trace(layer.alloc_grads()))
            .square()
            .mean()
            .backward();
        opt.update(&mut layer, &g).unwrap();
    }
    let (u, v) = (
        orthogonality_error(&layer.basis_out),
        orthogonality_error(&layer.basis_in),
    );
    println!("orthogonality after 1000 steps on the GPU: U {u:.2e}, V {v:.2e}");
    assert!(u <= 1e-5 && v <= 1e-5);
}
