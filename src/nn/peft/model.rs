//! The model side of PEFT interchange: a model's adapter layers as LoRA pairs (export),
//! and LoRA pairs written into a model's adapter layers (import).

use super::config::{is_dotted_suffix, PeftConfig, TargetModules};
use super::file::write;
use super::{LoraPair, PeftAdapter};
use crate::kernels::Real;
use crate::nn::init::factor_lora_pair;
use crate::nn::Scaling;
use crate::optim::groups::{BASIS_IN_NAME, BASIS_OUT_NAME, CORE_NAME, SCALES_NAME};
use crate::optim::walk::{read_f64, write_f64, HostValue};
use crate::Error;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use num_traits::{NumCast, ToPrimitive};
use safetensors::tensor::Dtype as SafeDtype;
use std::collections::BTreeMap;
use std::path::Path;

/// The adapter tensors and settings found under one layer path.
#[derive(Debug, Default)]
struct LayerParts {
    tensors: BTreeMap<&'static str, (Vec<usize>, Vec<f64>)>,
    alpha: Option<f64>,
    scaling: Option<Scaling>,
}

const ADAPTER_TENSORS: [&str; 6] = [
    BASIS_OUT_NAME,
    CORE_NAME,
    SCALES_NAME,
    BASIS_IN_NAME,
    "lora_a",
    "lora_b",
];

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('.') {
        Some((prefix, name)) => (prefix, name),
        None => ("", path),
    }
}

/// The adapter tensors and scalars of `model`, by layer path (layers without adapter
/// tensors left out).
fn collect<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &M,
) -> BTreeMap<String, LayerParts> {
    let wanted = |path: &str| {
        let name = split(path).1;
        ADAPTER_TENSORS.contains(&name) || name == "alpha" || name == "scaling"
    };
    let mut layers: BTreeMap<String, LayerParts> = BTreeMap::new();
    for (path, value) in read_f64(model, wanted) {
        let (prefix, name) = split(&path);
        let parts = layers.entry(prefix.to_string()).or_default();
        match (name, value) {
            ("alpha", HostValue::Scalar(v)) => parts.alpha = Some(v),
            ("scaling", HostValue::Scalar(v)) => parts.scaling = <Scaling as NumCast>::from(v),
            (name, HostValue::Tensor(dims, data)) => {
                if let Some(&name) = ADAPTER_TENSORS.iter().find(|&&n| n == name) {
                    parts.tensors.insert(name, (dims, data));
                }
            }
            _ => {}
        }
    }
    layers.retain(|_, p| !p.tensors.is_empty());
    layers
}

fn matrix((dims, data): &(Vec<usize>, Vec<f64>)) -> DMatrix<f64> {
    DMatrix::from_row_slice(dims[0], dims[1], data)
}

/// Every adapter layer of `model` as a LoRA pair: `SdsLinear` gives `B = U S` (`U diag(s)`
/// for a diagonal core), `A = V^T`; `LoraLinear` its own `B` and `A`.
pub fn lora_pairs<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &M,
) -> Result<BTreeMap<String, LoraPair>, Error> {
    let mut pairs = BTreeMap::new();
    for (prefix, parts) in collect(model) {
        let t = &parts.tensors;
        let core = match (t.get(CORE_NAME), t.get(SCALES_NAME)) {
            (Some(s), _) => Some(matrix(s)),
            (None, Some(s)) => Some(DMatrix::from_diagonal(&nalgebra::DVector::from_vec(
                s.1.clone(),
            ))),
            (None, None) => None,
        };
        let (b, a) = match (
            t.get(BASIS_OUT_NAME),
            core,
            t.get(BASIS_IN_NAME),
            t.get("lora_b"),
            t.get("lora_a"),
        ) {
            (Some(u), Some(s), Some(v), _, _) => (matrix(u) * s, matrix(v).transpose()),
            (_, _, _, Some(b), Some(a)) => (matrix(b), matrix(a)),
            _ => {
                return Err(Error::Invalid(format!(
                    "{prefix:?}: incomplete adapter layer"
                )))
            }
        };
        let pair = LoraPair {
            b,
            a,
            alpha: parts.alpha.unwrap_or(1.0),
            scaling: parts.scaling.unwrap_or_default(),
        };
        pairs.insert(prefix, pair);
    }
    Ok(pairs)
}

/// Writes `model`'s adapters to `dir` (created if needed) as PEFT's `save_pretrained`
/// does, so that `PeftModel.from_pretrained(base, dir)` loads them onto a PyTorch model
/// with the same layer paths: `adapter_model.safetensors` with
/// `base_model.model.<path>.lora_A.weight` (`[R, I]`) and `...lora_B.weight` (`[O, R]`)
/// in the model's float type, and an `adapter_config.json` whose `target_modules`,
/// `rank_pattern` and `alpha_pattern` select exactly these layers with their ranks and
/// alphas.
pub fn export_peft<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &M,
    dir: impl AsRef<Path>,
) -> Result<PeftConfig, Error> {
    let pairs = lora_pairs(model)?;
    let first = pairs
        .values()
        .next()
        .ok_or_else(|| Error::Invalid("the model holds no adapter layer to export".into()))?;
    let (r, alpha, scaling) = (first.a.nrows(), first.alpha, first.scaling);
    if pairs.values().any(|p| p.scaling != scaling) {
        return Err(Error::Invalid(
            "PEFT has one use_rslora for all layers; the layers' scalings differ".into(),
        ));
    }
    let paths: Vec<&String> = pairs.keys().collect();
    // A path that is a dotted suffix of another would select both in PEFT's list form.
    let shadows = |p: &str| {
        paths
            .iter()
            .any(|q| q.as_str() != p && is_dotted_suffix(p, q))
    };
    let exact = |p: &str| match shadows(p) {
        true => format!("^{}", regex::escape(p)),
        false => p.to_string(),
    };
    let target_modules = match paths.iter().any(|p| shadows(p)) {
        true => TargetModules::Pattern(
            paths
                .iter()
                .map(|p| regex::escape(p))
                .collect::<Vec<_>>()
                .join("|"),
        ),
        false => TargetModules::List(paths.iter().map(|p| p.to_string()).collect()),
    };
    let config = PeftConfig {
        peft_type: "LORA".into(),
        task_type: None,
        base_model_name_or_path: None,
        inference_mode: true,
        r,
        lora_alpha: alpha,
        target_modules,
        lora_dropout: 0.0,
        fan_in_fan_out: false,
        bias: "none".into(),
        use_rslora: scaling == Scaling::RankStabilized,
        modules_to_save: None,
        lora_bias: false,
        use_dora: false,
        rank_pattern: pairs
            .iter()
            .filter(|(_, p)| p.a.nrows() != r)
            .map(|(k, p)| (exact(k), p.a.nrows()))
            .collect(),
        alpha_pattern: pairs
            .iter()
            .filter(|(_, p)| p.alpha != alpha)
            .map(|(k, p)| (exact(k), p.alpha))
            .collect(),
    };
    let dtype = match std::mem::size_of::<E>() {
        4 => SafeDtype::F32,
        _ => SafeDtype::F64,
    };
    write(dir.as_ref(), &config, &pairs, dtype)?;
    Ok(config)
}

/// Loads `adapter` into `model`'s adapter layers of the same paths. Everything is checked
/// before anything is written, so on error the model is unchanged: each path must name an
/// adapter layer whose shapes take the pair (`lora_A: [R, I]`, `lora_B: [O, R]`), and the
/// pair's values and `alpha` must be finite. A `LoraLinear` takes `B` and `A` as they are;
/// an `SdsLinear` the exact factorisation `U S V^T = B A` with `S = diag(sigma)` (QR and a
/// Jacobi SVD of the `R x R` product of the R factors), its bases completed to orthonormal
/// columns where the pair has rank below `R` (PEFT's `lora_B = 0` start, say); both take
/// the pair's `alpha` and scaling.
pub fn import_peft<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &mut M,
    adapter: &PeftAdapter,
) -> Result<(), Error> {
    let layers = collect(&*model);
    let mut tensors = BTreeMap::new();
    let mut scalars = BTreeMap::new();
    for (path, pair) in &adapter.pairs {
        let parts = layers.get(path).ok_or_else(|| {
            Error::Invalid(format!(
                "the model has no adapter layer at {path:?} (its adapter layers: {:?})",
                layers.keys().collect::<Vec<_>>()
            ))
        })?;
        check_pair(path, pair, parts)?;
        let at = |name: &str| match path.as_str() {
            "" => name.to_string(),
            _ => format!("{path}.{name}"),
        };
        let row_major = |m: &DMatrix<f64>| m.transpose().as_slice().to_vec();
        if parts.tensors.contains_key(BASIS_OUT_NAME) {
            let (u, s, v) = factor_lora_pair(&pair.b, &pair.a, 1.0);
            tensors.insert(at(BASIS_OUT_NAME), row_major(&u));
            if parts.tensors.contains_key(CORE_NAME) {
                let core = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(s));
                tensors.insert(at(CORE_NAME), row_major(&core));
            } else {
                tensors.insert(at(SCALES_NAME), s);
            }
            tensors.insert(at(BASIS_IN_NAME), row_major(&v));
        } else {
            tensors.insert(at("lora_b"), row_major(&pair.b));
            tensors.insert(at("lora_a"), row_major(&pair.a));
        }
        scalars.insert(at("alpha"), pair.alpha);
        scalars.insert(at("scaling"), pair.scaling.to_f64().unwrap_or(0.0));
    }
    // Every shape was checked above.
    write_f64(model, &tensors, &scalars).map_err(Error::device)
}

/// Checks that `pair` is finite and fits the adapter layer `parts` at `path`.
fn check_pair(path: &str, pair: &LoraPair, parts: &LayerParts) -> Result<(), Error> {
    let finite = |m: &DMatrix<f64>| m.iter().all(|v| v.is_finite());
    if !finite(&pair.a) || !finite(&pair.b) || !pair.alpha.is_finite() {
        return Err(Error::NonFinite {
            what: format!("the LoRA pair (lora_A, lora_B or alpha) for layer {path:?}"),
        });
    }
    let dims = |name: &str| parts.tensors.get(name).map(|(d, _)| d.as_slice());
    let (o, r, i) = match (
        dims(BASIS_OUT_NAME),
        dims(BASIS_IN_NAME),
        dims("lora_b"),
        dims("lora_a"),
    ) {
        (Some(&[o, r]), Some(&[i, _]), _, _) | (_, _, Some(&[o, r]), Some(&[_, i])) => (o, r, i),
        _ => {
            return Err(Error::Invalid(format!(
                "{path:?}: incomplete adapter layer"
            )))
        }
    };
    let (a, b) = (pair.a.shape(), pair.b.shape());
    if a != (r, i) || b != (o, r) {
        let hint = match a == (i, r) {
            true => " (lora_A looks transposed)",
            false => "",
        };
        return Err(Error::Invalid(format!(
            "layer {path:?} (in {i}, out {o}, rank {r}) takes lora_A [{r}, {i}] and lora_B \
             [{o}, {r}]; the adapter has lora_A {a:?} and lora_B {b:?}{hint}"
        )));
    }
    Ok(())
}
