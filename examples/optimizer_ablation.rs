//! SDS-LoRA (full core) under different update rules, steps and retractions, on two tasks:
//!
//! - the quickstart's digits domain shift (three `SdsLinear` layers of rank 4, 300 steps):
//!   held-out accuracy on the rotated digits;
//! - the `condition_number` problem at kappa_f = 100, warm start (one
//!   `SdsLinear<256, 256, 8>`, f64, full batch, 1000 steps): relative error
//!   `||dW - T|| / ||T||`.
//!
//! Rules: SGD, SGD with momentum 0.9, Nesterov 0.9, Adam, AdamW (decoupled weight decay
//! 0.01 on the core), AMSGrad, for the per-tensor step Adam with a per-matrix second
//! moment, and for the basis-update step Adam with one second moment per adapter in place
//! of one per singular direction of the core, and with Adam's moving average of the second
//! moments in place of Adafactor's increasing decay. Steps: the basis-update step
//! (the default; it takes no retraction) and the per-tensor step with the retractions Qr,
//! Polar, Cayley, NewtonSchulz (5 iterations).
//! Every row picks its learning rate, one for all groups, from its family's grid on each
//! task (by the final training loss on digits, the final error on the low-rank problem),
//! so that momentum rules are not judged at plain SGD's rate. Prints the metric, the
//! learning rate, the steps taken (a refused step ends a run) and the time per step.
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
    AdapterSecondMoment, AdapterStep, Momentum, ParamGroups, SdsAdamConfig, SdsConfig,
    SdsSgdConfig, SecondMoment, SecondMomentPer, StiefelConfig, WeightDecay,
};
use sds_lora::stiefel::Retraction;
use std::time::Instant;

const DIGIT_STEPS: usize = 300;
const LOWRANK_STEPS: usize = 1000;
const SGD_GRID: [f64; 5] = [0.01, 0.03, 0.1, 0.3, 1.0];
const ADAM_GRID: [f64; 5] = [1e-3, 3e-3, 1e-2, 3e-2, 0.1];

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
    AdamPerAdapter,
    AdamMovingAverage,
}

impl Variant {
    const ALL: [Variant; 9] = [
        Variant::Sgd,
        Variant::Momentum,
        Variant::Nesterov,
        Variant::Adam,
        Variant::AdamW,
        Variant::AmsGrad,
        Variant::AdamMatrix,
        Variant::AdamPerAdapter,
        Variant::AdamMovingAverage,
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
            Variant::AdamPerAdapter => "Adam (one v per adapter)",
            Variant::AdamMovingAverage => "Adam (moving-average v)",
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
            groups.core.weight_decay = Some(WeightDecay::Decoupled(0.01));
        }
        let mut cfg = SdsAdamConfig {
            groups,
            stiefel,
            ..Default::default()
        };
        cfg.rule.amsgrad = matches!(self, Variant::AmsGrad);
        match self {
            Variant::AdamMatrix => cfg.second_moment = SecondMoment::Matrix,
            Variant::AdamPerAdapter => cfg.adapter_second_moment_per = SecondMomentPer::Adapter,
            Variant::AdamMovingAverage => {
                cfg.adapter_second_moment = AdapterSecondMoment::MovingAverage
            }
            _ => {}
        }
        cfg
    }

    fn grid(self) -> &'static [f64] {
        if self.is_sgd() {
            &SGD_GRID
        } else {
            &ADAM_GRID
        }
    }
}

/// A task's outcome: the metric, the loss the learning rate is chosen by, the steps taken
/// and the microseconds per step.
struct Outcome {
    metric: f64,
    selection_loss: f64,
    steps: usize,
    us: f64,
}

/// The run with the lowest selection loss over `grid` (non-finite losses last).
fn select(grid: &[f64], mut run: impl FnMut(f64) -> Outcome) -> (f64, Outcome) {
    grid.iter()
        .map(|&lr| (lr, run(lr)))
        .min_by(|(_, a), (_, b)| {
            let key = |o: &Outcome| {
                if o.selection_loss.is_finite() {
                    o.selection_loss
                } else {
                    f64::INFINITY
                }
            };
            key(a).total_cmp(&key(b))
        })
        .expect("a non-empty grid")
}

type SdsMlp = (
    SdsLinear<{ digits::FEATURES }, { digits::HIDDEN }, 4, f32, Cpu>,
    ReLU,
    SdsLinear<{ digits::HIDDEN }, { digits::HIDDEN }, 4, f32, Cpu>,
    ReLU,
    SdsLinear<{ digits::HIDDEN }, { digits::CLASSES }, 4, f32, Cpu>,
);

/// The digits task: accuracy, selected by the mean loss of the last 30 steps.
fn digits_run<C: SdsConfig>(
    base: &digits::Pretrained,
    data: &(digits::Split, digits::Split),
    cfg: C,
) -> Outcome
where
    sds_lora::optim::Sds<SdsMlp, f32, Cpu, C>: Optimizer<SdsMlp, Cpu, f32>,
{
    let dev = Cpu::seed_from_u64(7);
    let mut model: SdsMlp = digits::adapted(base, 7);
    let mut opt = sds_lora::optim::Sds::new(&model, cfg).unwrap();
    let start = Instant::now();
    let curve = digits::train(&mut model, &mut opt, &dev, &data.0, DIGIT_STEPS, 11, "");
    let us = start.elapsed().as_secs_f64() * 1e6 / curve.len().max(1) as f64;
    let tail = &curve[curve.len().saturating_sub(30)..];
    let loss = tail.iter().map(|&v| v as f64).sum::<f64>() / tail.len().max(1) as f64;
    let full = curve.len() == DIGIT_STEPS;
    Outcome {
        metric: digits::accuracy(&model, &dev, &data.1),
        selection_loss: if full { loss } else { f64::INFINITY },
        steps: curve.len(),
        us,
    }
}

/// The low-rank problem at kappa_f = 100: the relative error, selected by itself.
fn lowrank_run<C: SdsConfig>(problem: &lowrank::Problem, cfg: C) -> Outcome
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
    let err = problem.rel_error(&dw);
    Outcome {
        metric: err,
        selection_loss: if steps == LOWRANK_STEPS {
            err
        } else {
            f64::INFINITY
        },
        steps,
        us,
    }
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

    println!("SDS-LoRA (full core), rules x steps. Digits: {DIGIT_STEPS} steps, rank 4, held-out accuracy on rotated digits. Low-rank (kappa_f = 100, warm start): {LOWRANK_STEPS} steps, relative error. Learning rate per row and task from {SGD_GRID:?} (SGD family) or {ADAM_GRID:?} (Adam family).\n");
    println!("| rule | step | digits acc. | lr | steps | us/step | low-rank rel. error | lr | steps | us/step |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let steps: Vec<(AdapterStep, Option<Retraction>)> =
        std::iter::once((AdapterStep::BasisUpdate, None))
            .chain(retractions.map(|r| (AdapterStep::PerTensor, Some(r))))
            .collect();
    for variant in Variant::ALL {
        for &(adapter_step, retraction) in &steps {
            let applies = match variant {
                // the basis-update step's Adam keeps its own second moments: what for,
                // and how they are averaged
                Variant::AdamMatrix => adapter_step == AdapterStep::PerTensor,
                Variant::AdamPerAdapter | Variant::AdamMovingAverage => {
                    adapter_step == AdapterStep::BasisUpdate
                }
                _ => true,
            };
            if !applies {
                continue;
            }
            let stiefel = StiefelConfig {
                adapter_step,
                retraction: retraction.unwrap_or_default(),
                reorthonormalize_every: None,
            };
            let ((d_lr, d), (l_lr, l)) = if variant.is_sgd() {
                (
                    select(variant.grid(), |lr| {
                        digits_run(&base, &data, variant.sgd(ParamGroups::uniform(lr), stiefel))
                    }),
                    select(variant.grid(), |lr| {
                        lowrank_run(&problem, variant.sgd(ParamGroups::uniform(lr), stiefel))
                    }),
                )
            } else {
                (
                    select(variant.grid(), |lr| {
                        digits_run(
                            &base,
                            &data,
                            variant.adam(ParamGroups::uniform(lr), stiefel),
                        )
                    }),
                    select(variant.grid(), |lr| {
                        lowrank_run(&problem, variant.adam(ParamGroups::uniform(lr), stiefel))
                    }),
                )
            };
            let step_name = match retraction {
                None => "basis update".to_string(),
                Some(r) => format!("per-tensor, {}", r.name()),
            };
            println!(
                "| {} | {step_name} | {:.1}% | {d_lr} | {} | {:.0} | {:.2e} | {l_lr} | {} | {:.0} |",
                variant.name(),
                100.0 * d.metric,
                d.steps,
                d.us,
                l.metric,
                l.steps,
                l.us
            );
        }
    }
}
