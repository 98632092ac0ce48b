//! Runtime selection of the instruction set for the fused host loops.
//!
//! The crate is compiled for the baseline target (SSE2 on x86-64), like dfdx. Hot loops
//! are written once, generic over [`Fma`], and run through [`dispatch`], which compiles
//! them again with AVX2 and FMA, and with AVX-512F, and picks the widest version the CPU
//! runs (as the `gemm` crate does for matrix products). A loop may branch on
//! [`Fma::AVX512`] to use [`Avx512`](super::avx512::Avx512) registers explicitly. Results
//! are deterministic on one machine; FMA rounding differs from separate multiply-add in
//! the last bit.

/// How a kernel computes `a * b + c`: fused (one rounding) where the CPU has FMA, else
/// a multiply and an add. `mul_add` without hardware FMA would call libm, which is slow.
pub trait Fma: Copy {
    /// Whether the code runs with AVX-512F enabled (explicit 512-bit kernels are allowed).
    const AVX512: bool = false;
    /// `a * b + c`.
    fn mul_add<E: crate::kernels::Real>(a: E, b: E, c: E) -> E;
}

/// Separate multiply and add.
#[derive(Clone, Copy)]
pub struct Plain;

/// Hardware fused multiply-add.
#[derive(Clone, Copy)]
pub struct Fused;

/// Hardware fused multiply-add, in code compiled with AVX-512F.
#[derive(Clone, Copy)]
pub struct Wide;

impl Fma for Plain {
    #[inline(always)]
    fn mul_add<E: crate::kernels::Real>(a: E, b: E, c: E) -> E {
        a * b + c
    }
}

impl Fma for Fused {
    #[inline(always)]
    fn mul_add<E: crate::kernels::Real>(a: E, b: E, c: E) -> E {
        a.mul_add(b, c)
    }
}

impl Fma for Wide {
    const AVX512: bool = true;
    #[inline(always)]
    fn mul_add<E: crate::kernels::Real>(a: E, b: E, c: E) -> E {
        a.mul_add(b, c)
    }
}

/// A loop body generic over how it multiplies and adds.
pub trait Kernel {
    /// What the loop returns.
    type Output;
    /// Runs the loop.
    fn run<F: Fma>(self) -> Self::Output;
}

/// A closure as a [`Kernel`], for loops that need no [`Fma`]: [`dispatch`] inlines it
/// into the function compiled for the widest instruction set, where it is vectorised.
pub struct Loop<F>(pub F);

impl<R, F: FnOnce() -> R> Kernel for Loop<F> {
    type Output = R;
    #[inline(always)]
    fn run<M: Fma>(self) -> R {
        (self.0)()
    }
}

/// Runs `k` compiled for AVX-512F (with AVX2 and FMA) or for AVX2 + FMA when the CPU
/// supports them, else for the baseline.
#[inline]
pub fn dispatch<K: Kernel>(k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        if avx2 && super::avx512::available() {
            // SAFETY: the CPU supports the features this function is compiled with.
            return unsafe { run_avx512(k) };
        }
        if avx2 {
            // SAFETY: the CPU supports the features this function is compiled with.
            return unsafe { run_avx2_fma(k) };
        }
    }
    k.run::<Plain>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2_fma<K: Kernel>(k: K) -> K::Output {
    k.run::<Fused>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run::<Wide>()
}
