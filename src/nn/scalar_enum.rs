//! Small enums stored as dfdx scalar fields (so that `to_device`, `to_dtype` and
//! safetensors keep them): each converts to and from a number.

/// Implements `ToPrimitive` and `NumCast` for a fieldless enum, one number per variant.
macro_rules! scalar_enum {
    ($t:ty { $($variant:ident = $n:literal),+ $(,)? }) => {
        impl num_traits::ToPrimitive for $t {
            fn to_i64(&self) -> Option<i64> {
                Some(match self { $(Self::$variant => $n,)+ })
            }
            fn to_u64(&self) -> Option<u64> {
                self.to_i64().map(|v| v as u64)
            }
            fn to_f64(&self) -> Option<f64> {
                self.to_i64().map(|v| v as f64)
            }
        }

        impl num_traits::NumCast for $t {
            fn from<N: num_traits::ToPrimitive>(n: N) -> Option<Self> {
                match n.to_f64()?.round() as i64 {
                    $($n => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use scalar_enum;
