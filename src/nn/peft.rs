//! PEFT interchange: export a model's adapters as a rank-R LoRA pair per layer in
//! safetensors with PEFT's key names and an `adapter_config.json`, and load them back.

use super::core::{CORE_NAME, SCALES_NAME};
use super::init::factor_lora_pair;
use super::options::Scaling;
use crate::kernels::Real;
use crate::optim::walk::{walk_mut, walk_ref};
use crate::Error;
use dfdx::nn::tensor_collection::{
    ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
    ViewTensorRef,
};
use dfdx::prelude::*;
use nalgebra::DMatrix;
use num_traits::{NumCast, ToPrimitive};
use safetensors::tensor::{Dtype as SafeDtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The weights file PEFT reads.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The config file PEFT reads.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// PEFT's `adapter_config.json` (the fields this crate writes and reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `"LORA"`.
    pub peft_type: String,
    /// The rank (of the first layer; others in `rank_pattern`).
    pub r: usize,
    /// `alpha` (of the first layer; others in `alpha_pattern`).
    pub lora_alpha: f64,
    /// Dotted paths of the adapted layers.
    pub target_modules: Vec<String>,
    /// `c = alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// Always `"none"`: biases are frozen.
    pub bias: String,
    /// Ranks that differ from `r`, by path.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Alphas that differ from `lora_alpha`, by path.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
}

/// One layer's update `dW = scale B A`, in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// `B: [O, R]`.
    pub b: DMatrix<f64>,
    /// `A: [R, I]`.
    pub a: DMatrix<f64>,
    /// `alpha` of the layer.
    pub alpha: f64,
    /// How the scaling follows from `alpha`.
    pub scaling: Scaling,
}

impl LoraPair {
    /// `dW = c B A`.
    pub fn delta_weight(&self) -> DMatrix<f64> {
        &self.b * &self.a * self.scaling.factor(self.alpha, self.a.nrows())
    }
}

/// A PEFT adapter: its config and one pair per adapted layer, by dotted path.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    /// The config.
    pub config: PeftConfig,
    /// `(B, A)` per layer path.
    pub pairs: BTreeMap<String, LoraPair>,
}

/// The adapter tensors and settings found under one layer path.
#[derive(Debug, Default)]
struct LayerParts {
    tensors: BTreeMap<&'static str, (Vec<usize>, Vec<f64>)>,
    alpha: Option<f64>,
    scaling: Option<Scaling>,
}

const ADAPTER_TENSORS: [&str; 6] = [
    "basis_out",
    CORE_NAME,
    SCALES_NAME,
    "basis_in",
    "lora_a",
    "lora_b",
];

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('.') {
        Some((prefix, name)) => (prefix, name),
        None => ("", path),
    }
}

/// Collects adapter tensors and scalars by layer path.
struct Collect(BTreeMap<String, LayerParts>);

impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Collect {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, path): (&Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
        let (prefix, name) = split(&path);
        if let Some(&name) = ADAPTER_TENSORS.iter().find(|&&n| n == name) {
            let dims = t.shape().concrete().into_iter().collect();
            let data = t.as_vec().into_iter().map(Real::to_f64).collect();
            let parts = self.0.entry(prefix.to_string()).or_default();
            parts.tensors.insert(name, (dims, data));
        }
        Ok(None)
    }

    fn visit_scalar<N: NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, path): (&N, String),
    ) -> Result<Option<N>, D::Err> {
        let (prefix, name) = split(&path);
        let value = n.to_f64();
        match (name, value) {
            ("alpha", Some(v)) => self.0.entry(prefix.to_string()).or_default().alpha = Some(v),
            ("scaling", Some(v)) => {
                self.0.entry(prefix.to_string()).or_default().scaling =
                    <Scaling as NumCast>::from(v)
            }
            _ => {}
        }
        Ok(None)
    }
}

fn collect<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &M,
) -> BTreeMap<String, LayerParts> {
    let mut v = Collect(BTreeMap::new());
    walk_ref(model, &mut v);
    v.0.retain(|_, p| !p.tensors.is_empty());
    v.0
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
            t.get("basis_out"),
            core,
            t.get("basis_in"),
            t.get("lora_b"),
            t.get("lora_a"),
        ) {
            (Some(u), Some(s), Some(v), _, _) => (matrix(u) * s, matrix(v).transpose()),
            (_, _, _, Some(b), Some(a)) => (matrix(b), matrix(a)),
            _ => {
                return Err(Error::StateMismatch(format!(
                    "{prefix}: incomplete adapter"
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

fn io(e: impl std::fmt::Display) -> Error {
    Error::Io(e.to_string())
}

/// Writes `model`'s adapters to `dir` (created if needed) as PEFT does:
/// `adapter_model.safetensors` with `<path>.lora_A.weight` (`[R, I]`) and
/// `<path>.lora_B.weight` (`[O, R]`) in the model's float type, and `adapter_config.json`.
pub fn export_peft<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &M,
    dir: impl AsRef<Path>,
) -> Result<PeftConfig, Error> {
    let pairs = lora_pairs(model)?;
    let first = pairs
        .values()
        .next()
        .ok_or_else(|| Error::StateMismatch("the model holds no adapter layer".into()))?;
    let (r, alpha, scaling) = (first.a.nrows(), first.alpha, first.scaling);
    if pairs.values().any(|p| p.scaling != scaling) {
        return Err(Error::StateMismatch(
            "PEFT has one use_rslora for all layers; the layers' scalings differ".into(),
        ));
    }
    let config = PeftConfig {
        peft_type: "LORA".into(),
        r,
        lora_alpha: alpha,
        target_modules: pairs.keys().cloned().collect(),
        use_rslora: scaling == Scaling::RankStabilized,
        bias: "none".into(),
        rank_pattern: pairs
            .iter()
            .filter(|(_, p)| p.a.nrows() != r)
            .map(|(k, p)| (k.clone(), p.a.nrows()))
            .collect(),
        alpha_pattern: pairs
            .iter()
            .filter(|(_, p)| p.alpha != alpha)
            .map(|(k, p)| (k.clone(), p.alpha))
            .collect(),
    };
    let dtype = if std::mem::size_of::<E>() == 4 {
        SafeDtype::F32
    } else {
        SafeDtype::F64
    };
    let bytes = |m: &DMatrix<f64>| -> Vec<u8> {
        let rows = m.transpose();
        match dtype {
            SafeDtype::F32 => rows
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
            _ => rows.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        }
    };
    let mut data = Vec::new();
    for (path, p) in &pairs {
        let key = |name: &str| {
            if path.is_empty() {
                format!("{name}.weight")
            } else {
                format!("{path}.{name}.weight")
            }
        };
        data.push((key("lora_A"), vec![p.a.nrows(), p.a.ncols()], bytes(&p.a)));
        data.push((key("lora_B"), vec![p.b.nrows(), p.b.ncols()], bytes(&p.b)));
    }
    let views = data
        .iter()
        .map(|(k, shape, b)| TensorView::new(dtype, shape.clone(), b).map(|v| (k.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(io)?;
    safetensors::serialize_to_file(views, &None, &dir.join(WEIGHTS_FILE)).map_err(io)?;
    let json = serde_json::to_string_pretty(&config).map_err(io)?;
    std::fs::write(dir.join(CONFIG_FILE), json).map_err(io)?;
    Ok(config)
}

/// Reads a PEFT adapter written by [`export_peft`] (or by PEFT itself, in F32 or F64).
pub fn read_peft(dir: impl AsRef<Path>) -> Result<PeftAdapter, Error> {
    let dir = dir.as_ref();
    let config: PeftConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).map_err(io)?)
            .map_err(io)?;
    let bytes = std::fs::read(dir.join(WEIGHTS_FILE)).map_err(io)?;
    let st = SafeTensors::deserialize(&bytes).map_err(io)?;
    let read = |key: &str| -> Result<DMatrix<f64>, Error> {
        let t = st.tensor(key).map_err(io)?;
        let values: Vec<f64> = match t.dtype() {
            SafeDtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            SafeDtype::F64 => t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            other => return Err(Error::Io(format!("{key}: unsupported dtype {other:?}"))),
        };
        match t.shape() {
            [rows, cols] => Ok(DMatrix::from_row_slice(*rows, *cols, &values)),
            other => Err(Error::Io(format!(
                "{key}: expected a matrix, got shape {other:?}"
            ))),
        }
    };
    let scaling = if config.use_rslora {
        Scaling::RankStabilized
    } else {
        Scaling::Standard
    };
    let mut pairs = BTreeMap::new();
    for path in &config.target_modules {
        let key = |name: &str| {
            if path.is_empty() {
                format!("{name}.weight")
            } else {
                format!("{path}.{name}.weight")
            }
        };
        let alpha = config
            .alpha_pattern
            .get(path)
            .copied()
            .unwrap_or(config.lora_alpha);
        let pair = LoraPair {
            a: read(&key("lora_A"))?,
            b: read(&key("lora_B"))?,
            alpha,
            scaling,
        };
        pairs.insert(path.clone(), pair);
    }
    Ok(PeftAdapter { config, pairs })
}

/// Writes precomputed tensors and scalars by dotted path.
struct Assign<'a> {
    tensors: &'a BTreeMap<String, Vec<f64>>,
    scalars: &'a BTreeMap<String, f64>,
    missing: Vec<String>,
}

impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Assign<'_> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, path): (&mut Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
        if let Some(v) = self.tensors.get(&path) {
            if v.len() == t.shape().num_elements() {
                t.copy_from(&v.iter().map(|&x| E::of_f64(x)).collect::<Vec<_>>());
            } else {
                self.missing.push(path);
            }
        }
        Ok(None)
    }

    fn visit_scalar<N: NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, path): (&mut N, String),
    ) -> Result<Option<N>, D::Err> {
        if let Some(v) = self.scalars.get(&path).and_then(|&v| N::from(v)) {
            *n = v;
        }
        Ok(None)
    }
}

/// Loads `adapter` into `model`'s adapter layers of the same paths (all shapes are checked
/// before anything is written): a `LoraLinear` takes
/// `B` and `A` as they are, an `SdsLinear` the exact factorisation `U S V^T = B A` with
/// `S = diag(sigma)` (QR and a Jacobi SVD of the `R x R` product of the R factors; a
/// full core holds it as an `R x R` matrix); both take the pair's `alpha` and scaling.
/// Errors if a path has no adapter layer or the shapes differ.
pub fn import_peft<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &mut M,
    adapter: &PeftAdapter,
) -> Result<(), Error> {
    let layers = collect(&*model);
    let mut tensors = BTreeMap::new();
    let mut scalars = BTreeMap::new();
    for (path, pair) in &adapter.pairs {
        let parts = layers.get(path).ok_or_else(|| {
            Error::StateMismatch(format!("the model has no adapter layer at {path:?}"))
        })?;
        let at = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        let row_major = |m: &DMatrix<f64>| m.transpose().as_slice().to_vec();
        let (o, r, i) = (pair.b.nrows(), pair.b.ncols(), pair.a.ncols());
        let expected: [(&str, Vec<usize>); 2] = if parts.tensors.contains_key("basis_out") {
            [("basis_out", vec![o, r]), ("basis_in", vec![i, r])]
        } else {
            [("lora_b", vec![o, r]), ("lora_a", vec![r, i])]
        };
        for (name, dims) in expected {
            let have = parts.tensors.get(name).map(|(d, _)| d.clone());
            if have.as_ref() != Some(&dims) || pair.a.nrows() != r {
                return Err(Error::StateMismatch(format!(
                    "{path}: the adapter's {name} is {dims:?}, the model's {have:?}"
                )));
            }
        }
        if parts.tensors.contains_key("basis_out") {
            let (u, s, v) = factor_lora_pair(&pair.b, &pair.a, 1.0);
            tensors.insert(at("basis_out"), row_major(&u));
            if parts.tensors.contains_key(CORE_NAME) {
                let core = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(s));
                tensors.insert(at(CORE_NAME), row_major(&core));
            } else {
                tensors.insert(at(SCALES_NAME), s);
            }
            tensors.insert(at("basis_in"), row_major(&v));
        } else {
            tensors.insert(at("lora_b"), row_major(&pair.b));
            tensors.insert(at("lora_a"), row_major(&pair.a));
        }
        scalars.insert(at("alpha"), pair.alpha);
        scalars.insert(at("scaling"), pair.scaling.to_f64().unwrap_or(0.0));
    }
    let mut v = Assign {
        tensors: &tensors,
        scalars: &scalars,
        missing: Vec::new(),
    };
    walk_mut(model, &mut v);
    if v.missing.is_empty() {
        Ok(())
    } else {
        Err(Error::StateMismatch(format!(
            "shape mismatch at {}",
            v.missing.join(", ")
        )))
    }
}
