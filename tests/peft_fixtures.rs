//! Adapters written by Python's PEFT (`scripts/peft-fixtures.py`, committed under
//! `tests/fixtures/peft/`) imported into `SdsLinear` and `LoraLinear` models: the outputs
//! match the ones PEFT computed, within 1e-5 relative in f32.

use dfdx::prelude::*;
use safetensors::SafeTensors;
use sds_lora::nn::peft::{import_peft, read_peft, PeftAdapter, TargetModules};
use sds_lora::nn::{Adapter, LoraLinear, SdsLinear};
use sds_lora::optim::{AdapterStep, ParamGroups, SdsSgd, SdsSgdConfig, StiefelConfig};
use sds_lora::stiefel::{orthogonality_error, Retraction};
use std::path::PathBuf;

type Base = (Linear<6, 8>, ReLU, Linear<8, 8>, ReLU, Linear<8, 5>);
type BaseModel = <Base as BuildOnDevice<Cpu, f32>>::Built;
type Model<A, B, C> = (A, ReLU, B, ReLU, C);
type X = Tensor<Rank2<3, 6>, f32, Cpu>;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft")
}

/// The named `f32` tensors of a safetensors file.
fn tensors(path: PathBuf) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (k, v)
        })
        .collect()
}

/// PEFT's base model, weights from `base.safetensors`.
fn base(dev: &Cpu) -> BaseModel {
    let w = tensors(fixtures().join("base.safetensors"));
    let mut m = dev.build_module::<Base, f32>();
    m.0.weight.copy_from(&w["0.weight"]);
    m.0.bias.copy_from(&w["0.bias"]);
    m.2.weight.copy_from(&w["2.weight"]);
    m.2.bias.copy_from(&w["2.bias"]);
    m.4.weight.copy_from(&w["4.weight"]);
    m.4.bias.copy_from(&w["4.bias"]);
    m
}

fn adapted<A, B, C>(base: &BaseModel) -> Model<A, B, C>
where
    A: Adapter<6, 8, f32, Cpu>,
    B: Adapter<8, 8, f32, Cpu>,
    C: Adapter<8, 5, f32, Cpu>,
{
    (
        A::from_linear(&base.0).unwrap(),
        ReLU,
        B::from_linear(&base.2).unwrap(),
        ReLU,
        C::from_linear(&base.4).unwrap(),
    )
}

/// `max |got - want| / max |want|`.
fn relative_gap(got: &[f32], want: &[f32]) -> f32 {
    let gap = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    gap / want.iter().map(|v| v.abs()).fold(0.0f32, f32::max)
}

/// Imports the fixture `case` into `model` and compares its output with PEFT's.
fn check_outputs<M>(case: &str, mut model: M, dev: &Cpu) -> (M, PeftAdapter)
where
    M: Module<X, Output = Tensor<Rank2<3, 5>, f32, Cpu>> + TensorCollection<f32, Cpu>,
{
    let dir = fixtures().join(case);
    let adapter = read_peft(&dir).unwrap();
    import_peft(&mut model, &adapter).unwrap();
    let io = tensors(dir.join("io.safetensors"));
    let mut x: X = dev.zeros();
    x.copy_from(&io["x"]);
    let got = model.forward(x).as_vec();
    let gap = relative_gap(&got, &io["y"]);
    let layer = match std::any::type_name::<M>().contains("SdsLinear") {
        true => "SdsLinear",
        false => "LoraLinear",
    };
    println!("{case} into {layer}: relative gap {gap:.2e}");
    assert!(gap <= 1e-5, "{case}: relative gap {gap:e}");
    (model, adapter)
}

type Sds4 =
    Model<SdsLinear<6, 8, 4, f32, Cpu>, SdsLinear<8, 8, 4, f32, Cpu>, SdsLinear<8, 5, 4, f32, Cpu>>;
type Lora4 = Model<
    LoraLinear<6, 8, 4, f32, Cpu>,
    LoraLinear<8, 8, 4, f32, Cpu>,
    LoraLinear<8, 5, 4, f32, Cpu>,
>;

#[test]
fn peft_adapters_give_peft_outputs_in_sds_and_lora_models() {
    let dev = Cpu::default();
    let base = base(&dev);
    for case in ["default", "trained", "rslora"] {
        check_outputs(case, adapted::<_, _, _>(&base) as Sds4, &dev);
        check_outputs(case, adapted::<_, _, _>(&base) as Lora4, &dev);
    }
    // Per-layer ranks and alphas from rank_pattern / alpha_pattern.
    type SdsRanks = Model<
        SdsLinear<6, 8, 2, f32, Cpu>,
        SdsLinear<8, 8, 4, f32, Cpu>,
        SdsLinear<8, 5, 3, f32, Cpu>,
    >;
    type LoraRanks = Model<
        LoraLinear<6, 8, 2, f32, Cpu>,
        LoraLinear<8, 8, 4, f32, Cpu>,
        LoraLinear<8, 5, 3, f32, Cpu>,
    >;
    let (sds, adapter) = check_outputs("ranks", adapted::<_, _, _>(&base) as SdsRanks, &dev);
    check_outputs("ranks", adapted::<_, _, _>(&base) as LoraRanks, &dev);
    assert_eq!((sds.0.alpha, sds.2.alpha, sds.4.alpha), (8.0, 16.0, 8.0));
    assert_eq!(adapter.pairs["4"].a.nrows(), 3);
}

#[test]
fn peft_config_forms_are_read_as_peft_reads_them() {
    let trained = read_peft(fixtures().join("trained")).unwrap();
    assert_eq!(
        trained.config.target_modules,
        TargetModules::Pattern("[024]".into())
    );
    assert_eq!(trained.pairs.keys().collect::<Vec<_>>(), ["0", "2", "4"]);
    let rslora = read_peft(fixtures().join("rslora")).unwrap();
    assert!(rslora.config.use_rslora);
    assert_eq!(
        rslora.pairs["2"].scaling,
        sds_lora::nn::Scaling::RankStabilized
    );
}

/// PEFT starts every adapter at `lora_B = 0`: the imported bases are still orthonormal,
/// `dW` is exactly zero, and the adapter trains under every step, Cayley's included.
#[test]
fn peft_default_init_imports_orthonormal_bases_that_train() {
    let dev = Cpu::seed_from_u64(5);
    let base = base(&dev);
    for step in [AdapterStep::BasisUpdate, AdapterStep::PerTensor] {
        let (mut model, _) = check_outputs("default", adapted::<_, _, _>(&base) as Sds4, &dev);
        for err in [
            orthogonality_error(&model.0.basis_out),
            orthogonality_error(&model.2.basis_in),
            orthogonality_error(&model.4.basis_out),
        ] {
            assert!(err <= 1e-6, "orthogonality error {err:e}");
        }
        assert!(model
            .2
            .delta_weight()
            .unwrap()
            .as_vec()
            .iter()
            .all(|&v| v == 0.0));
        let cfg = SdsSgdConfig {
            groups: ParamGroups::uniform(0.05),
            stiefel: StiefelConfig {
                adapter_step: step,
                retraction: Retraction::Cayley,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut opt = SdsSgd::new(&model, cfg).unwrap();
        for _ in 0..20 {
            let x: X = dev.sample_normal();
            let y: Tensor<Rank2<3, 5>, f32, Cpu> = dev.sample_normal();
            let g = mse_loss(model.forward(x.trace(model.alloc_grads())), y).backward();
            opt.step(&mut model, &g).unwrap();
        }
        let dw: f32 = model
            .2
            .delta_weight()
            .unwrap()
            .as_vec()
            .iter()
            .map(|v| v * v)
            .sum();
        assert!(
            dw.sqrt() > 1e-3,
            "{step:?}: the adapter did not train, ||dW|| = {}",
            dw.sqrt()
        );
        assert!(orthogonality_error(&model.2.basis_out) <= 1e-5);
    }
}
