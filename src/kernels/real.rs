//! The element types the crate computes in (`f32`, `f64`) and their GEMM.

use dfdx::dtypes::{Dtype, NotMixedPrecision};
use nalgebra::RealField;

/// A real floating-point element type usable on every layer of the crate.
///
/// Implemented for `f32` and `f64`. Small `r x r` work is always done in `f64` on the
/// host; [`Real::to_f64`] and [`Real::of_f64`] convert at that boundary.
pub trait Real:
    Dtype + NotMixedPrecision + RealField + Copy + Default + Send + Sync + std::fmt::Debug + 'static
{
    /// Machine epsilon of the type.
    const EPSILON: Self;

    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;

    /// Converts from `f64` (rounded to nearest).
    fn of_f64(v: f64) -> Self;

    /// `C = alpha A B + beta C` on strided row/column storage (matrixmultiply's layout:
    /// `A: m x k`, `B: k x n`, `C: m x n`, element `(i, j)` of `A` at `a[i*rsa + j*csa]`).
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
    ($t:ty, $gemm:path) => {
        impl Real for $t {
            const EPSILON: Self = <$t>::EPSILON;

            fn to_f64(self) -> f64 {
                self as f64
            }

            fn of_f64(v: f64) -> Self {
                v as $t
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
                $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
            }
        }
    };
}

impl_real!(f32, matrixmultiply::sgemm);
impl_real!(f64, matrixmultiply::dgemm);
