//! The basis-update step's paths and state, f64: host against composed path, checkpoints
//! that restore bit-identically (and one of one second moment per adapter continued per
//! direction), and a non-finite gradient refused with nothing changed.

mod basis_update;

use basis_update::*;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::kernels::ComposedOps;
use sds_lora::nn::{Adapter, SdsLinear};
use sds_lora::optim::{Momentum, Sds, SdsAdam, SdsAdamConfig, SdsConfig, SecondMomentPer};
use sds_lora::Error;

/// An optimizer of `model` with `cfg`, on the composed path where `composed`, else on the
/// host path.
fn on_path<C: SdsConfig>(model: &Layer, cfg: C, composed: bool) -> Sds<Layer, f64, Cpu, C> {
    let mut opt = Sds::new(model, cfg).unwrap();
    if composed {
        opt.use_composed_ops(ComposedOps::new(&Cpu::default()))
            .unwrap();
    }
    opt
}

/// Six steps of an optimizer on the host path, then on the composed path.
fn both_paths<C: SdsConfig + Copy>(l: &Layer, cfg: C) -> (Layer, Layer)
where
    Sds<Layer, f64, Cpu, C>: dfdx::optim::Optimizer<Layer, Cpu, f64>,
{
    (
        run(l, on_path(l, cfg, false), 6),
        run(l, on_path(l, cfg, true), 6),
    )
}

#[test]
fn host_and_composed_paths_agree() {
    let l = layer();
    let mut amsgrad = adam(0.02);
    amsgrad.rule.amsgrad = true;
    let nesterov = sgd(0.05, Some(Momentum::Nesterov(0.6)), 0.1);
    for (name, (a, b)) in [
        ("Nesterov", both_paths(&l, nesterov)),
        ("AMSGrad", both_paths(&l, amsgrad)),
    ] {
        // Relative: the Nesterov run grows `dW` to a norm near 1600, where the AVX-512
        // host kernels and dfdx's products (summing in other orders) differ by 3e-12.
        let dw = host(&a.delta_weight().unwrap());
        let gap = (&dw - host(&b.delta_weight().unwrap())).norm() / dw.norm();
        let basis_gap = (host(&a.basis_out) - host(&b.basis_out)).norm();
        assert!(
            gap <= 1e-12 && basis_gap <= 1e-12,
            "{name}: {gap:e} {basis_gap:e}"
        );
    }
}

#[test]
fn checkpoints_restore_bit_identically_on_both_paths() {
    let l = layer();
    for composed in [false, true] {
        let mut cfg = adam(0.02);
        cfg.rule.amsgrad = true;
        let build = |model: &Layer| on_path(model, cfg, composed);
        let (mut a, mut opt_a) = (l.clone(), build(&l));
        for _ in 0..3 {
            let g = gradients(&a);
            opt_a.update(&mut a, &g).unwrap();
        }
        let saved = serde_json::to_string(&opt_a.state()).unwrap();
        let (mut b, mut opt_b) = (a.clone(), build(&a));
        opt_b
            .set_state(serde_json::from_str(&saved).unwrap())
            .unwrap();
        for _ in 0..3 {
            let (ga, gb) = (gradients(&a), gradients(&b));
            opt_a.update(&mut a, &ga).unwrap();
            opt_b.update(&mut b, &gb).unwrap();
        }
        assert_eq!(bits(&a), bits(&b), "composed = {composed}");
        let core = &opt_a.state().tensors["core"];
        assert!(core.second_scalar > 0.0 && core.second_scalar_max >= core.second_scalar);
        assert_eq!(core.second_directions.len(), 2 * R * R);
        assert_eq!(core.step, 6);
    }
}

/// A checkpoint of one second moment per adapter (or one saved before the per-direction
/// moments existed) continues with every direction starting from that moment: as if it
/// held `v I` for the directions.
#[test]
fn a_per_adapter_checkpoint_continues_per_direction_from_its_moment() {
    let l = layer();
    let per_adapter = SdsAdamConfig {
        adapter_second_moment_per: SecondMomentPer::Adapter,
        ..adam(0.02)
    };
    let mut model = l.clone();
    let mut opt = SdsAdam::new(&model, per_adapter).unwrap();
    for _ in 0..3 {
        let g = gradients(&model);
        opt.update(&mut model, &g).unwrap();
    }
    let saved = opt.state();
    assert!(saved.tensors["core"].second_directions.is_empty());
    let mut filled = saved.clone();
    let core = filled.tensors.get_mut("core").unwrap();
    // v I on both sides: every direction reads v.
    let held = |v: f64| {
        let eye = DMatrix::<f64>::identity(R, R) * v;
        [eye.as_slice(), eye.as_slice()].concat()
    };
    core.second_directions = held(core.second_scalar);
    core.second_directions_max = held(core.second_scalar_max);
    let continued = [saved, filled].map(|state| {
        let mut m = model.clone();
        let mut opt = SdsAdam::new(&m, adam(0.02)).unwrap();
        opt.set_state(state).unwrap();
        let g = gradients(&m);
        opt.update(&mut m, &g).unwrap();
        assert_eq!(
            opt.state().tensors["core"].second_directions.len(),
            2 * R * R
        );
        m
    });
    // Equal to rounding (reading `v I` back through the frame costs an ulp or two), and
    // both moved.
    let values = |l: &Layer| [l.basis_out.as_vec(), l.core.as_vec(), l.basis_in.as_vec()].concat();
    let (a, b) = (values(&continued[0]), values(&continued[1]));
    let gap = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(gap < 1e-13, "fallback and v I differ by {gap:e}");
    assert_ne!(bits(&continued[0]), bits(&model));
}

/// A step with one second moment per adapter keeps the per-direction moments of earlier
/// steps, turned with the bases: switching back reads them where they belong.
#[test]
fn per_direction_moments_survive_steps_of_another_rule() {
    let l = layer();
    let mut model = l.clone();
    let mut opt = SdsAdam::new(&model, adam(0.02)).unwrap();
    for _ in 0..2 {
        let g = gradients(&model);
        opt.update(&mut model, &g).unwrap();
    }
    let held = opt.state().tensors["core"].second_directions.clone();
    opt.cfg.adapter_second_moment_per = SecondMomentPer::Adapter;
    let g = gradients(&model);
    opt.update(&mut model, &g).unwrap();
    let kept = &opt.state().tensors["core"].second_directions;
    assert_eq!(kept.len(), held.len());
    assert!(kept != &held, "turned with the bases");
    // Turning keeps each matrix's trace (the sum of the directions' moments) to rounding,
    // up to the bases' turn out of their old span.
    let trace = |h: &[f64]| (0..R).map(|j| h[j * (R + 1)]).sum::<f64>();
    let (before, after) = (trace(&held), trace(kept));
    assert!(
        (after - before).abs() <= 0.05 * before,
        "{before:e} -> {after:e}"
    );
}

/// A step refused late, after the rule has read the carried moments (finite gradients of
/// 1e200 overflow the Gram matrix of `K`), leaves the parameters and the state, moments
/// included, as they were, on both paths; the next good step is the one it would have been.
#[test]
fn a_step_refused_after_reading_the_moments_changes_nothing() {
    let l = layer();
    for composed in [false, true] {
        let build = |model: &Layer| on_path(model, adam(0.02), composed);
        let (mut model, mut twin) = (l.clone(), l.clone());
        let (mut opt, mut twin_opt) = (build(&model), build(&twin));
        for (m, o) in [(&mut model, &mut opt), (&mut twin, &mut twin_opt)] {
            let g = gradients(m);
            o.update(m, &g).unwrap();
        }
        let (before, state) = (bits(&model), opt.state());
        assert!(
            !state.tensors["basis_out"].first.is_empty(),
            "a moment is carried"
        );
        let mut huge = gradients(&model);
        let scale = |g: &mut Vec<f64>| g.iter_mut().for_each(|x| *x *= 1e200);
        scale(huge.get_or_alloc_mut(&model.basis_out).unwrap());
        scale(huge.get_or_alloc_mut(&model.basis_in).unwrap());
        let err = opt.step(&mut model, &huge).unwrap_err();
        assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
        assert_eq!(bits(&model), before, "parameters unchanged");
        assert_eq!(opt.state(), state, "state unchanged");
        for (m, o) in [(&mut model, &mut opt), (&mut twin, &mut twin_opt)] {
            let g = gradients(m);
            o.update(m, &g).unwrap();
        }
        assert_eq!(bits(&model), bits(&twin), "composed: {composed}");
        assert_eq!(opt.state(), twin_opt.state());
    }
}

thread_local! {
    /// Whether `Flaky` panics when the optimizer walks it.
    static PANIC_ON_WALK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The test layer behind a walk that panics on request (a user's module whose
/// `TensorCollection` panics inside a step).
#[derive(Clone)]
struct Flaky<E: Dtype, D: Device<E>>(SdsLinear<I, O, R, E, D>);

impl<E: sds_lora::kernels::Real, D: Device<E>> TensorCollection<E, D> for Flaky<E, D> {
    type To<E2: Dtype, D2: Device<E2>> = Flaky<E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        assert!(!PANIC_ON_WALK.get(), "the walk panics");
        visitor.visit_fields(Self::module("0", |s| &s.0, |s| &mut s.0), Flaky)
    }
}

/// A panic inside the host step (here from the module's walk, after the stored states
/// were lent to the step) leaves the states where they were.
#[test]
fn a_panic_inside_the_step_keeps_the_state() {
    let mut model = Flaky(layer());
    let mut opt = SdsAdam::new(&model, adam(0.02)).unwrap();
    let g = gradients(&model.0);
    opt.step(&mut model, &g).unwrap();
    let state = opt.state();
    assert!(
        !state.tensors["0.basis_out"].first.is_empty(),
        "a moment is carried"
    );
    let g = gradients(&model.0);
    PANIC_ON_WALK.set(true);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| opt.step(&mut model, &g)));
    PANIC_ON_WALK.set(false);
    assert!(outcome.is_err(), "the step panicked");
    assert_eq!(opt.state(), state);
}

#[test]
fn a_non_finite_gradient_is_refused_and_changes_nothing() {
    let l = layer();
    for composed in [false, true] {
        for (name, at) in [("basis_out", 0usize), ("core", 1), ("basis_in", 2)] {
            let mut model = l.clone();
            let mut opt = on_path(
                &model,
                sgd(0.05, Some(Momentum::Classic(0.9)), 0.0),
                composed,
            );
            let g = gradients(&model);
            opt.update(&mut model, &g).unwrap();
            let (before, state) = (bits(&model), opt.state());
            let mut g = gradients(&model);
            match at {
                0 => g.get_or_alloc_mut(&model.basis_out).unwrap()[2] = f64::NAN,
                1 => g.get_or_alloc_mut(&model.core).unwrap()[4] = f64::INFINITY,
                _ => g.get_or_alloc_mut(&model.basis_in).unwrap()[0] = f64::NAN,
            }
            let err = opt.step(&mut model, &g).unwrap_err().to_string();
            assert!(err.contains(name), "{name} named: {err}");
            assert_eq!(bits(&model), before, "{name}: parameters unchanged");
            assert_eq!(opt.state(), state, "{name}: state unchanged");
        }
    }
}
