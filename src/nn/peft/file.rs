//! PEFT's adapter directory: `adapter_model.safetensors` with the keys
//! `base_model.model.<path>.lora_A.weight` (`[r, in]`) and `...lora_B.weight` (`[out, r]`)
//! beside `adapter_config.json`; written from LoRA pairs and read back with every value
//! and shape checked.

use super::config::PeftConfig;
use super::{LoraPair, PeftAdapter};
use crate::Error;
use nalgebra::DMatrix;
use safetensors::tensor::{Dtype as SafeDtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// The weights file PEFT reads.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The config file PEFT reads.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The prefix of PEFT's keys: a `PeftModel` holds the `LoraModel` as `base_model`, which
/// holds the user's model as `model`.
pub const KEY_PREFIX: &str = "base_model.model.";

/// `base_model.model.<path>.<factor>.weight` (`<path>.` left out for a root layer).
fn key(path: &str, factor: &str) -> String {
    match path {
        "" => format!("{KEY_PREFIX}{factor}.weight"),
        _ => format!("{KEY_PREFIX}{path}.{factor}.weight"),
    }
}

/// The layer path and factor (`lora_A` or `lora_B`) of a key, with or without PEFT's
/// prefix; `None` for any other key.
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
    let head = rest.strip_suffix(".weight")?;
    let (path, factor) = match head.rsplit_once('.') {
        Some((path, factor)) => (path, factor),
        None => ("", head),
    };
    matches!(factor, "lora_A" | "lora_B").then_some((path, factor))
}

/// Writes `pairs` and `config` into `dir` (created if needed), the matrices as `f32` or
/// `f64`.
pub(super) fn write(
    dir: &Path,
    config: &PeftConfig,
    pairs: &BTreeMap<String, LoraPair>,
    dtype: SafeDtype,
) -> Result<(), Error> {
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
    for (path, p) in pairs {
        data.push((key(path, "lora_A"), p.a.shape(), bytes(&p.a)));
        data.push((key(path, "lora_B"), p.b.shape(), bytes(&p.b)));
    }
    let views = data
        .iter()
        .map(|(k, (rows, cols), b)| {
            TensorView::new(dtype, vec![*rows, *cols], b).map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Io(format!("{WEIGHTS_FILE}: {e}")))?;
    let at = |file: &str| dir.join(file);
    let io =
        |file: &str, e: &dyn std::fmt::Display| Error::Io(format!("{}: {e}", at(file).display()));
    std::fs::create_dir_all(dir).map_err(|e| io("", &e))?;
    safetensors::serialize_to_file(views, &None, &at(WEIGHTS_FILE))
        .map_err(|e| io(WEIGHTS_FILE, &e))?;
    let json = serde_json::to_string_pretty(config).map_err(|e| io(CONFIG_FILE, &e))?;
    std::fs::write(at(CONFIG_FILE), json).map_err(|e| io(CONFIG_FILE, &e))
}

/// Reads the PEFT adapter in `dir`, as PEFT's `save_pretrained` or
/// [`export_peft`](super::export_peft) writes it ([`PeftAdapter::from_bytes`] lists the
/// checks). Errors name the file.
pub fn read_peft(dir: impl AsRef<Path>) -> Result<PeftAdapter, Error> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::Io(format!(
            "{}: not a directory (expected a PEFT adapter: {CONFIG_FILE} and {WEIGHTS_FILE})",
            dir.display()
        )));
    }
    let read = |file: &str| {
        let p = dir.join(file);
        std::fs::read(&p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))
    };
    let config = read(CONFIG_FILE)?;
    let config = std::str::from_utf8(&config)
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.join(CONFIG_FILE).display())))?;
    PeftAdapter::from_bytes(config, &read(WEIGHTS_FILE)?)
}

impl PeftAdapter {
    /// An adapter from the text of `adapter_config.json` and the bytes of
    /// `adapter_model.safetensors`. Refused with [`Error::Invalid`]: a config that
    /// [`PeftConfig::check`] refuses; keys other than `lora_A`/`lora_B` weights (DoRA,
    /// embedding adapters, saved modules); a layer with one factor only, a factor that is
    /// not a matrix or not `f32`/`f64`, factors whose ranks differ, a rank other than the
    /// config's for that layer, NaN or infinity in a factor, a layer that `target_modules`
    /// does not select, and no layer at all.
    ///
    /// ```
    /// use sds_lora::nn::peft::PeftAdapter;
    ///
    /// let config = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["fc"]}"#;
    /// let err = PeftAdapter::from_bytes(config, b"not safetensors").unwrap_err();
    /// assert!(err.to_string().contains("adapter_model.safetensors"));
    /// ```
    pub fn from_bytes(config: &str, weights: &[u8]) -> Result<Self, Error> {
        let invalid = |file: &str, what: String| Error::Invalid(format!("{file}: {what}"));
        let config: PeftConfig =
            serde_json::from_str(config).map_err(|e| invalid(CONFIG_FILE, e.to_string()))?;
        config.check()?;
        let st =
            SafeTensors::deserialize(weights).map_err(|e| invalid(WEIGHTS_FILE, e.to_string()))?;
        let mut factors: BTreeMap<String, BTreeMap<String, DMatrix<f64>>> = BTreeMap::new();
        for (name, t) in st.tensors() {
            let (path, factor) = parse_key(&name).ok_or_else(|| {
                invalid(
                    WEIGHTS_FILE,
                    format!("{name}: not a LoRA factor (only lora_A/lora_B weights are supported)"),
                )
            })?;
            let m = matrix(&name, &t)?;
            let (path, factor) = (path.to_string(), factor.to_string());
            if factors
                .entry(path.clone())
                .or_default()
                .insert(factor, m)
                .is_some()
            {
                return Err(invalid(
                    WEIGHTS_FILE,
                    format!("two keys hold the same factor of layer {path:?} (one is {name})"),
                ));
            }
        }
        let scaling = config.scaling();
        let mut pairs = BTreeMap::new();
        for (path, mut f) in factors {
            let (Some(a), Some(b)) = (f.remove("lora_A"), f.remove("lora_B")) else {
                return Err(invalid(
                    WEIGHTS_FILE,
                    format!("layer {path:?} has only one of lora_A and lora_B"),
                ));
            };
            if a.nrows() != b.ncols() {
                return Err(invalid(
                    WEIGHTS_FILE,
                    format!(
                        "layer {path:?}: lora_A is {:?} and lora_B {:?}; lora_A must be \
                         [r, in] and lora_B [out, r]",
                        a.shape(),
                        b.shape()
                    ),
                ));
            }
            if !config.target_modules.matches(&path)? {
                return Err(invalid(
                    CONFIG_FILE,
                    format!(
                        "target_modules {:?} does not select layer {path:?}, which the weights hold",
                        config.target_modules
                    ),
                ));
            }
            let r = config.rank_of(&path)?;
            if r != a.nrows() {
                return Err(invalid(
                    CONFIG_FILE,
                    format!(
                        "gives layer {path:?} rank {r} (r or rank_pattern), its factors have rank {}",
                        a.nrows()
                    ),
                ));
            }
            let alpha = config.alpha_of(&path)?;
            pairs.insert(
                path,
                LoraPair {
                    b,
                    a,
                    alpha,
                    scaling,
                },
            );
        }
        if pairs.is_empty() {
            return Err(invalid(WEIGHTS_FILE, "holds no LoRA layer".into()));
        }
        Ok(PeftAdapter { config, pairs })
    }
}

/// A checked `f64` matrix from a safetensors tensor (row-major `[rows, cols]`).
fn matrix(name: &str, t: &TensorView<'_>) -> Result<DMatrix<f64>, Error> {
    let invalid = |what: String| Error::Invalid(format!("{WEIGHTS_FILE}: {name}: {what}"));
    let values: Vec<f64> = match t.dtype() {
        SafeDtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        SafeDtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(std::array::from_fn(|k| c[k])))
            .collect(),
        other => return Err(invalid(format!("dtype {other:?} (only F32 and F64)"))),
    };
    let &[rows, cols] = t.shape() else {
        return Err(invalid(format!("shape {:?} is not a matrix", t.shape())));
    };
    if rows == 0 || cols == 0 {
        return Err(invalid(format!("shape {:?} is empty", t.shape())));
    }
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "element {k} is {} (values must be finite)",
            values[k]
        )));
    }
    Ok(DMatrix::from_row_slice(rows, cols, &values))
}
