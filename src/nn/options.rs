//! The settings an adapter layer carries besides its tensors.

use super::scalar_enum::scalar_enum;
use serde::{Deserialize, Serialize};

/// Which gradients an [`SdsLinear`](super::SdsLinear) hands its bases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GradientMode {
    /// Scale-decoupled (SDS): `dU = c Gy^T (x V)`, `dV = c x^T (Gy U)`: the full gradient
    /// passes through orthonormal bases only.
    #[default]
    Decoupled,
    /// Plain autodiff of the formula (for ablations): `dU = c Gy^T (x V diag(s))`,
    /// `dV = c x^T (Gy U diag(s))`. With `s = 0` the bases receive nothing.
    Coupled,
}

scalar_enum!(GradientMode { Decoupled = 0, Coupled = 1 });

/// How the adapter scaling `c` follows from `alpha` and the rank `R`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scaling {
    /// `c = alpha / R` (LoRA).
    #[default]
    Standard,
    /// `c = alpha / sqrt(R)` (rank-stabilised LoRA, PEFT's `use_rslora`).
    RankStabilized,
}

scalar_enum!(Scaling { Standard = 0, RankStabilized = 1 });

impl Scaling {
    /// `c` for `alpha` at rank `r`.
    pub fn factor(self, alpha: f64, r: usize) -> f64 {
        match self {
            Scaling::Standard => alpha / r as f64,
            Scaling::RankStabilized => alpha / (r as f64).sqrt(),
        }
    }
}

/// Whether an adapter's update has been folded into its frozen weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MergeState {
    /// `W0` is the pretrained weight; the forward adds the adapter.
    #[default]
    Separate,
    /// `W0` holds `W0 + dW`; the forward skips the adapter.
    Merged,
}

scalar_enum!(MergeState { Separate = 0, Merged = 1 });

/// The phase of an [`SdsDualBranch`](super::SdsDualBranch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Plain LoRA: `dW = k B A`.
    #[default]
    Warmup,
    /// Two branches through constant bases: `dW = k (Q_B A + B Q_A^T)`.
    Dual,
}

scalar_enum!(Phase { Warmup = 0, Dual = 1 });
