//! AVX-512 registers of `f32` (16 lanes) and `f64` (8 lanes) behind one trait, so that the
//! register-tiled kernels ([`tall_products`](super::tall_products)) are written once.
//!
//! Every method is an `unsafe` wrapper around one `std::arch` intrinsic: callers must run
//! on a CPU with AVX-512F (checked once by [`available`]) and inside a function compiled
//! with `#[target_feature(enable = "avx512f")]`, where the wrappers inline to single
//! instructions. [`base_register`] keeps the kernels' row pointers in base registers.

use std::arch::x86_64::*;

/// Whether this CPU runs AVX-512F code (the check is cached by the standard library).
#[inline]
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// An element type with a 512-bit register type and the handful of operations the
/// tall-matrix kernels use. A mask selects the low `lanes` elements of a register.
///
/// # Safety
/// All methods require AVX-512F; pointer arguments must be valid for the lanes the mask
/// selects.
#[allow(clippy::missing_safety_doc)] // one contract for all methods, above
pub trait Avx512: Copy {
    /// The register.
    type V: Copy;
    /// Elements per register.
    const WIDTH: usize;
    /// All lanes zero.
    unsafe fn vzero() -> Self::V;
    /// Every lane `*p`.
    unsafe fn vsplat(p: *const Self) -> Self::V;
    /// The first `lanes` elements at `p`, the others zero.
    unsafe fn vload(p: *const Self, lanes: usize) -> Self::V;
    /// Writes the first `lanes` elements of `v` to `p`.
    unsafe fn vstore(p: *mut Self, v: Self::V, lanes: usize);
    /// `a * b + c`, fused.
    unsafe fn vfma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn vadd(a: Self::V, b: Self::V) -> Self::V;
}

/// `p` itself, as a register the compiler knows nothing about, so that accesses at fixed
/// offsets from it are addressed as `[register + offset]`.
///
/// Without it, LLVM addresses the rows of a loop over several matrices as
/// `[base + index + offset]` with one index shared by all of them. On Intel cores a
/// memory operand with an index is un-laminated from a three-operand instruction such as
/// an FMA with a broadcast operand: two micro-ops instead of one through rename, which
/// keeps a Gram product's row loop well below the FMA units' peak.
#[inline(always)]
// The block touches no memory: it only hides `p`'s value, and hands `p` back unchanged
// (with its provenance, as a function returning its argument would).
#[allow(clippy::pointers_in_nomem_asm_block)]
pub fn base_register<T>(mut p: *const T) -> *const T {
    // SAFETY: an empty instruction that only claims to change `p`: nothing is read or
    // written, no flags or stack are touched.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags));
    }
    p
}

/// The mask of the low `lanes` bits.
#[inline(always)]
fn low_bits(lanes: usize) -> u16 {
    if lanes >= 16 {
        u16::MAX
    } else {
        (1u16 << lanes) - 1
    }
}

/// `impl Avx512` for an element type, from its intrinsics: the register `$v` of `$width`
/// lanes with masks of type `$mask`; `zero`, `splat`, `fma`, `add`; whole, half and masked
/// loads and stores (`$zext` widens a half register, `$cast` takes the low half).
///
/// Half a register (8 `f32` or 4 `f64`: a padded row at small `r`) moves as one 256-bit
/// register, not through a mask: a masked 512-bit store spans 64 bytes whatever its mask,
/// and a load of the next 32-byte row (an update in place, `C <- beta C + A M`) then
/// waits for the store to complete instead of taking its data forwarded, which made
/// narrow matrices slower than wide ones.
macro_rules! avx512_impl {
    (
        $e:ty, $v:ty, $width:literal lanes, mask $mask:ty;
        $zero:ident, $set1:ident, $fmadd:ident, $add:ident;
        load $load:ident, $load_half:ident, $zext:ident, $load_masked:ident;
        store $store:ident, $store_half:ident, $cast:ident, $store_masked:ident;
    ) => {
        impl Avx512 for $e {
            type V = $v;
            const WIDTH: usize = $width;

            #[inline(always)]
            unsafe fn vzero() -> $v {
                $zero()
            }
            #[inline(always)]
            unsafe fn vsplat(p: *const $e) -> $v {
                $set1(*p)
            }
            #[inline(always)]
            unsafe fn vload(p: *const $e, lanes: usize) -> $v {
                if lanes >= $width {
                    $load(p)
                } else if lanes == $width / 2 {
                    $zext($load_half(p))
                } else {
                    $load_masked(low_bits(lanes) as $mask, p)
                }
            }
            #[inline(always)]
            unsafe fn vstore(p: *mut $e, v: $v, lanes: usize) {
                if lanes >= $width {
                    $store(p, v)
                } else if lanes == $width / 2 {
                    $store_half(p, $cast(v))
                } else {
                    $store_masked(p, low_bits(lanes) as $mask, v)
                }
            }
            #[inline(always)]
            unsafe fn vfma(a: $v, b: $v, c: $v) -> $v {
                $fmadd(a, b, c)
            }
            #[inline(always)]
            unsafe fn vadd(a: $v, b: $v) -> $v {
                $add(a, b)
            }
        }
    };
}

avx512_impl! {
    f32, __m512, 16 lanes, mask u16;
    _mm512_setzero_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps;
    load _mm512_loadu_ps, _mm256_loadu_ps, _mm512_zextps256_ps512, _mm512_maskz_loadu_ps;
    store _mm512_storeu_ps, _mm256_storeu_ps, _mm512_castps512_ps256, _mm512_mask_storeu_ps;
}

avx512_impl! {
    f64, __m512d, 8 lanes, mask u8;
    _mm512_setzero_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd;
    load _mm512_loadu_pd, _mm256_loadu_pd, _mm512_zextpd256_pd512, _mm512_maskz_loadu_pd;
    store _mm512_storeu_pd, _mm256_storeu_pd, _mm512_castpd512_pd256, _mm512_mask_storeu_pd;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vload` of `lanes` elements zeroes the others, and `vstore` of `lanes` elements
    /// leaves the memory after them as it was, for every width (the masked ones and the
    /// 256-bit ones alike).
    fn check<E: Avx512 + crate::kernels::Real>() {
        if !available() {
            return;
        }
        let w = E::WIDTH;
        let src: Vec<E> = (0..w).map(|i| E::of_f64(i as f64 + 1.0)).collect();
        for lanes in 1..=w {
            let sentinel = E::of_f64(-9.0);
            let mut dst = vec![sentinel; 2 * w];
            let mut whole = vec![sentinel; w];
            // SAFETY: AVX-512F is present; both buffers hold at least `WIDTH` elements.
            unsafe {
                let v = E::vload(src.as_ptr(), lanes);
                E::vstore(dst.as_mut_ptr(), v, lanes);
                E::vstore(whole.as_mut_ptr(), v, w);
            }
            assert_eq!(dst[..lanes], src[..lanes], "{lanes} lanes stored");
            assert!(
                dst[lanes..].iter().all(|&x| x == sentinel),
                "{lanes} lanes: past them"
            );
            assert!(
                whole[lanes..].iter().all(|&x| x == E::zero()),
                "{lanes} lanes loaded"
            );
        }
    }

    #[test]
    fn loads_and_stores_touch_only_their_lanes() {
        check::<f32>();
        check::<f64>();
    }
}
