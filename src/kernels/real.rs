//! The element types the crate computes in (`f32`, `f64`): their numerics ([`Real`]) and
//! what the host kernels need of them besides ([`HostElement`]).

use dfdx::dtypes::{Dtype, NotMixedPrecision};
use nalgebra::{DMatrix, RealField};

/// The register-level arithmetic of the host kernels: `Avx512` on x86-64.
#[cfg(target_arch = "x86_64")]
pub trait Registers: super::avx512::Avx512 {}

/// The register-level arithmetic of the host kernels: none off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub trait Registers {}

impl Registers for f32 {}
impl Registers for f64 {}

/// What the host kernels need of an element type besides its numerics: its register
/// arithmetic (`Registers`), its thread-local pool of spare buffers and vectorised
/// loops. Code outside the kernels reaches the pool and the loops through these methods
/// only. A supertrait of [`Real`], so that code generic over `E: Real` reaches the host
/// kernels without naming it.
pub trait HostElement: Registers + Sized {
    /// Runs `f` on this thread's pool of spare buffers of this type.
    fn with_pool<R>(f: impl FnOnce(&super::scratch::Pool<Self>) -> R) -> R;

    /// A buffer of `len` elements from this thread's pool, contents unspecified: for a
    /// caller that overwrites all of it.
    fn pooled(len: usize) -> Vec<Self>
    where
        Self: Real,
    {
        super::scratch::overwritten(len)
    }

    /// A pooled copy of `src`.
    fn pooled_copy(src: &[Self]) -> Vec<Self>
    where
        Self: Real,
    {
        super::scratch::copied(src)
    }

    /// Gives a buffer back to this thread's pool.
    fn recycle(buf: Vec<Self>)
    where
        Self: Real,
    {
        super::scratch::recycle(buf)
    }

    /// The storage length of a `rows x cols` host matrix, its rows padded for the vector
    /// unit (the layout in which the optimizer keeps a Stiefel tensor's moments).
    fn padded_len(rows: usize, cols: usize) -> usize {
        rows * super::layout::padded_stride(cols)
    }

    /// Compact row-major `data` of a `rows x cols` matrix in the padded layout.
    fn padded(rows: usize, cols: usize, data: Vec<Self>) -> Vec<Self>
    where
        Self: Real,
    {
        super::HostMat::new(rows, cols, data).into_storage()
    }

    /// Padded storage of a `rows x cols` matrix as compact row-major data.
    fn compact(rows: usize, cols: usize, padded: Vec<Self>) -> Vec<Self>
    where
        Self: Real,
    {
        super::HostMat::from_storage(rows, cols, padded).into_compact()
    }

    /// Whether every element of `v` is finite.
    fn all_finite(v: &[Self]) -> bool
    where
        Self: Real,
    {
        super::slices::all_finite(v)
    }

    /// `||v||^2`, accumulated in `f64`.
    fn squared_norm(v: &[Self]) -> f64
    where
        Self: Real,
    {
        super::slices::squared_norm(v)
    }

    /// Runs the loop `f` compiled for the widest vector unit the CPU has (AVX-512F, or
    /// AVX2 with FMA, else the baseline), so that it is vectorised.
    #[inline(always)]
    fn vectorised<R>(f: impl FnOnce() -> R) -> R {
        super::simd::dispatch(super::simd::Loop(f))
    }
}

macro_rules! impl_host_element {
    ($t:ty) => {
        impl HostElement for $t {
            fn with_pool<R>(f: impl FnOnce(&super::scratch::Pool<Self>) -> R) -> R {
                thread_local! {
                    static POOL: super::scratch::Pool<$t> = const { super::scratch::Pool::new() };
                }
                POOL.with(f)
            }
        }
    };
}

impl_host_element!(f32);
impl_host_element!(f64);

/// A real floating-point element type usable on every layer of the crate.
///
/// Implemented for `f32` and `f64`. Small `r x r` work is always done in `f64` on the
/// host; [`Real::to_f64`] and [`Real::of_f64`] convert at that boundary.
pub trait Real:
    Dtype
    + NotMixedPrecision
    + RealField
    + Copy
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + HostElement
    + 'static
{
    /// The fused host backend for this type: [`HostOps`](super::HostOps), named here so
    /// that generic code can use it without a `Cpu: Device<E>` bound.
    type Host: super::HostBackend<Self> + Clone + std::fmt::Debug + Send + Sync;

    /// The host backend.
    fn host_ops() -> Self::Host;

    /// Machine epsilon of the type.
    const EPSILON: Self;

    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;

    /// Converts from `f64` (rounded to nearest).
    fn of_f64(v: f64) -> Self;

    /// The row-major data of a small `f64` matrix, rounded to this type.
    fn row_major(m: &DMatrix<f64>) -> Vec<Self> {
        m.transpose().iter().map(|&v| Self::of_f64(v)).collect()
    }

    /// A small `rows x cols` `f64` matrix from row-major data of this type.
    fn from_row_major(rows: usize, cols: usize, data: &[Self]) -> DMatrix<f64> {
        DMatrix::from_row_iterator(rows, cols, data.iter().map(|&v| v.to_f64()))
    }
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Real for $t {
            type Host = super::HostOps;

            fn host_ops() -> super::HostOps {
                super::HostOps::default()
            }

            const EPSILON: Self = <$t>::EPSILON;

            fn to_f64(self) -> f64 {
                self as f64
            }

            fn of_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}

impl_real!(f32);
impl_real!(f64);
