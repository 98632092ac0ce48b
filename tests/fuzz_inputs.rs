//! Fuzzing the importers and `set_state`: mutated adapter files (bytes, shapes, JSON
//! fields) and mutated checkpoints (fields and serialised bytes) give an error or a valid
//! result, never a panic, and after an error the model and the optimizer are unchanged.
//! 10,500 cases in all (the counts are in each `ProptestConfig`).

use dfdx::prelude::*;
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use sds_lora::nn::builders;
use sds_lora::nn::peft::{import_peft, PeftAdapter, KEY_PREFIX};
use sds_lora::optim::{OptimizerState, ParamGroups, RuleState, SdsAdam, SdsAdamConfig};
use sds_lora::stiefel::orthogonality_error;
use serde_json::{json, Value};

type Sds = (
    builders::SdsLinear<6, 5, 2>,
    Tanh,
    builders::SdsLinear<5, 3, 2>,
);
type Lora = (
    builders::LoraLinear<6, 5, 2>,
    Tanh,
    builders::LoraLinear<5, 3, 2>,
);
type SdsModel = <Sds as BuildOnDevice<Cpu, f64>>::Built;
type LoraModel = <Lora as BuildOnDevice<Cpu, f64>>::Built;

fn sds_values(m: &SdsModel) -> Vec<Vec<f64>> {
    vec![
        m.0.basis_out.as_vec(),
        m.0.core.as_vec(),
        m.0.basis_in.as_vec(),
        m.2.basis_out.as_vec(),
        m.2.core.as_vec(),
        m.2.basis_in.as_vec(),
        vec![m.0.alpha, m.2.alpha],
    ]
}

fn lora_values(m: &LoraModel) -> Vec<Vec<f64>> {
    vec![
        m.0.lora_a.as_vec(),
        m.0.lora_b.as_vec(),
        m.2.lora_a.as_vec(),
        m.2.lora_b.as_vec(),
        vec![m.0.alpha, m.2.alpha],
    ]
}

/// A valid adapter for both models: its config and its safetensors bytes.
fn valid_adapter() -> (Value, Vec<u8>) {
    let config = json!({
        "peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["0", "2"],
        "use_rslora": false, "bias": "none", "rank_pattern": {}, "alpha_pattern": {"2": 3}
    });
    (
        config,
        weights(&[("0", [2, 6], [5, 2]), ("2", [2, 5], [3, 2])]),
    )
}

/// Safetensors bytes with `lora_A`/`lora_B` of the given shapes per layer path.
fn weights(layers: &[(&str, [usize; 2], [usize; 2])]) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = layers
        .iter()
        .flat_map(|(path, a, b)| {
            [("lora_A", a), ("lora_B", b)].map(|(f, shape)| {
                let n = shape[0] * shape[1];
                let v: Vec<u8> = (0..n)
                    .flat_map(|k| (((k * 5 % 7) as f32 - 3.0) / 4.0).to_le_bytes())
                    .collect();
                (format!("{KEY_PREFIX}{path}.{f}.weight"), shape.to_vec(), v)
            })
        })
        .collect();
    let views: Vec<_> = data
        .iter()
        .map(|(k, s, v)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), v).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, &None).unwrap()
}

/// Imports `config` + `weights` into both model kinds: an error leaves each model as it
/// was; success leaves orthonormal bases and finite values.
fn import_both(config: &str, weights: &[u8]) {
    let Ok(adapter) = PeftAdapter::from_bytes(config, weights) else {
        return;
    };
    let dev = Cpu::seed_from_u64(1);
    let mut sds = dev.build_module::<Sds, f64>();
    let before = sds_values(&sds);
    match import_peft(&mut sds, &adapter) {
        Err(_) => assert_eq!(sds_values(&sds), before),
        Ok(()) => {
            assert!(orthogonality_error(&sds.0.basis_out) < 1e-10);
            assert!(orthogonality_error(&sds.2.basis_in) < 1e-10);
            assert!(sds_values(&sds).iter().flatten().all(|v| v.is_finite()));
        }
    }
    let mut lora = dev.build_module::<Lora, f64>();
    let before = lora_values(&lora);
    if import_peft(&mut lora, &adapter).is_err() {
        assert_eq!(lora_values(&lora), before);
    }
}

/// A byte-level mutation: flip, overwrite, insert, delete or truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Flip(i, b) if !bytes.is_empty() => bytes[i % n] ^= b,
        Mutation::Set(i, b) if !bytes.is_empty() => bytes[i % n] = b,
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Delete(i) if !bytes.is_empty() => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        _ => {}
    }
}

/// A JSON value a config field might be given.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..6).prop_map(|v| json!(v)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1e308)),
        Just(json!(0.5)),
        Just(json!("NaN")),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(["0", "2"])),
        Just(json!(["fc"])),
        Just(json!([])),
        Just(json!("0|2")),
        Just(json!("(")),
        Just(json!("all-linear")),
        Just(json!({"0": 1})),
        Just(json!({"2": 0})),
        Just(json!({"(": 2})),
        Just(json!("none")),
        Just(json!("all")),
        Just(json!("LORA")),
    ]
}

const FIELDS: [&str; 10] = [
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "use_rslora",
    "bias",
    "rank_pattern",
    "alpha_pattern",
    "use_dora",
    "fan_in_fan_out",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Byte mutations of the weights file.
    #[test]
    fn mutated_weight_bytes(ms in prop::collection::vec(mutation(), 1..4)) {
        let (config, mut w) = valid_adapter();
        ms.iter().for_each(|m| mutate(&mut w, m));
        import_both(&config.to_string(), &w);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2500, ..ProptestConfig::default() })]

    /// Config fields set to odd values or removed, and byte mutations of the JSON text.
    #[test]
    fn mutated_configs(
        edits in prop::collection::vec((0..FIELDS.len(), prop::option::of(field_value())), 0..4),
        ms in prop::collection::vec(mutation(), 0..3),
    ) {
        let (mut config, w) = valid_adapter();
        for (field, value) in edits {
            let obj = config.as_object_mut().unwrap();
            match value {
                Some(v) => { obj.insert(FIELDS[field].into(), v); }
                None => { obj.remove(FIELDS[field]); }
            }
        }
        let mut text = config.to_string().into_bytes();
        ms.iter().for_each(|m| mutate(&mut text, m));
        import_both(&String::from_utf8_lossy(&text), &w);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Factors of any shape, under the model's paths or others.
    #[test]
    fn mutated_shapes(
        a in (1usize..8, 1usize..8),
        b in (1usize..8, 1usize..8),
        path in prop_oneof![Just("0"), Just("2"), Just("1"), Just("")],
    ) {
        let (config, _) = valid_adapter();
        let mut layers = vec![(path, [a.0, a.1], [b.0, b.1])];
        if path != "2" {
            layers.push(("2", [2, 5], [3, 2]));
        }
        let w = weights(&layers);
        import_both(&config.to_string(), &w);
    }
}

/// A model, an optimizer that took two steps, and its state.
fn trained() -> (SdsModel, SdsAdam<SdsModel, f64, Cpu>, OptimizerState<f64>) {
    let dev = Cpu::seed_from_u64(3);
    let mut m = dev.build_module::<Sds, f64>();
    let cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(1e-2),
        ..Default::default()
    };
    let mut opt = SdsAdam::new(&m, cfg).unwrap();
    for _ in 0..2 {
        let x: Tensor<Rank2<3, 6>, f64, Cpu> = dev.sample_normal();
        let g = m
            .forward(x.trace(m.alloc_grads()))
            .square()
            .mean()
            .backward();
        opt.step(&mut m, &g).unwrap();
    }
    let state = opt.state();
    (m, opt, state)
}

/// `set_state(state)`: on error the optimizer's state is unchanged; on success a step
/// runs (to an error or not) without panicking.
fn restore(state: OptimizerState<f64>) {
    let (mut m, mut opt, good) = trained();
    match opt.set_state(state) {
        Err(_) => assert_eq!(opt.state(), good),
        Ok(()) => {
            let x: Tensor<Rank2<3, 6>, f64, Cpu> = Cpu::seed_from_u64(4).sample_normal();
            let g = m
                .forward(x.trace(m.alloc_grads()))
                .square()
                .mean()
                .backward();
            let before = sds_values(&m);
            if opt.step(&mut m, &g).is_err() {
                assert_eq!(sds_values(&m), before);
            }
        }
    }
}

/// A change to one field of a saved state.
#[derive(Debug, Clone)]
enum StateEdit {
    Value(usize, usize, usize, f64),
    Resize(usize, usize, usize),
    Scalar(usize, bool, f64),
    Steps(usize, u64),
    Shape(usize, Vec<usize>),
    Rename(usize, String),
}

fn state_edit() -> impl Strategy<Value = StateEdit> {
    let value = prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(1e300),
        -10.0..10.0f64
    ];
    prop_oneof![
        (any::<usize>(), 0..5usize, any::<usize>(), value.clone())
            .prop_map(|(t, b, i, v)| StateEdit::Value(t, b, i, v)),
        (any::<usize>(), 0..5usize, 0..80usize).prop_map(|(t, b, n)| StateEdit::Resize(t, b, n)),
        (any::<usize>(), any::<bool>(), value).prop_map(|(t, m, v)| StateEdit::Scalar(t, m, v)),
        (any::<usize>(), any::<u64>()).prop_map(|(t, s)| StateEdit::Steps(t, s)),
        (any::<usize>(), prop::collection::vec(0..12usize, 0..3))
            .prop_map(|(t, s)| StateEdit::Shape(t, s)),
        (any::<usize>(), "[0-9a-z_.]{0,12}").prop_map(|(t, p)| StateEdit::Rename(t, p)),
    ]
}

/// Buffer `b` (modulo 5) of a tensor's saved state: the moments, elementwise and per
/// singular direction.
fn buffer(s: &mut RuleState<f64>, b: usize) -> &mut Vec<f64> {
    match b % 5 {
        0 => &mut s.first,
        1 => &mut s.second,
        2 => &mut s.second_max,
        3 => &mut s.second_directions,
        _ => &mut s.second_directions_max,
    }
}

fn apply(state: &mut OptimizerState<f64>, edit: &StateEdit) {
    let paths: Vec<String> = state.tensors.keys().cloned().collect();
    let at = |t: usize| paths[t % paths.len()].clone();
    match edit {
        StateEdit::Value(t, b, i, v) => {
            let buf = buffer(state.tensors.get_mut(&at(*t)).unwrap(), *b);
            if !buf.is_empty() {
                let n = buf.len();
                buf[i % n] = *v;
            }
        }
        StateEdit::Resize(t, b, n) => {
            buffer(state.tensors.get_mut(&at(*t)).unwrap(), *b).resize(*n, 0.5);
        }
        StateEdit::Scalar(t, max, v) => {
            let s = state.tensors.get_mut(&at(*t)).unwrap();
            *(if *max {
                &mut s.second_scalar_max
            } else {
                &mut s.second_scalar
            }) = *v;
        }
        StateEdit::Steps(t, n) => {
            state.steps = *n;
            state.tensors.get_mut(&at(*t)).unwrap().step = *n;
        }
        StateEdit::Shape(t, dims) => {
            state.shapes.insert(at(*t), dims.clone());
        }
        StateEdit::Rename(t, p) => {
            let s = state.tensors.remove(&at(*t)).unwrap();
            state.tensors.insert(p.clone(), s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Edits of a saved state's fields.
    #[test]
    fn mutated_state_fields(edits in prop::collection::vec(state_edit(), 1..4)) {
        let (_, _, mut state) = trained();
        edits.iter().for_each(|e| apply(&mut state, e));
        restore(state);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Byte mutations of a state saved as JSON.
    #[test]
    fn mutated_state_bytes(ms in prop::collection::vec(mutation(), 1..4)) {
        let (_, _, state) = trained();
        let mut bytes = serde_json::to_vec(&state).unwrap();
        ms.iter().for_each(|m| mutate(&mut bytes, m));
        if let Ok(state) = serde_json::from_slice::<OptimizerState<f64>>(&bytes) {
            restore(state);
        }
    }
}
