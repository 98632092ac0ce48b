//! Bad input from files, configs and checkpoints is refused with an error that names it,
//! and the model and optimizer are left exactly as they were.

use dfdx::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use sds_lora::nn::peft::{export_peft, import_peft, read_peft, PeftAdapter, KEY_PREFIX};
use sds_lora::nn::{builders, Adapter};
use sds_lora::optim::{
    AdamRule, AdapterSecondMoment, Momentum, OptimizerState, ParamGroups, SdsAdam, SdsAdamConfig,
    SdsSgd, SdsSgdConfig, SgdRule, StiefelConfig, WeightDecay,
};
use sds_lora::stiefel::{orthogonality_error, orthonormalize, Retraction};
use sds_lora::Error;

type Model = (
    builders::SdsLinear<6, 5, 2>,
    Tanh,
    builders::SdsLinear<5, 3, 2>,
);
type Built = <Model as BuildOnDevice<Cpu, f64>>::Built;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sds_lora_bad_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every tensor of the model, flattened, by position.
fn snapshot(m: &Built) -> Vec<Vec<f64>> {
    vec![
        m.0.basis_out.as_vec(),
        m.0.core.as_vec(),
        m.0.basis_in.as_vec(),
        m.0.weight.as_vec(),
        m.2.basis_out.as_vec(),
        m.2.core.as_vec(),
        m.2.basis_in.as_vec(),
    ]
}

/// A trained-looking model: nonzero full cores.
fn model(seed: u64) -> Built {
    let mut m = Cpu::seed_from_u64(seed).build_module::<Model, f64>();
    m.0.core.copy_from(&[0.8, -0.3, 0.2, 0.5]);
    m.2.core.copy_from(&[-0.4, 0.1, 0.6, 0.3]);
    m
}

/// An adapter config and safetensors bytes with one layer `"0"` holding `a` and `b`.
fn adapter_bytes(r: usize, a: (&[usize], Vec<f32>), b: (&[usize], Vec<f32>)) -> (String, Vec<u8>) {
    let config =
        format!(r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": 2, "target_modules": ["0"]}}"#);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (ab, bb) = (bytes(&a.1), bytes(&b.1));
    let views = vec![
        (
            format!("{KEY_PREFIX}0.lora_A.weight"),
            TensorView::new(Dtype::F32, a.0.to_vec(), &ab).unwrap(),
        ),
        (
            format!("{KEY_PREFIX}0.lora_B.weight"),
            TensorView::new(Dtype::F32, b.0.to_vec(), &bb).unwrap(),
        ),
    ];
    (config, safetensors::serialize(views, &None).unwrap())
}

fn fill(n: usize) -> Vec<f32> {
    (0..n).map(|k| ((k * 7 % 11) as f32 - 5.0) / 10.0).collect()
}

#[test]
fn exports_carry_peft_key_prefix_and_the_missing_directory_is_named() {
    let dir = temp_dir("prefix");
    export_peft(&model(1), &dir).unwrap();
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "base_model.model.0.lora_A.weight",
            "base_model.model.0.lora_B.weight",
            "base_model.model.2.lora_A.weight",
            "base_model.model.2.lora_B.weight"
        ]
    );
    let missing = dir.join("no_such_adapter");
    let msg = read_peft(&missing).unwrap_err().to_string();
    assert!(msg.contains("no_such_adapter"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_finite_values_in_adapter_files_are_refused_by_key() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut a = fill(2 * 6);
        a[7] = bad;
        let (config, weights) = adapter_bytes(2, (&[2, 6], a), (&[5, 2], fill(10)));
        let msg = PeftAdapter::from_bytes(&config, &weights)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("0.lora_A.weight") && msg.contains("element 7"),
            "{msg}"
        );
    }
    // And a pair built in memory with NaN is refused by import, the model untouched.
    let (config, weights) = adapter_bytes(2, (&[2, 6], fill(12)), (&[5, 2], fill(10)));
    let mut adapter = PeftAdapter::from_bytes(&config, &weights).unwrap();
    adapter.pairs.get_mut("0").unwrap().b[(1, 1)] = f64::NAN;
    let mut m = model(2);
    let before = snapshot(&m);
    assert!(matches!(
        import_peft(&mut m, &adapter),
        Err(Error::NonFinite { .. })
    ));
    assert_eq!(snapshot(&m), before);
}

#[test]
fn a_config_rank_that_contradicts_the_tensors_is_refused() {
    let (config, weights) = adapter_bytes(3, (&[2, 6], fill(12)), (&[5, 2], fill(10)));
    let msg = PeftAdapter::from_bytes(&config, &weights)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("rank 3") && msg.contains("rank 2"), "{msg}");
    // A layer the config does not target.
    let config = config
        .replace(r#"["0"]"#, r#"["fc"]"#)
        .replace(": 3", ": 2");
    let msg = PeftAdapter::from_bytes(&config, &weights)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("target_modules"), "{msg}");
}

#[test]
fn a_transposed_lora_a_is_named_with_its_shapes() {
    // Factors whose ranks differ are refused when read.
    let (config, weights) = adapter_bytes(2, (&[6, 2], fill(12)), (&[5, 2], fill(10)));
    let msg = PeftAdapter::from_bytes(&config, &weights)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("lora_A is (6, 2)") && msg.contains("[r, in]"),
        "{msg}"
    );
    // A square-rank pair in the wrong orientation is refused by import, naming lora_A.
    let (config, weights) = adapter_bytes(2, (&[2, 6], fill(12)), (&[5, 2], fill(10)));
    let mut adapter = PeftAdapter::from_bytes(&config, &weights).unwrap();
    let pair = adapter.pairs.get_mut("0").unwrap();
    pair.a = pair.a.transpose();
    pair.b = nalgebra::DMatrix::from_element(5, 6, 0.1);
    let mut m = model(3);
    let before = snapshot(&m);
    let msg = import_peft(&mut m, &adapter).unwrap_err().to_string();
    assert!(
        msg.contains("lora_A [2, 6]")
            && msg.contains("lora_A (6, 2)")
            && msg.contains("transposed"),
        "{msg}"
    );
    assert_eq!(snapshot(&m), before);
}

#[test]
fn reimporting_an_untrained_export_gives_orthonormal_bases_and_zero_dw() {
    let untrained = Cpu::seed_from_u64(4).build_module::<Model, f64>();
    let dir = temp_dir("untrained");
    export_peft(&untrained, &dir).unwrap();
    let mut fresh = Cpu::seed_from_u64(5).build_module::<Model, f64>();
    import_peft(&mut fresh, &read_peft(&dir).unwrap()).unwrap();
    for err in [
        orthogonality_error(&fresh.0.basis_out),
        orthogonality_error(&fresh.2.basis_out),
    ] {
        assert!(err < 1e-13, "{err:e}");
    }
    assert!(fresh
        .0
        .delta_weight()
        .unwrap()
        .as_vec()
        .iter()
        .all(|&v| v == 0.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn set_from_lora_refuses_non_finite_pairs_unchanged() {
    let dev = Cpu::seed_from_u64(6);
    let mut m = model(6);
    let before = snapshot(&m);
    let a: Tensor<Rank2<2, 6>, f64, Cpu> = dev.sample_normal();
    let mut b: Tensor<Rank2<5, 2>, f64, Cpu> = dev.sample_normal();
    assert!(m.0.set_from_lora(&b, &a, f64::NAN).is_err());
    b.copy_from(&[f64::INFINITY; 10]);
    assert!(m.0.set_from_lora(&b, &a, 1.0).is_err());
    assert_eq!(snapshot(&m), before);
}

/// Every retraction used to accept a basis that is not orthonormal (`Qr`/`Polar` jumped,
/// `Cayley` kept the error, `Exp` blew up): the optimizer now refuses it when built, with
/// the measured error, and accepts it after `orthonormalize`.
#[test]
fn optimizers_refuse_bases_that_are_not_orthonormal() {
    for retraction in Retraction::all(5) {
        let mut m = model(7);
        m.2.basis_in
            .copy_from(&[1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let cfg = SdsAdamConfig {
            stiefel: StiefelConfig {
                retraction,
                ..Default::default()
            },
            ..Default::default()
        };
        match SdsAdam::new(&m, cfg) {
            Err(Error::NotOrthonormal { path, error }) => {
                assert_eq!(path, "2.basis_in");
                assert!((error - 3.0).abs() < 1e-12, "{error}");
            }
            other => panic!("{retraction:?}: {other:?}"),
        }
        orthonormalize(&mut m.2.basis_in).unwrap();
        assert!(SdsAdam::new(&m, cfg).is_ok());
    }
}

/// Learning rates, betas, momentum, dampening, eps, weight decays and the exponent of the
/// adapters' second moment out of range are refused when the optimizer is built, and, set
/// later through the public `cfg`, by the step, before anything is written.
#[test]
fn settings_out_of_range_are_refused_at_build_and_at_each_step() {
    let adam_cases: Vec<(&str, SdsAdamConfig)> = {
        let base = SdsAdamConfig::default();
        let mut cases = Vec::new();
        for (what, lr) in [
            ("NaN", f64::NAN),
            ("negative", -1e-3),
            ("infinite", f64::INFINITY),
        ] {
            for group in 0..3 {
                let mut c = base;
                match group {
                    0 => c.groups.bases_lr = lr,
                    1 => c.groups.core.lr = lr,
                    _ => c.groups.others.lr = lr,
                }
                cases.push((what, c));
            }
        }
        let mut c = base;
        c.groups.core.weight_decay = Some(WeightDecay::Decoupled(-0.1));
        cases.push(("weight_decay", c));
        for rule in [
            AdamRule {
                betas: [1.0, 0.999],
                ..AdamRule::default()
            },
            AdamRule {
                betas: [0.9, -0.1],
                ..AdamRule::default()
            },
            AdamRule {
                eps: 0.0,
                ..AdamRule::default()
            },
            AdamRule {
                eps: f64::NAN,
                ..AdamRule::default()
            },
        ] {
            cases.push(("rule", SdsAdamConfig { rule, ..base }));
        }
        for exponent in [0.0, 1.5, f64::NAN] {
            let adapter_second_moment = AdapterSecondMoment::IncreasingDecay { exponent };
            let c = SdsAdamConfig {
                adapter_second_moment,
                ..base
            };
            cases.push(("adapter_second_moment", c));
        }
        let mut c = base;
        c.stiefel.reorthonormalize_every = Some(0);
        cases.push(("reorthonormalize_every", c));
        cases
    };
    let dev = Cpu::seed_from_u64(8);
    let x: Tensor<Rank2<4, 6>, f64, Cpu> = dev.sample_normal();
    for (what, cfg) in adam_cases {
        let mut m = model(8);
        assert!(
            matches!(SdsAdam::new(&m, cfg), Err(Error::Invalid(_))),
            "{what}: {cfg:?}"
        );
        let mut opt = SdsAdam::new(&m, SdsAdamConfig::default()).unwrap();
        opt.cfg = cfg;
        let before = (snapshot(&m), opt.state());
        let g = m
            .forward(x.trace(m.alloc_grads()))
            .square()
            .mean()
            .backward();
        assert!(
            matches!(opt.step(&mut m, &g), Err(Error::Invalid(_))),
            "{what}"
        );
        assert_eq!((snapshot(&m), opt.state()), before, "{what}");
    }
    for rule in [
        SgdRule {
            momentum: Some(Momentum::Classic(1.0)),
            dampening: 0.0,
        },
        SgdRule {
            momentum: Some(Momentum::Nesterov(f64::NAN)),
            dampening: 0.0,
        },
        SgdRule {
            momentum: None,
            dampening: 1.5,
        },
    ] {
        let cfg = SdsSgdConfig {
            rule,
            ..Default::default()
        };
        let msg = SdsSgd::new(&model(9), cfg).unwrap_err().to_string();
        assert!(msg.contains("rule."), "{msg}");
    }
}

/// A step whose new values overflow is refused, nothing written.
#[test]
fn a_step_that_overflows_writes_nothing() {
    let dev = Cpu::seed_from_u64(10);
    let mut m = model(10);
    let cfg = SdsSgdConfig {
        groups: ParamGroups::uniform(1e300),
        ..Default::default()
    };
    let mut opt = SdsSgd::new(&m, cfg).unwrap();
    let x: Tensor<Rank2<4, 6>, f64, Cpu> = dev.sample_normal() * 1e10;
    let before = (snapshot(&m), opt.state());
    let g = m
        .forward(x.trace(m.alloc_grads()))
        .square()
        .mean()
        .backward();
    let err = opt.step(&mut m, &g).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
    assert_eq!((snapshot(&m), opt.state()), before);
}

/// Checkpoints: a negative or non-finite second moment, per-direction second moments of
/// the wrong count, a tensor saved with another shape of the same length, or a moment with
/// NaN is refused, the optimizer unchanged.
#[test]
fn checkpoints_are_checked_by_shape_and_by_sign() {
    let dev = Cpu::seed_from_u64(11);
    type Two = (builders::SdsLinear<6, 4, 2>, builders::LoraLinear<4, 6, 2>);
    let mut m = dev.build_module::<Two, f64>();
    let cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(1e-2),
        ..Default::default()
    };
    let mut opt = SdsAdam::new(&m, cfg).unwrap();
    let x: Tensor<Rank2<3, 6>, f64, Cpu> = dev.sample_normal();
    let g = m
        .forward(x.trace(m.alloc_grads()))
        .square()
        .mean()
        .backward();
    opt.step(&mut m, &g).unwrap();
    let good = opt.state();
    assert_eq!(good.shapes["1.lora_a"], vec![2, 4]);
    type Spoiler = fn(&mut OptimizerState<f64>);
    assert_eq!(good.tensors["0.core"].second_directions.len(), 2 * 2 * 2);
    let spoilers: [(&str, Spoiler); 7] = [
        ("negative", |s| {
            s.tensors.get_mut("1.lora_a").unwrap().second[3] = -1.0
        }),
        ("negative", |s| {
            s.tensors.get_mut("0.core").unwrap().second_directions[3] = -1.0
        }),
        ("length", |s| {
            let core = s.tensors.get_mut("0.core").unwrap();
            core.second_directions_max.push(1.0)
        }),
        ("negative", |s| {
            s.tensors.get_mut("0.core").unwrap().second_scalar = -1.0
        }),
        ("NaN", |s| {
            s.tensors.get_mut("1.lora_b").unwrap().first[0] = f64::NAN
        }),
        ("shape", |s| {
            s.shapes.insert("1.lora_a".into(), vec![4, 2]);
        }),
        ("shape", |s| {
            s.shapes.insert("1.no_such".into(), vec![8]);
        }),
    ];
    for (what, spoil) in spoilers {
        let mut bad = good.clone();
        spoil(&mut bad);
        let err = opt.set_state(bad).unwrap_err();
        assert!(matches!(err, Error::StateMismatch(_)), "{what}: {err:?}");
        assert_eq!(opt.state(), good, "{what}");
    }
}
