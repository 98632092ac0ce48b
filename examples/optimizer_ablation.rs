//! SDS-Stiefel under different update rules and retractions, on two tasks:
//!
//! - the quickstart's digits domain shift (three `SdsLinear` layers of rank 4, 300 steps):
//!   held-out accuracy on the rotated digits;
//! - the `condition_number` problem at kappa_f = 100 (one `SdsLinear<256, 256, 8>`, f64,
//!   full batch, 1000 steps): relative error `||dW - T|| / ||T||`.
//!
//! Rules: SGD, SGD with momentum 0.9, Nesterov 0.9, Adam, AdamW (decoupled weight decay
//! 0.01 on the scales), AMSGrad, Adam with a per-matrix second moment; retractions: Qr,
//! Polar, Cayley, NewtonSchulz (5 iterations). Prints the final metric, the steps taken
//! (a refused step ends a run) and the time per step.
//!
//! `cargo run --release --example optimizer_ablation`

#[path = "common/digits.rs"]
mod digits;
#[path = "common/lowrank.rs"]
mod lowrank;

use dfdx::optim::Optimizer;
use dfdx::prelude::*;
use sds_lora::nn::{Adapter, SdsLinear};
use sds_lora::optim::{
    GroupConfig, Momentum, ParamGroups, SdsAdamConfig, SdsConfig, SdsSgdConfig, SecondMoment,
    StiefelConfig, WeightDecay,
};
use sds_lora::stiefel::Retraction;
use std::time::Instant;

const DIGIT_STEPS: usize = 300;
const LOWRANK_STEPS: usize = 1000;

/// One optimizer variant of the ablation.
#[derive(Clone, Copy)]
enum Variant {
    Sgd,
    Momentum,
    Nesterov,
    Adam,
    AdamW,
    AmsGrad,
    AdamMatrix,
}

impl Variant {
    const ALL: [Variant; 7] = [
        Variant::Sgd,
        Variant::Momentum,
        Variant::Nesterov,
        Variant::Adam,
        Variant::AdamW,
        Variant::AmsGrad,
        Variant::AdamMatrix,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Sgd => "SGD",
            Variant::Momentum => "SGD + momentum",
            Variant::Nesterov => "Nesterov",
            Variant::Adam => "Adam",
            Variant::AdamW => "AdamW",
            Variant::AmsGrad => "AMSGrad",
            Variant::AdamMatrix => "Adam (per-matrix v)",
        }
    }

    fn is_sgd(self) -> bool {
        matches!(self, Variant::Sgd | Variant::Momentum | Variant::Nesterov)
    }

    fn sgd(self, groups: ParamGroups, stiefel: StiefelConfig) -> SdsSgdConfig {
        let mut cfg = SdsSgdConfig {
            groups,
            stiefel,
            ..Default::default()
        };
        cfg.rule.momentum = match self {
            Variant::Momentum => Some(Momentum::Classic(0.9)),
            Variant::Nesterov => Some(Momentum::Nesterov(0.9)),
            _ => None,
        };
        cfg
    }

    fn adam(self, mut groups: ParamGroups, stiefel: StiefelConfig) -> SdsAdamConfig {
        if let Variant::AdamW = self {
            groups.scales.weight_decay = Some(WeightDecay::Decoupled(0.01));
        }
        let mut cfg = SdsAdamConfig {
            groups,
            stiefel,
            ..Default::default()
        };
        cfg.rule.amsgrad = matches!(self, Variant::AmsGrad);
        if let Variant::AdamMatrix = self {
            cfg.second_moment = SecondMoment::Matrix;
        }
        cfg
    }
}

/// Learning rates: scales at 10x the bases' rate (as in the quickstart).
fn groups(bases_lr: f64) -> ParamGroups {
    ParamGroups {
        bases_lr,
        scales: GroupConfig {
            lr: 10.0 * bases_lr,
            weight_decay: None,
        },
        others: GroupConfig {
            lr: bases_lr,
            weight_decay: None,
        },
    }
}

type SdsMlp = (
    SdsLinear<{ digits::FEATURES }, { digits::HIDDEN }, 4, f32, Cpu>,
    ReLU,
    SdsLinear<{ digits::HIDDEN }, { digits::HIDDEN }, 4, f32, Cpu>,
    ReLU,
    SdsLinear<{ digits::HIDDEN }, { digits::CLASSES }, 4, f32, Cpu>,
);

/// The digits task: returns (accuracy, steps, microseconds per step).
fn digits_run<C: SdsConfig>(
    base: &digits::Pretrained,
    data: &(digits::Split, digits::Split),
    cfg: C,
) -> (f64, usize, f64)
where
    sds_lora::optim::Sds<SdsMlp, f32, Cpu, C>: Optimizer<SdsMlp, Cpu, f32>,
{
    let dev = Cpu::seed_from_u64(7);
    let mut model: SdsMlp = digits::adapted(base, 7);
    let mut opt = sds_lora::optim::Sds::new(&model, cfg).unwrap();
    let start = Instant::now();
    let curve = digits::train(&mut model, &mut opt, &dev, &data.0, DIGIT_STEPS, 11, "");
    let us = start.elapsed().as_secs_f64() * 1e6 / curve.len().max(1) as f64;
    (digits::accuracy(&model, &dev, &data.1), curve.len(), us)
}

/// The low-rank problem at kappa_f = 100: (relative error, steps, microseconds per step).
fn lowrank_run<C: SdsConfig>(problem: &lowrank::Problem, cfg: C) -> (f64, usize, f64)
where
    sds_lora::optim::Sds<SdsLinear<256, 256, 8, f64, Cpu>, f64, Cpu, C>:
        Optimizer<SdsLinear<256, 256, 8, f64, Cpu>, Cpu, f64>,
{
    let dev = Cpu::seed_from_u64(5);
    let (b0, a0) = problem.factors(100.0);
    let mut l = lowrank::sds_from(&dev, (&b0, &a0));
    let mut opt = sds_lora::optim::Sds::new(&l, cfg).unwrap();
    let start = Instant::now();
    let mut steps = 0;
    for _ in 0..LOWRANK_STEPS {
        let g = lowrank::sds_gradients(problem, &l);
        let grads = lowrank::sds_grads(&l, &g);
        if opt.update(&mut l, &grads).is_err() {
            break;
        }
        steps += 1;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / steps.max(1) as f64;
    let dw = lowrank::host(&l.delta_weight().unwrap());
    (problem.rel_error(&dw), steps, us)
}

fn main() {
    let retractions = [
        Retraction::Qr,
        Retraction::Polar,
        Retraction::Cayley,
        Retraction::NewtonSchulz { iters: 5 },
    ];
    // Digits: pretrain once (dfdx Adam), then adapt to the rotated digits.
    let dev = Cpu::seed_from_u64(2026);
    let (train_up, test_up) = digits::load(2026);
    let data = (train_up.rotated(), test_up.rotated());
    let mut base = dev.build_module::<digits::Mlp, f32>();
    let mut adam = dfdx::optim::Adam::new(
        &base,
        dfdx::optim::AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    digits::train(&mut base, &mut adam, &dev, &train_up, 600, 2026, "pretrain");
    let problem = lowrank::Problem::new(10.0);

    println!("SDS-Stiefel, rules x retractions. Digits: {DIGIT_STEPS} steps, rank 4, held-out accuracy on rotated digits (bases lr 0.03 Adam-family / 0.1 SGD-family, scales 10x). Low-rank (kappa_f = 100): {LOWRANK_STEPS} steps, relative error (bases lr 0.01 Adam-family / 0.03 SGD-family, scales 10x).\n");
    println!("| rule | retraction | digits acc. | digits steps | digits us/step | low-rank rel. error | low-rank steps | low-rank us/step |");
    println!("|---|---|---|---|---|---|---|---|");
    for variant in Variant::ALL {
        for retraction in retractions {
            let stiefel = StiefelConfig {
                retraction,
                reorthonormalize_every: None,
            };
            let (d, l) = if variant.is_sgd() {
                (
                    digits_run(&base, &data, variant.sgd(groups(0.1), stiefel)),
                    lowrank_run(&problem, variant.sgd(groups(0.03), stiefel)),
                )
            } else {
                (
                    digits_run(&base, &data, variant.adam(groups(0.03), stiefel)),
                    lowrank_run(&problem, variant.adam(groups(0.01), stiefel)),
                )
            };
            println!(
                "| {} | {} | {:.1}% | {} | {:.0} | {:.2e} | {} | {:.0} |",
                variant.name(),
                retraction.name(),
                100.0 * d.0,
                d.1,
                d.2,
                l.0,
                l.1,
                l.2
            );
        }
    }
}
