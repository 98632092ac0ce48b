//! What every adapter layer declares to dfdx the same way: its builder and its
//! `TensorCollection` entries.

/// `TensorCollection` entries of one kind (`tensor` or `scalar`), each named after its
/// field and reaching it: `named_fields!(tensor: weight => options, ...)` is a tuple of
/// `Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, options), ...`.
macro_rules! named_fields {
    ($kind:ident: $($field:ident => $options:expr),+) => {
        ($(Self::$kind(stringify!($field), |s| &s.$field, |s| &mut s.$field, $options)),+)
    };
}

/// The frozen `weight: [O, I]` and `bias: [O]` of an adapter layer, initialised as dfdx's
/// `Linear` initialises its own (uniform with fan-in `$fan_in`) and never trained.
macro_rules! frozen_weight_and_bias {
    ($fan_in:ident) => {
        named_fields!(tensor:
            weight => TensorOptions::detached(kaiming_uniform::<$fan_in, _, _, _>),
            bias => TensorOptions::detached(kaiming_uniform::<$fan_in, _, _, _>)
        )
    };
}

/// The `alpha` (default the rank `$rank`, so `c = 1`) and `scaling` (default
/// [`Scaling::Standard`](super::Scaling::Standard)) of an adapter layer.
macro_rules! alpha_and_scaling {
    ($rank:ident) => {
        named_fields!(scalar:
            alpha => ScalarOptions::from_default($rank as f64),
            scaling => ScalarOptions::from_default(Scaling::Standard)
        )
    };
}

/// dfdx's `NonMutableModule` (the forward pass does not change the layer) and
/// `BuildOnDevice` (the builder `builder::$layer` builds it) for an adapter layer
/// `$layer<I, O, R, E, D>` (with an extra generic parameter `$k: $bound` where it has one).
macro_rules! module_and_builder {
    ($layer:ident $(, $k:ident: $bound:path)?) => {
        impl<const I: usize, const O: usize, const R: usize, E: Dtype, D: Storage<E> $(, $k: $bound)?>
            NonMutableModule for $layer<I, O, R, E, D $(, $k)?>
        {
        }

        impl<const I: usize, const O: usize, const R: usize, E: Real, D: Device<E> $(, $k: $bound)?>
            BuildOnDevice<D, E> for builder::$layer<I, O, R $(, $k)?>
        {
            type Built = $layer<I, O, R, E, D $(, $k)?>;
            fn try_build_on_device(device: &D) -> Result<Self::Built, D::Err> {
                Self::Built::try_build(device)
            }
        }
    };
}
