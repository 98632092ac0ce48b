//! The element types the crate computes in (`f32`, `f64`) and their GEMM.

use dfdx::dtypes::{Dtype, NotMixedPrecision};
use nalgebra::RealField;

/// The register-level arithmetic of the host kernels: `Avx512`
/// on x86-64, nothing elsewhere.
#[cfg(target_arch = "x86_64")]
pub trait HostSimd: super::avx512::Avx512 {}

/// The register-level arithmetic of the host kernels: none off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub trait HostSimd {}

impl HostSimd for f32 {}
impl HostSimd for f64 {}

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
    + HostSimd
    + 'static
{
    /// The fused host backend for this type: [`HostOps`](super::HostOps), named here so
    /// that generic code can use it without a `Cpu: Device<E>` bound.
    type Host: super::TallOps<Self, Mat = super::HostMat<Self>>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync;

    /// The host backend.
    fn host_ops() -> Self::Host;

    /// Machine epsilon of the type.
    const EPSILON: Self;

    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;

    /// Converts from `f64` (rounded to nearest).
    fn of_f64(v: f64) -> Self;

    /// Runs `f` on this thread's pool of spare buffers of this type.
    fn with_pool<R>(f: impl FnOnce(&super::scratch::Pool<Self>) -> R) -> R;

    /// `C = alpha A B + beta C` on strided storage (`A: m x k`, `B: k x n`, `C: m x n`,
    /// element `(i, j)` of `A` at `a[i*rsa + j*csa]`), by the `gemm` crate that dfdx's
    /// own `Cpu` matmul uses (runtime AVX2/FMA dispatch), on one thread: the fallback of
    /// `tall_products` on CPUs without AVX-512F.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping (for `c`) storage
    /// of the stated sizes.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
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

            fn with_pool<R>(f: impl FnOnce(&super::scratch::Pool<Self>) -> R) -> R {
                thread_local! {
                    static POOL: super::scratch::Pool<$t> = const { super::scratch::Pool::new() };
                }
                POOL.with(f)
            }

            unsafe fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // gemm's convention: dst = alpha_dst * dst + beta_prod * lhs * rhs.
                gemm::gemm(
                    m,
                    n,
                    k,
                    c,
                    csc,
                    rsc,
                    beta != 0.0,
                    a,
                    csa,
                    rsa,
                    b,
                    csb,
                    rsb,
                    beta,
                    alpha,
                    false,
                    false,
                    false,
                    // One thread: for this crate's thin shapes (n x r by r x r, r <= 64)
                    // rayon made every measured case slower (4096 x 16 by 16 x 16: 43 us
                    // on one thread, 82 us on two; 4096 x 64 Qr: 4.2 ms against 4.8 ms).
                    gemm::Parallelism::None,
                )
            }
        }
    };
}

impl_real!(f32);
impl_real!(f64);
