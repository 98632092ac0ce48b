//! Writes trained SDS-LoRA adapters for Python's PEFT to load: the export half of
//! `scripts/peft-roundtrip.sh`, which checks them with the real library.
//!
//! For each case (`plain`: rank 4 everywhere; `rslora`: rank-stabilised scaling;
//! `ranks`: ranks 2, 4, 3 and alpha 16 on the middle layer) it builds the MLP
//! `Linear(6, 8), ReLU, Linear(8, 8), ReLU, Linear(8, 5)`, adapts every `Linear` with an
//! `SdsLinear`, trains 30 steps of `SdsAdam` on random regression data, and writes into
//! `<out>/<case>/`: the adapter ([`export_peft`]), the base weights `base.safetensors`
//! (`<i>.weight`, `<i>.bias`, as PyTorch's `nn.Sequential` names them) and
//! `io.safetensors` (an input `x` and the crate's output `y`). It prints one JSON line per
//! case.
//!
//! `cargo run --release --example peft_export -- <out>`

use dfdx::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use sds_lora::nn::peft::export_peft;
use sds_lora::nn::{Adapter, Scaling, SdsLinear};
use sds_lora::optim::{ParamGroups, SdsAdam, SdsAdamConfig};
use std::path::Path;

type Base = (Linear<6, 8>, ReLU, Linear<8, 8>, ReLU, Linear<8, 5>);
type X = Tensor<Rank2<16, 6>, f32, Cpu>;
type Y = Tensor<Rank2<16, 5>, f32, Cpu>;

/// Little-endian `f32` bytes of a tensor.
fn bytes<S: Shape>(t: &Tensor<S, f32, Cpu>) -> Vec<u8> {
    t.as_vec().iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes named `f32` tensors (bytes and shape) to a safetensors file.
fn save(
    path: &Path,
    tensors: &[(&str, Vec<usize>, Vec<u8>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let views = tensors
        .iter()
        .map(|(k, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (k.to_string(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, &None, path)?;
    Ok(())
}

/// Builds, trains and exports one case; returns the JSON line.
fn case<const R0: usize, const R1: usize, const R2: usize>(
    out: &Path,
    name: &str,
    scaling: Scaling,
    middle_alpha: Option<f64>,
) -> Result<String, Box<dyn std::error::Error>> {
    let dev = Cpu::seed_from_u64(11);
    let base = dev.build_module::<Base, f32>();
    let mut model = (
        SdsLinear::<6, 8, R0, f32, Cpu>::from_linear(&base.0)?,
        ReLU,
        SdsLinear::<8, 8, R1, f32, Cpu>::from_linear(&base.2)?,
        ReLU,
        SdsLinear::<8, 5, R2, f32, Cpu>::from_linear(&base.4)?,
    );
    model.0.scaling = scaling;
    model.2.scaling = scaling;
    model.4.scaling = scaling;
    if let Some(alpha) = middle_alpha {
        model.2.alpha = alpha;
    }
    let cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(3e-2),
        ..Default::default()
    };
    let mut opt = SdsAdam::new(&model, cfg)?;
    let (x, y): (X, Y) = (dev.sample_normal(), dev.sample_normal());
    for _ in 0..30 {
        let g = mse_loss(model.forward(x.trace(model.alloc_grads())), y.clone()).backward();
        opt.step(&mut model, &g)?;
    }
    let dir = out.join(name);
    let config = export_peft(&model, &dir)?;
    let mut weights = Vec::new();
    for (i, w, b) in [
        (0, bytes(&base.0.weight), bytes(&base.0.bias)),
        (2, bytes(&base.2.weight), bytes(&base.2.bias)),
        (4, bytes(&base.4.weight), bytes(&base.4.bias)),
    ] {
        let (o, inp) = [(8, 6), (8, 8), (5, 8)][i / 2];
        weights.push((format!("{i}.weight"), vec![o, inp], w));
        weights.push((format!("{i}.bias"), vec![o], b));
    }
    let named: Vec<_> = weights
        .iter()
        .map(|(k, s, b)| (k.as_str(), s.clone(), b.clone()))
        .collect();
    save(&dir.join("base.safetensors"), &named)?;
    let y_out = model.forward(x.clone());
    save(
        &dir.join("io.safetensors"),
        &[
            ("x", vec![16, 6], bytes(&x)),
            ("y", vec![16, 5], bytes(&y_out)),
        ],
    )?;
    let dw: f32 = model.2.delta_weight()?.as_vec().iter().map(|v| v * v).sum();
    Ok(format!(
        r#"{{"case":"{name}","dir":"{}","r":{},"use_rslora":{},"rank_pattern":{},"alpha_pattern":{},"middle_dw_norm":{:.4}}}"#,
        dir.display(),
        config.r,
        config.use_rslora,
        serde_json::to_string(&config.rank_pattern)?,
        serde_json::to_string(&config.alpha_pattern)?,
        dw.sqrt()
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: peft_export <out-dir>")?;
    let out = Path::new(&out);
    for line in [
        case::<4, 4, 4>(out, "plain", Scaling::Standard, None)?,
        case::<4, 4, 4>(out, "rslora", Scaling::RankStabilized, None)?,
        case::<2, 4, 3>(out, "ranks", Scaling::Standard, Some(16.0))?,
    ] {
        println!("{line}");
    }
    Ok(())
}
