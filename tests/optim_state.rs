//! Checkpoints restore bit-identically; a bad step changes nothing; unused and wrongly
//! shaped tensors are reported.

use dfdx::optim::{Optimizer, OptimizerUpdateError};
use dfdx::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use sds_lora::optim::{
    Momentum, OptimizerState, ParamGroups, SdsAdam, SdsAdamConfig, SdsSgd, SdsSgdConfig,
};
use sds_lora::stiefel::random_point;
use sds_lora::Error;

macro_rules! checkpoint_case {
    ($name:ident, $e:ty) => {
        #[test]
        fn $name() {
            type Layer = <Linear<3, 12> as BuildOnDevice<Cpu, $e>>::Built;
            let dev = Cpu::seed_from_u64(1);
            let mut init: Layer = dev.build_module::<Linear<3, 12>, $e>();
            let x: Tensor<Rank2<12, 3>, $e, Cpu> = random_point(&dev, (Const, Const), 2).unwrap();
            init.weight.copy_from(&x.as_vec());

            fn grads_at(layer: &Layer, step: u64) -> Gradients<$e, Cpu> {
                let mut rng = StdRng::seed_from_u64(step);
                let mut grads = layer.alloc_grads();
                let w: Vec<$e> = (0..36).map(|_| StandardNormal.sample(&mut rng)).collect();
                let b: Vec<$e> = (0..12).map(|_| StandardNormal.sample(&mut rng)).collect();
                grads.get_or_alloc_mut(&layer.weight).unwrap().copy_from_slice(&w);
                grads.get_or_alloc_mut(&layer.bias).unwrap().copy_from_slice(&b);
                grads
            }
            let is_weight = |p: &str| p == "weight";

            let mut adam_cfg = SdsAdamConfig {
                groups: ParamGroups::uniform(0.01),
                ..Default::default()
            };
            adam_cfg.rule.amsgrad = true;
            let mut sgd_cfg = SdsSgdConfig {
                groups: ParamGroups::uniform(0.02),
                ..Default::default()
            };
            sgd_cfg.rule.momentum = Some(Momentum::Nesterov(0.9));

            // Adam: uninterrupted, and saved after 7 steps then restored into a fresh one.
            let mut a = init.clone();
            let mut opt = SdsAdam::new_with_stiefel(&a, adam_cfg, is_weight).unwrap();
            for s in 0..15 {
                let g = grads_at(&a, s);
                opt.update(&mut a, &g).unwrap();
            }
            let mut b = init.clone();
            let mut opt = SdsAdam::new_with_stiefel(&b, adam_cfg, is_weight).unwrap();
            for s in 0..7 {
                let g = grads_at(&b, s);
                opt.update(&mut b, &g).unwrap();
            }
            let saved_cfg = serde_json::to_string(&opt.cfg).unwrap();
            let saved_state = serde_json::to_string(&opt.state()).unwrap();
            drop(opt);
            let cfg: SdsAdamConfig = serde_json::from_str(&saved_cfg).unwrap();
            let mut opt = SdsAdam::new_with_stiefel(&b, cfg, is_weight).unwrap();
            opt.set_state(serde_json::from_str::<OptimizerState<$e>>(&saved_state).unwrap())
                .unwrap();
            for s in 7..15 {
                let g = grads_at(&b, s);
                opt.update(&mut b, &g).unwrap();
            }
            assert_eq!(a.weight.as_vec(), b.weight.as_vec(), "Adam weight bits");
            assert_eq!(a.bias.as_vec(), b.bias.as_vec(), "Adam bias bits");

            // SGD with Nesterov momentum, the same way.
            let mut a = init.clone();
            let mut opt = SdsSgd::new_with_stiefel(&a, sgd_cfg, is_weight).unwrap();
            for s in 0..15 {
                let g = grads_at(&a, s);
                opt.update(&mut a, &g).unwrap();
            }
            let mut b = init.clone();
            let mut opt = SdsSgd::new_with_stiefel(&b, sgd_cfg, is_weight).unwrap();
            for s in 0..7 {
                let g = grads_at(&b, s);
                opt.update(&mut b, &g).unwrap();
            }
            let saved = serde_json::to_string(&opt.state()).unwrap();
            let mut opt = SdsSgd::new_with_stiefel(&b, sgd_cfg, is_weight).unwrap();
            opt.set_state(serde_json::from_str(&saved).unwrap()).unwrap();
            for s in 7..15 {
                let g = grads_at(&b, s);
                opt.update(&mut b, &g).unwrap();
            }
            assert_eq!(a.weight.as_vec(), b.weight.as_vec(), "SGD weight bits");
            assert_eq!(a.bias.as_vec(), b.bias.as_vec(), "SGD bias bits");

            // A non-finite gradient: an error, and parameters and state bit-identical.
            let (w0, b0, state0) = (b.weight.as_vec(), b.bias.as_vec(), opt.state());
            let mut bad = grads_at(&b, 99);
            bad.get_or_alloc_mut(&b.bias).unwrap()[4] = <$e>::NAN;
            match opt.update(&mut b, &bad) {
                Err(OptimizerUpdateError::UnusedParams(u)) => assert_eq!(u.ids.len(), 1),
                other => panic!("expected a refused step, got {other:?}"),
            }
            assert!(matches!(opt.last_error(), Some(Error::NonFinite { what }) if what.contains("bias")));
            assert!(matches!(opt.step(&mut b, &bad), Err(Error::NonFinite { .. })));
            assert_eq!(b.weight.as_vec(), w0);
            assert_eq!(b.bias.as_vec(), b0);
            assert_eq!(opt.state(), state0);
            // The same for the Stiefel tensor's gradient (found through X^T E, not a scan).
            for bad_value in [<$e>::NAN, <$e>::INFINITY, <$e>::NEG_INFINITY] {
                let mut bad = grads_at(&b, 99);
                bad.get_or_alloc_mut(&b.weight).unwrap()[5] = bad_value;
                assert!(opt.update(&mut b, &bad).is_err());
                assert!(
                    matches!(opt.last_error(), Some(Error::NonFinite { what }) if what == "the gradient of weight"),
                    "{:?}",
                    opt.last_error()
                );
                assert_eq!(b.weight.as_vec(), w0);
                assert_eq!(b.bias.as_vec(), b0);
                assert_eq!(opt.state(), state0);
            }
            // ... and the next good step works.
            let g = grads_at(&b, 100);
                opt.update(&mut b, &g).unwrap();
            assert!(opt.last_error().is_none());
            assert_ne!(b.weight.as_vec(), w0);
        }
    };
}

checkpoint_case!(checkpoint_f32, f32);
checkpoint_case!(checkpoint_f64, f64);

#[test]
fn unused_parameters_are_reported_and_nothing_moves() {
    let dev = Cpu::default();
    let mut model = dev.build_module::<(Linear<3, 4>, Linear<4, 2>), f64>();
    let mut opt = SdsAdam::new(&model, SdsAdamConfig::default()).unwrap();
    // Gradients for the first layer only (no alloc_grads): the second layer is unused.
    let x: Tensor<Rank2<2, 3>, f64, Cpu> = dev.sample_normal();
    let grads = model
        .0
        .forward(x.trace(Gradients::leaky()))
        .square()
        .mean()
        .backward();
    let before = model.0.weight.as_vec();
    match opt.step(&mut model, &grads) {
        Err(Error::UnusedParams(paths)) => assert_eq!(paths, ["1.weight", "1.bias"]),
        other => panic!("expected UnusedParams, got {other:?}"),
    }
    assert_eq!(model.0.weight.as_vec(), before);
    match opt.update(&mut model, &grads) {
        Err(OptimizerUpdateError::UnusedParams(u)) => assert_eq!(u.ids.len(), 2),
        other => panic!("expected UnusedParams, got {other:?}"),
    }
}

#[test]
fn wide_stiefel_tensor_is_refused_at_construction() {
    let dev = Cpu::default();
    let model = dev.build_module::<Linear<5, 3>, f32>(); // weight [3, 5]
    let err =
        SdsSgd::new_with_stiefel(&model, SdsSgdConfig::default(), |p| p == "weight").unwrap_err();
    assert_eq!(err, Error::NotTall { rows: 3, cols: 5 });
    let err =
        SdsSgd::new_with_stiefel(&model, SdsSgdConfig::default(), |p| p == "bias").unwrap_err();
    assert!(
        matches!(err, Error::NotAMatrix { ref path, .. } if path == "bias"),
        "{err}"
    );
}

#[test]
fn foreign_state_is_refused() {
    let dev = Cpu::default();
    let model = dev.build_module::<Linear<3, 4>, f64>();
    let mut opt = SdsAdam::new(&model, SdsAdamConfig::default()).unwrap();
    let mut state = OptimizerState::<f64>::default();
    state.tensors.insert("2.weight".into(), Default::default());
    assert!(matches!(opt.set_state(state), Err(Error::StateMismatch(_))));
    let mut state = OptimizerState::<f64>::default();
    let s = sds_lora::optim::RuleState::<f64> {
        first: vec![0.0; 5],
        ..Default::default()
    };
    state.tensors.insert("weight".into(), s);
    assert!(matches!(opt.set_state(state), Err(Error::StateMismatch(_))));
}

/// Step counters saturate: a restored state at `u64::MAX` steps takes further steps, on
/// both paths, with the basis-update step and the per-tensor step, SGD and Adam.
#[test]
fn step_counters_saturate_instead_of_overflowing() {
    use sds_lora::kernels::ComposedOps;
    use sds_lora::optim::AdapterStep;
    let dev = Cpu::seed_from_u64(21);
    use sds_lora::nn::builders;
    type Model = (
        builders::SdsLinear<12, 10, 3>,
        builders::SdsDiagLinear<10, 6, 2>,
    );
    let x: Tensor<Rank2<5, 12>, f64, Cpu> = dev.sample_normal();
    let grads_of = |m: &<Model as BuildOnDevice<Cpu, f64>>::Built| {
        m.forward(x.trace(m.alloc_grads()))
            .square()
            .mean()
            .backward()
    };
    for composed in [false, true] {
        for adapter_step in [AdapterStep::BasisUpdate, AdapterStep::PerTensor] {
            let mut adam_cfg = SdsAdamConfig::default();
            adam_cfg.stiefel.adapter_step = adapter_step;
            let mut sgd_cfg = SdsSgdConfig::default();
            sgd_cfg.stiefel.adapter_step = adapter_step;
            sgd_cfg.rule.momentum = Some(Momentum::Nesterov(0.9));
            let mut model = dev.build_module::<Model, f64>();
            let mut adam = SdsAdam::new(&model, adam_cfg).unwrap();
            let mut sgd = SdsSgd::new(&model, sgd_cfg).unwrap();
            if composed {
                adam.use_composed_ops(ComposedOps::new(&dev)).unwrap();
                sgd.use_composed_ops(ComposedOps::new(&dev)).unwrap();
            }
            let g = grads_of(&model);
            adam.step(&mut model, &g).unwrap();
            sgd.step(&mut model, &g).unwrap();
            let at_max = |mut s: sds_lora::optim::OptimizerState<f64>| {
                s.steps = u64::MAX;
                s.tensors.values_mut().for_each(|t| t.step = u64::MAX);
                s
            };
            adam.set_state(at_max(adam.state())).unwrap();
            sgd.set_state(at_max(sgd.state())).unwrap();
            for _ in 0..2 {
                let g = grads_of(&model);
                adam.step(&mut model, &g).unwrap();
                sgd.step(&mut model, &g).unwrap();
            }
            for s in [adam.state(), sgd.state()] {
                assert_eq!(s.steps, u64::MAX);
                assert!(s.tensors.values().all(|t| t.step == u64::MAX));
            }
            let core = model.0.core.as_vec();
            assert!(
                core.iter().all(|v| v.is_finite()),
                "{composed} {adapter_step:?}"
            );
        }
    }
}
