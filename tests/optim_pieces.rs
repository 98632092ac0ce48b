//! The host step on Stiefel tensors large enough to be cut into pieces of rows, which the
//! step shares between two threads: it agrees with the composed path (which never cuts).
//! (That it gives the same bits whichever thread runs which piece is a unit test of
//! `optim::riemannian`, which can reach the thread split.)

use dfdx::prelude::*;
use sds_lora::nn::builders;
use sds_lora::optim::{Momentum, Sds, SdsAdamConfig, SdsConfig, SdsSgdConfig, SecondMoment};
use sds_lora::stiefel::Retraction;

/// `basis_in` is `[4096, 8]`: 32768 values, two pieces of rows in `f64` and `f32`.
type Model = builders::SdsDiagLinear<4096, 16, 8>;
type Built<E> = <Model as BuildOnDevice<Cpu, E>>::Built;

/// Host path and composed path from the same start: the largest difference of the
/// parameters after 6 steps.
fn host_vs_composed<C: SdsConfig>(cfg: C) -> f64 {
    let dev = Cpu::seed_from_u64(3);
    let mut start: Built<f64> = dev.build_module::<Model, f64>();
    start
        .core
        .copy_from(&[0.5, -0.3, 0.2, 0.1, 0.4, -0.2, 0.3, 0.6]);
    let (mut a, mut b) = (start.clone(), start.clone());
    let mut host = Sds::<_, f64, Cpu, C>::new(&a, cfg.clone()).unwrap();
    let mut composed = Sds::<_, f64, Cpu, C>::new(&b, cfg).unwrap();
    composed
        .use_composed_ops(sds_lora::kernels::ComposedOps::new(&dev))
        .unwrap();
    for s in 0..6 {
        let data = Cpu::seed_from_u64(50 + s);
        let x: Tensor<Rank2<4, 4096>, f64, Cpu> = data.sample_normal();
        let y: Tensor<Rank2<4, 16>, f64, Cpu> = data.sample_normal();
        for (m, opt) in [(&mut a, &mut host), (&mut b, &mut composed)] {
            let grads = mse_loss(m.forward(x.clone().trace(m.alloc_grads())), y.clone()).backward();
            opt.step(m, &grads).unwrap();
        }
    }
    assert_ne!(
        a.basis_in.as_vec(),
        start.basis_in.as_vec(),
        "the steps moved"
    );
    [
        (a.basis_in.as_vec(), b.basis_in.as_vec()),
        (a.basis_out.as_vec(), b.basis_out.as_vec()),
        (a.core.as_vec(), b.core.as_vec()),
    ]
    .iter()
    .flat_map(|(p, q)| p.iter().zip(q).map(|(x, y)| (x - y).abs()))
    .fold(0.0, f64::max)
}

#[test]
fn pieces_agree_with_the_composed_path() {
    let mut worst = 0.0f64;
    for retraction in Retraction::all(5) {
        for second_moment in [SecondMoment::Elementwise, SecondMoment::Matrix] {
            let mut cfg = SdsAdamConfig {
                second_moment,
                ..Default::default()
            };
            cfg.groups.bases_lr = 1e-3;
            cfg.stiefel.retraction = retraction;
            let d = host_vs_composed(cfg);
            assert!(d < 1e-12, "{retraction:?} {second_moment:?}: {d:e}");
            worst = worst.max(d);
        }
    }
    let mut sgd = SdsSgdConfig::default();
    sgd.rule.momentum = Some(Momentum::Nesterov(0.9));
    sgd.groups.bases_lr = 0.05;
    let d = host_vs_composed(sgd);
    assert!(d < 1e-12, "SGD Nesterov: {d:e}");
    println!(
        "host (two pieces) vs composed: max abs difference {:.1e}",
        worst.max(d)
    );
}
