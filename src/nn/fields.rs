//! The dfdx `TensorCollection` entries that every adapter layer lists the same way.

/// The frozen `weight: [O, I]` and `bias: [O]` of an adapter layer, initialised as dfdx's
/// `Linear` initialises its own (uniform with fan-in `$fan_in`) and never trained.
macro_rules! frozen_weight_and_bias {
    ($fan_in:ident) => {
        (
            Self::tensor(
                "weight",
                |s| &s.weight,
                |s| &mut s.weight,
                TensorOptions::detached(kaiming_uniform::<$fan_in, _, _, _>),
            ),
            Self::tensor(
                "bias",
                |s| &s.bias,
                |s| &mut s.bias,
                TensorOptions::detached(kaiming_uniform::<$fan_in, _, _, _>),
            ),
        )
    };
}

/// The `alpha` (default the rank `$rank`, so `c = 1`) and `scaling` (default
/// [`Scaling::Standard`](super::Scaling::Standard)) of an adapter layer.
macro_rules! alpha_and_scaling {
    ($rank:ident) => {
        (
            Self::scalar(
                "alpha",
                |s| &s.alpha,
                |s| &mut s.alpha,
                ScalarOptions::from_default($rank as f64),
            ),
            Self::scalar(
                "scaling",
                |s| &s.scaling,
                |s| &mut s.scaling,
                ScalarOptions::from_default(Scaling::Standard),
            ),
        )
    };
}
