//! PEFT's `adapter_config.json`: the fields PEFT reads when it loads a LoRA adapter, their
//! checks, and PEFT's rules for matching layer paths against `target_modules`,
//! `rank_pattern` and `alpha_pattern`.

use crate::nn::Scaling;
use crate::Error;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// PEFT's `adapter_config.json` for a LoRA adapter: the fields PEFT's `LoraConfig` reads
/// to rebuild the layers (others found in a file are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `"LORA"`.
    pub peft_type: String,
    /// PEFT's task type (`null`: a plain `PeftModel`).
    #[serde(default)]
    pub task_type: Option<String>,
    /// The base model PEFT would load (`null`: the caller passes it).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Whether PEFT loads the adapter frozen (`true` in exports).
    #[serde(default = "yes")]
    pub inference_mode: bool,
    /// The rank (layers that differ are in `rank_pattern`).
    pub r: usize,
    /// `alpha` (layers that differ are in `alpha_pattern`).
    pub lora_alpha: f64,
    /// Which layers carry an adapter, as PEFT matches them.
    pub target_modules: TargetModules,
    /// Dropout on the adapter's input while training (no effect on outputs here).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Whether the base layers store `W^T` (GPT-2's `Conv1D`); refused: dfdx's `Linear`
    /// stores `W`.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Trained biases (`"none"`, `"all"`, `"lora_only"`); only `"none"`: biases are frozen.
    #[serde(default = "no_bias")]
    pub bias: String,
    /// `c = alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Whole modules trained and saved beside the adapters; refused: they have no place in
    /// an adapter layer.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// A bias on `lora_B`; refused.
    #[serde(default)]
    pub lora_bias: bool,
    /// DoRA's magnitude vectors; refused.
    #[serde(default)]
    pub use_dora: bool,
    /// Ranks that differ from `r`, by PEFT pattern.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Alphas that differ from `lora_alpha`, by PEFT pattern.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
}

fn yes() -> bool {
    true
}

fn no_bias() -> String {
    "none".into()
}

/// PEFT's `target_modules`: a list of names, each matching a layer path equal to it or
/// ending in `.name`, or one regular expression that must match a whole path
/// (`"all-linear"` matches every adapter layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names or path suffixes.
    List(Vec<String>),
    /// A regular expression matched against the whole path.
    Pattern(String),
}

impl TargetModules {
    /// Whether PEFT would put an adapter on the layer at `path`. Errors if the pattern is
    /// not a regular expression.
    pub fn matches(&self, path: &str) -> Result<bool, Error> {
        match self {
            TargetModules::List(names) => Ok(names.iter().any(|n| is_dotted_suffix(n, path))),
            TargetModules::Pattern(p) if p == "all-linear" => Ok(true),
            TargetModules::Pattern(p) => {
                Ok(regex(&format!("^(?:{p})$"), "target_modules")?.is_match(path))
            }
        }
    }
}

/// Whether `path` equals `name` or ends in `.name` (PEFT's list matching).
pub(super) fn is_dotted_suffix(name: &str, path: &str) -> bool {
    path == name
        || path
            .strip_suffix(name)
            .is_some_and(|head| head.ends_with('.'))
}

fn regex(pattern: &str, field: &str) -> Result<Regex, Error> {
    Regex::new(pattern)
        .map_err(|e| Error::Invalid(format!("adapter_config.json: {field}: {pattern:?}: {e}")))
}

/// The value of the first key of `pattern` (in sorted order; PEFT takes the file's order,
/// which differs only when several keys match one path) that matches `path` as PEFT
/// matches pattern keys: the regular expression `(.*\.)?(key)$` from the path's start.
fn pattern_value<T: Copy>(
    pattern: &BTreeMap<String, T>,
    path: &str,
    field: &str,
) -> Result<Option<T>, Error> {
    for (key, &value) in pattern {
        if regex(&format!(r"^(?:.*\.)?(?:{key})$"), field)?.is_match(path) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

impl PeftConfig {
    /// The rank PEFT gives the layer at `path`.
    pub fn rank_of(&self, path: &str) -> Result<usize, Error> {
        Ok(pattern_value(&self.rank_pattern, path, "rank_pattern")?.unwrap_or(self.r))
    }

    /// The `alpha` PEFT gives the layer at `path`.
    pub fn alpha_of(&self, path: &str) -> Result<f64, Error> {
        Ok(pattern_value(&self.alpha_pattern, path, "alpha_pattern")?.unwrap_or(self.lora_alpha))
    }

    /// How `c` follows from `alpha`.
    pub fn scaling(&self) -> Scaling {
        match self.use_rslora {
            true => Scaling::RankStabilized,
            false => Scaling::Standard,
        }
    }

    /// Refuses what this crate cannot load faithfully: another PEFT method, ranks of 0,
    /// non-finite alphas, trained biases, `fan_in_fan_out`, DoRA, `modules_to_save`, and
    /// patterns that are not regular expressions.
    pub fn check(&self) -> Result<(), Error> {
        let fail = |what: String| Err(Error::Invalid(format!("adapter_config.json: {what}")));
        if self.peft_type != "LORA" {
            return fail(format!("peft_type is {:?}, not \"LORA\"", self.peft_type));
        }
        if self.r == 0 || self.rank_pattern.values().any(|&r| r == 0) {
            return fail("a rank of 0 (r or rank_pattern)".into());
        }
        let alphas = std::iter::once(&self.lora_alpha).chain(self.alpha_pattern.values());
        if let Some(a) = alphas.into_iter().find(|a| !a.is_finite()) {
            return fail(format!("alpha {a} is not finite"));
        }
        if self.bias != "none" {
            return fail(format!(
                "bias is {:?}: trained biases are not supported (they are frozen here)",
                self.bias
            ));
        }
        if self.fan_in_fan_out {
            return fail("fan_in_fan_out (transposed base weights) is not supported".into());
        }
        if self.lora_bias {
            return fail("lora_bias (a bias on lora_B) is not supported".into());
        }
        if self.use_dora {
            return fail("use_dora (DoRA) is not supported".into());
        }
        if let Some(m) = self.modules_to_save.as_ref().filter(|m| !m.is_empty()) {
            return fail(format!("modules_to_save {m:?} is not supported"));
        }
        self.target_modules.matches("")?;
        self.rank_of("")?;
        self.alpha_of("")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PeftConfig {
        serde_json::from_str(
            r#"{"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":["fc","2"],
                "rank_pattern":{"fc":2},"alpha_pattern":{"blocks\\.1\\.fc":3.0}}"#,
        )
        .unwrap()
    }

    #[test]
    fn list_targets_match_whole_dotted_suffixes() {
        let t = config().target_modules;
        for (path, want) in [
            ("fc", true),
            ("blocks.0.fc", true),
            ("blocks.0.xfc", false),
            ("2", true),
            ("0.2", true),
            ("12", false),
            ("fc.0", false),
        ] {
            assert_eq!(t.matches(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn regex_targets_match_whole_paths() {
        let t = TargetModules::Pattern(r"blocks\.\d+\.(fc|out)".into());
        assert!(t.matches("blocks.3.fc").unwrap());
        assert!(!t.matches("x.blocks.3.fc").unwrap());
        assert!(!t.matches("blocks.3.fc1").unwrap());
        assert!(TargetModules::Pattern("all-linear".into())
            .matches("any.path")
            .unwrap());
        assert!(matches!(
            TargetModules::Pattern("(".into()).matches("a"),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn patterns_give_per_layer_ranks_and_alphas() {
        let c = config();
        assert_eq!(c.rank_of("blocks.1.fc").unwrap(), 2);
        assert_eq!(c.rank_of("2").unwrap(), 4);
        assert_eq!(c.alpha_of("blocks.1.fc").unwrap(), 3.0);
        assert_eq!(c.alpha_of("blocks.0.fc").unwrap(), 8.0);
        assert_eq!(c.scaling(), Scaling::Standard);
        c.check().unwrap();
    }

    #[test]
    fn unsupported_settings_are_refused_by_name() {
        type Spoiler = fn(&mut PeftConfig);
        let cases: [(&str, Spoiler); 8] = [
            ("lora_bias", |c| c.lora_bias = true),
            ("peft_type", |c| c.peft_type = "IA3".into()),
            ("rank of 0", |c| c.r = 0),
            ("not finite", |c| c.lora_alpha = f64::NAN),
            ("bias", |c| c.bias = "all".into()),
            ("fan_in_fan_out", |c| c.fan_in_fan_out = true),
            ("use_dora", |c| c.use_dora = true),
            ("modules_to_save", |c| {
                c.modules_to_save = Some(vec!["head".into()])
            }),
        ];
        for (word, spoil) in cases {
            let mut c = config();
            spoil(&mut c);
            let msg = c.check().unwrap_err().to_string();
            assert!(msg.contains(word), "{word}: {msg}");
        }
    }
}
