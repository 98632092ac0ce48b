//! One reflection sweep of the row-major Householder factorisation: apply reflector `k`
//! to the rows below it and collect the inner products the next reflector needs.

use super::super::layout::ROW_ALIGN;
use super::super::simd::Fma;
use super::super::Real;

use super::blocking::SUM_BLOCK;

/// Lanes of the fixed-width inner loops: one AVX2 register of `f32`.
const LANES: usize = ROW_ALIGN;

/// One 8-wide chunk of a slice, by value.
#[inline(always)]
fn lanes<E: Real>(s: &[E], chunk: usize) -> [E; LANES] {
    s[chunk * LANES..(chunk + 1) * LANES].try_into().unwrap()
}

/// One reflection sweep over `rows` (each `stride` long) for reflector `k` (`pivot`), on
/// the `A` chunks of each row starting at column `off`: every row gets
/// `A[i, ..] += v_i * w` (`v_i = A[i, k]`, `w` holding `-beta_k w_j`, zero for `j <= k`),
/// and `u += A[i, k+1] A[i, ..]` (after the update) collects the inner products the next
/// reflector needs, in blocks of [`SUM_BLOCK`] rows. Pivot `None` is the sweep before the
/// first reflector: no update (`w = 0`), `u += A[i, 0] A[i, ..]`.
///
/// `A[i, k+1]` after the update is recomputed from the row by the same fused operation,
/// so segments of a row are independent. With `A` a compile-time constant the body is
/// straight-line vector code with the accumulators in registers.
#[inline(always)]
fn sweep_segment<E: Real, F: Fma, const A: usize>(
    rows: &mut [E],
    (stride, off): (usize, usize),
    pivot: Option<usize>,
    w: &[E],
    u: &mut [E],
) {
    let x_col = pivot.map_or(0, |k| k + 1);
    let w_next = w[x_col];
    let wv: [[E; LANES]; A] = std::array::from_fn(|c| lanes(&w[off..], c));
    for block in rows.chunks_mut(stride * SUM_BLOCK) {
        let mut acc = [[E::zero(); LANES]; A];
        for row in block.chunks_exact_mut(stride) {
            let vi = pivot.map_or(E::zero(), |k| row[k]);
            let x = F::mul_add(vi, w_next, row[x_col]);
            let segment = &mut row[off..off + A * LANES];
            let mut rv: [[E; LANES]; A] = std::array::from_fn(|c| lanes(segment, c));
            for c in 0..A {
                for l in 0..LANES {
                    rv[c][l] = F::mul_add(vi, wv[c][l], rv[c][l]);
                    acc[c][l] = F::mul_add(x, rv[c][l], acc[c][l]);
                }
            }
            for (c, chunk) in segment.chunks_exact_mut(LANES).enumerate() {
                chunk.copy_from_slice(&rv[c]);
            }
        }
        for (c, chunk) in u[off..off + A * LANES].chunks_exact_mut(LANES).enumerate() {
            for l in 0..LANES {
                chunk[l] += acc[c][l];
            }
        }
    }
}

/// Chunks per segment: 4 row registers, 4 of `w` and 4 accumulators fit the 16 AVX2
/// registers without spilling.
const SEGMENT_CHUNKS: usize = 4;

/// The sweep for reflector `k` (`pivot`; `None` before the first) over whole rows (`u`
/// gets every column's inner product; the update is a no-op before column `k+1`, where
/// `w` is zero), in segments of up to [`SEGMENT_CHUNKS`] chunks, each with its width as a
/// constant.
///
/// Under [`Fma::AVX512`] the sweep runs on AVX-512 registers
/// ([`sweep_avx512`](super::sweep_avx512)) when a row's chunks fit its tiles.
#[inline(always)]
pub fn sweep<E: Real, F: Fma>(
    rows: &mut [E],
    stride: usize,
    pivot: Option<usize>,
    w: &[E],
    u: &mut [E],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: F::AVX512 holds only in code compiled with AVX-512F (simd::dispatch).
    if F::AVX512 && unsafe { super::sweep_avx512::sweep(rows, stride, pivot, w, u) } {
        return;
    }
    let mut off = 0;
    while off < stride {
        let chunks = ((stride - off) / LANES).min(SEGMENT_CHUNKS);
        let at = (stride, off);
        match chunks {
            1 => sweep_segment::<E, F, 1>(rows, at, pivot, w, u),
            2 => sweep_segment::<E, F, 2>(rows, at, pivot, w, u),
            3 => sweep_segment::<E, F, 3>(rows, at, pivot, w, u),
            _ => sweep_segment::<E, F, SEGMENT_CHUNKS>(rows, at, pivot, w, u),
        }
        off += chunks * LANES;
    }
}
