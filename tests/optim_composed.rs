//! The composed path (dfdx ops on the model's device, the path used on CUDA), run on Cpu:
//! the same steps as the host path, its host transfers batched over all bases, checkpoints
//! and refused steps.

use dfdx::optim::Optimizer;
use dfdx::prelude::*;
use sds_lora::kernels::ComposedOps;
use sds_lora::nn::builders;
use sds_lora::optim::{
    GroupConfig, Momentum, ParamGroups, Sds, SdsAdam, SdsAdamConfig, SdsConfig, SdsSgdConfig,
    SecondMoment, WeightDecay,
};
use sds_lora::stiefel::{orthogonality_error, Retraction};

type Model = (
    builders::SdsDiagLinear<24, 16, 4>,
    Tanh,
    builders::SdsDiagLinear<16, 8, 3>,
    Linear<8, 4>,
);
type Built = <Model as BuildOnDevice<Cpu, f64>>::Built;

/// `steps` training steps of `m` on fixed data (seeded by step number from `first`).
fn train<C: SdsConfig>(m: &mut Built, opt: &mut Sds<Built, f64, Cpu, C>, first: u64, steps: u64) {
    for s in first..first + steps {
        let data = Cpu::seed_from_u64(100 + s);
        let x: Tensor<Rank2<10, 24>, f64, Cpu> = data.sample_normal();
        let y: Tensor<Rank2<10, 4>, f64, Cpu> = data.sample_normal();
        let grads = mse_loss(m.forward(x.trace(m.alloc_grads())), y).backward();
        opt.step(m, &grads).unwrap();
    }
}

fn params(m: &Built) -> Vec<Vec<f64>> {
    vec![
        m.0.basis_out.as_vec(),
        m.0.basis_in.as_vec(),
        m.0.core.as_vec(),
        m.2.basis_out.as_vec(),
        m.2.basis_in.as_vec(),
        m.2.core.as_vec(),
        m.3.weight.as_vec(),
        m.3.bias.as_vec(),
    ]
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Host path and composed path from the same start: parameters after 12 steps.
fn host_vs_composed<C: SdsConfig>(cfg: C) -> f64 {
    let dev = Cpu::seed_from_u64(7);
    let mut start = dev.build_module::<Model, f64>();
    start.0.core.copy_from(&[0.5, -0.3, 0.2, 0.1]);
    start.2.core.copy_from(&[0.4, 0.2, -0.1]);
    let (mut a, mut b) = (start.clone(), start.clone());
    let mut host = Sds::<_, f64, Cpu, C>::new(&a, cfg.clone()).unwrap();
    let mut composed = Sds::<_, f64, Cpu, C>::new(&b, cfg).unwrap();
    composed.use_composed_ops(ComposedOps::new(&dev)).unwrap();
    train(&mut a, &mut host, 0, 12);
    train(&mut b, &mut composed, 0, 12);
    // The moments agree as well (saved in the same format).
    let (sa, sb) = (host.state(), composed.state());
    assert_eq!(sa.steps, sb.steps);
    for (path, ra) in &sa.tensors {
        let rb = &sb.tensors[path];
        assert_eq!(ra.step, rb.step, "{path}");
        let d = max_diff(
            &[ra.first.clone(), ra.second.clone()],
            &[rb.first.clone(), rb.second.clone()],
        );
        assert!(d < 1e-12, "{path}: moments differ by {d:e}");
        assert!(
            (ra.second_scalar - rb.second_scalar).abs() <= 1e-12 * ra.second_scalar.abs().max(1.0)
        );
    }
    let (pa, pb) = (params(&a), params(&b));
    assert_ne!(pa, params(&start), "the steps moved the parameters");
    max_diff(&pa, &pb)
}

#[test]
fn composed_adam_matches_host_adam() {
    let groups = ParamGroups {
        bases_lr: 0.02,
        core: GroupConfig {
            lr: 0.05,
            weight_decay: Some(WeightDecay::L2(0.01)),
        },
        others: GroupConfig {
            lr: 0.01,
            weight_decay: Some(WeightDecay::Decoupled(0.1)),
        },
    };
    let mut worst = 0.0f64;
    for retraction in Retraction::all(5) {
        for (second_moment, amsgrad) in [
            (SecondMoment::Elementwise, false),
            (SecondMoment::Elementwise, true),
            (SecondMoment::Matrix, false),
            (SecondMoment::Matrix, true),
        ] {
            let mut cfg = SdsAdamConfig {
                groups,
                second_moment,
                ..Default::default()
            };
            cfg.rule.amsgrad = amsgrad;
            cfg.stiefel.retraction = retraction;
            cfg.stiefel.reorthonormalize_every = Some(5);
            let d = host_vs_composed(cfg);
            assert!(
                d < 1e-12,
                "{retraction:?} {second_moment:?} amsgrad {amsgrad}: {d:e}"
            );
            worst = worst.max(d);
        }
    }
    println!("composed vs host, SdsAdam, 24 configurations: max abs difference {worst:.1e}");
}

#[test]
fn composed_sgd_matches_host_sgd() {
    let mut groups = ParamGroups::uniform(0.05);
    groups.others.weight_decay = Some(WeightDecay::L2(0.01));
    groups.core.weight_decay = Some(WeightDecay::Decoupled(0.1));
    let mut worst = 0.0f64;
    for momentum in [
        None,
        Some(Momentum::Classic(0.9)),
        Some(Momentum::Nesterov(0.8)),
    ] {
        for dampening in [0.0, 0.3] {
            let mut cfg = SdsSgdConfig {
                groups,
                ..Default::default()
            };
            cfg.rule.momentum = momentum;
            cfg.rule.dampening = dampening;
            let d = host_vs_composed(cfg);
            assert!(d < 1e-12, "{momentum:?} dampening {dampening}: {d:e}");
            worst = worst.max(d);
        }
    }
    println!("composed vs host, SdsSgd, 6 configurations: max abs difference {worst:.1e}");
}

/// Host transfers of one composed step on a model of `N` identical adapted layers.
fn transfers_per_step<const N: usize>(retraction: Retraction) -> (usize, usize) {
    type Layer = builders::SdsDiagLinear<32, 32, 4>;
    let dev = Cpu::seed_from_u64(1);
    let mut m = dev.build_module::<dfdx::nn::builders::Repeated<Layer, N>, f32>();
    let cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(1e-2),
        stiefel: sds_lora::optim::StiefelConfig {
            retraction,
            reorthonormalize_every: None,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut opt = SdsAdam::new(&m, cfg).unwrap();
    let ops = ComposedOps::new(&dev);
    opt.use_composed_ops(ops.clone()).unwrap();
    let x: Tensor<Rank2<8, 32>, f32, Cpu> = dev.sample_normal();
    let mut counts = Vec::new();
    for _ in 0..2 {
        let before = ops.transfers();
        let grads = m
            .forward(x.trace(m.alloc_grads()))
            .square()
            .mean()
            .backward();
        opt.update(&mut m, &grads).unwrap();
        let after = ops.transfers();
        counts.push((
            after.to_host - before.to_host,
            after.to_device - before.to_device,
        ));
    }
    assert_eq!(counts[0], counts[1]);
    counts[0]
}

#[test]
fn host_transfers_do_not_grow_with_the_number_of_bases() {
    for retraction in Retraction::all(5) {
        let one = transfers_per_step::<1>(retraction);
        let six = transfers_per_step::<6>(retraction);
        assert_eq!(one, six, "{retraction:?}");
        // Down: the gradients' finiteness, the retraction's Gram matrices (which also
        // reveal non-finite inputs), the new values' finiteness; up: the retraction's
        // coefficients. Cholesky-QR2 makes its round trip twice. (Qr's steps here are
        // small: all take its Cholesky path.)
        let expected = if retraction == Retraction::CholeskyQr2 {
            (4, 2)
        } else {
            (3, 1)
        };
        assert_eq!(one, expected, "{retraction:?}");
    }
}

#[test]
fn composed_checkpoint_and_refusal() {
    let dev = Cpu::seed_from_u64(3);
    let start = dev.build_module::<Model, f64>();
    let mut cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(0.02),
        ..Default::default()
    };
    cfg.rule.amsgrad = true;
    let composed = |m: &Built| {
        let mut opt = SdsAdam::new(m, cfg).unwrap();
        opt.use_composed_ops(ComposedOps::new(&dev)).unwrap();
        opt
    };
    let mut a = start.clone();
    let mut opt_a = composed(&a);
    train(&mut a, &mut opt_a, 0, 10);

    // Saved after 4 steps, restored into a fresh composed optimizer: the same bits.
    let mut b = start.clone();
    let mut opt_b = composed(&b);
    train(&mut b, &mut opt_b, 0, 4);
    let saved = serde_json::to_string(&opt_b.state()).unwrap();
    let mut opt_c = composed(&b);
    opt_c
        .set_state(serde_json::from_str(&saved).unwrap())
        .unwrap();
    train(&mut b, &mut opt_c, 4, 6);
    assert_eq!(params(&a), params(&b));
    assert_eq!(opt_a.state(), opt_c.state());
    assert!(orthogonality_error(&a.0.basis_out) < 1e-13);

    // A NaN in one gradient: an error naming it, nothing changed, and the next step works.
    let (before, state) = (params(&a), opt_a.state());
    let x: Tensor<Rank2<10, 24>, f64, Cpu> = dev.sample_normal();
    let mut grads = a
        .forward(x.trace(a.alloc_grads()))
        .square()
        .mean()
        .backward();
    grads.get_or_alloc_mut(&a.2.core).unwrap()[1] = f64::NAN;
    let err = opt_a.step(&mut a, &grads).unwrap_err().to_string();
    assert!(err.contains("2.scales"), "{err}");
    assert_eq!(params(&a), before);
    assert_eq!(opt_a.state(), state);
    train(&mut a, &mut opt_a, 10, 1);
    assert_ne!(params(&a), before);
}

#[test]
fn composed_path_without_stiefel_tensors_uploads_nothing() {
    let dev = Cpu::seed_from_u64(5);
    let start = dev.build_module::<(Linear<6, 5>, Tanh, Linear<5, 2>), f64>();
    let cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(0.05),
        ..Default::default()
    };
    let (mut a, mut b) = (start.clone(), start.clone());
    let mut host = SdsAdam::new(&a, cfg).unwrap();
    let mut composed = SdsAdam::new(&b, cfg).unwrap();
    let ops = ComposedOps::new(&dev);
    composed.use_composed_ops(ops.clone()).unwrap();
    for _ in 0..5 {
        let x: Tensor<Rank2<4, 6>, f64, Cpu> = dev.sample_normal();
        let ga = a
            .forward(x.trace(a.alloc_grads()))
            .square()
            .mean()
            .backward();
        let gb = b
            .forward(x.trace(b.alloc_grads()))
            .square()
            .mean()
            .backward();
        host.update(&mut a, &ga).unwrap();
        composed.update(&mut b, &gb).unwrap();
    }
    // The same formulas in another order of operations: equal to rounding.
    let pa = vec![
        a.0.weight.as_vec(),
        a.0.bias.as_vec(),
        a.2.weight.as_vec(),
        a.2.bias.as_vec(),
    ];
    let pb = vec![
        b.0.weight.as_vec(),
        b.0.bias.as_vec(),
        b.2.weight.as_vec(),
        b.2.bias.as_vec(),
    ];
    assert_ne!(
        pa,
        vec![
            start.0.weight.as_vec(),
            start.0.bias.as_vec(),
            start.2.weight.as_vec(),
            start.2.bias.as_vec()
        ]
    );
    assert!(max_diff(&pa, &pb) < 1e-14, "{:e}", max_diff(&pa, &pb));
    // Two downloads per step (the finiteness of the gradients and of the new values), no
    // upload.
    let t = ops.transfers();
    assert_eq!((t.to_host, t.to_device), (10, 0));
}
