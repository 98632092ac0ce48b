//! With nothing marked Stiefel, SdsAdam and SdsSgd match dfdx's Adam and Sgd with the same
//! settings after 50 steps on a small MLP: 1e-6 relative in f32, 1e-12 in f64.

use dfdx::optim::Optimizer;
use sds_lora::optim::{GroupConfig, ParamGroups, WeightDecay};

fn groups(lr: f64, wd: Option<WeightDecay>) -> ParamGroups {
    let g = GroupConfig {
        lr,
        weight_decay: wd,
    };
    ParamGroups {
        bases_lr: lr,
        core: g,
        others: g,
    }
}

fn dfdx_wd(wd: Option<WeightDecay>) -> Option<dfdx::optim::WeightDecay> {
    wd.map(|w| match w {
        WeightDecay::L2(v) => dfdx::optim::WeightDecay::L2(v),
        WeightDecay::Decoupled(v) => dfdx::optim::WeightDecay::Decoupled(v),
    })
}

/// Largest relative difference between two parameter lists.
fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0, f64::max)
}

macro_rules! parity {
    ($name:ident, $e:ty, $tol:expr) => {
        mod $name {
            use super::*;
            use dfdx::optim::{Adam, AdamConfig, Sgd, SgdConfig};
            use dfdx::prelude::*;
            use sds_lora::optim::{
                Momentum, SdsAdam, SdsAdamConfig, SdsSgd, SdsSgdConfig, WeightDecay,
            };

            type Mlp = (Linear<5, 8>, ReLU, Linear<8, 3>);
            type Built = <Mlp as BuildOnDevice<Cpu, $e>>::Built;

            fn params(m: &Built) -> Vec<f64> {
                [m.0.weight.as_vec(), m.0.bias.as_vec(), m.2.weight.as_vec(), m.2.bias.as_vec()]
                    .concat()
                    .into_iter()
                    .map(|v| v as f64)
                    .collect()
            }

            /// Two copies of one MLP, 50 steps on the same batches, one optimizer each.
            fn run(
                ours: &mut impl Optimizer<Built, Cpu, $e>,
                theirs: &mut impl Optimizer<Built, Cpu, $e>,
            ) -> f64 {
                let dev = Cpu::seed_from_u64(11);
                let mut a = dev.build_module::<Mlp, $e>();
                let mut b = a.clone();
                for _ in 0..50 {
                    let x: Tensor<Rank2<4, 5>, $e, Cpu> = dev.sample_normal();
                    let y: Tensor<Rank2<4, 3>, $e, Cpu> = dev.sample_normal();
                    let ga = mse_loss(a.forward(x.trace(a.alloc_grads())), y.clone()).backward();
                    ours.update(&mut a, &ga).unwrap();
                    let gb = mse_loss(b.forward(x.trace(b.alloc_grads())), y).backward();
                    theirs.update(&mut b, &gb).unwrap();
                }
                max_rel(&params(&a), &params(&b))
            }

            #[test]
            fn sds_adam_matches_dfdx_adam() {
                let m = Cpu::default().build_module::<Mlp, $e>();
                for wd in [None, Some(WeightDecay::L2(0.1)), Some(WeightDecay::Decoupled(0.05))] {
                    let mut cfg = SdsAdamConfig {
                        groups: groups(3e-3, wd),
                        ..Default::default()
                    };
                    cfg.rule.betas = [0.8, 0.99];
                    let mut ours = SdsAdam::new(&m, cfg).unwrap();
                    let mut theirs = Adam::new(
                        &m,
                        AdamConfig {
                            lr: 3e-3,
                            betas: [0.8, 0.99],
                            eps: 1e-8,
                            weight_decay: dfdx_wd(wd),
                        },
                    );
                    let err = run(&mut ours, &mut theirs);
                    assert!(err <= $tol, "Adam {wd:?}: relative difference {err:e}");
                }
            }

            #[test]
            fn sds_sgd_matches_dfdx_sgd() {
                let m = Cpu::default().build_module::<Mlp, $e>();
                let momenta = [
                    (None, None),
                    (Some(Momentum::Classic(0.9)), Some(dfdx::optim::Momentum::Classic(0.9))),
                    (Some(Momentum::Nesterov(0.8)), Some(dfdx::optim::Momentum::Nesterov(0.8))),
                ];
                for (ours_m, theirs_m) in momenta {
                    for wd in [None, Some(WeightDecay::L2(0.01)), Some(WeightDecay::Decoupled(0.02))] {
                        let mut cfg = SdsSgdConfig {
                            groups: groups(2e-2, wd),
                            ..Default::default()
                        };
                        cfg.rule.momentum = ours_m;
                        let mut ours = SdsSgd::new(&m, cfg).unwrap();
                        let mut theirs = Sgd::new(
                            &m,
                            SgdConfig {
                                lr: 2e-2,
                                momentum: theirs_m,
                                weight_decay: dfdx_wd(wd),
                            },
                        );
                        let err = run(&mut ours, &mut theirs);
                        assert!(err <= $tol, "SGD {ours_m:?} {wd:?}: relative difference {err:e}");
                    }
                }
            }
        }
    };
}

parity!(f32_parity, f32, 1e-6);
parity!(f64_parity, f64, 1e-12);
