//! The AVX-512F tiles of the thin products: the Gram product `A^T B` and `C <- beta C + A M`
//! on padded rows, with base-register addressing.

use super::{Strided, ROW_ALIGN, SUM_BLOCK};
use crate::kernels::avx512::base_register;
use crate::kernels::Real;

/// Columns of `A` (rows of `C`) per tile: one padded block, so never past a row.
const TILE: usize = ROW_ALIGN;
/// Registers of `B` (of `M`) per tile: with [`TILE`], at most 24 accumulators.
const MAX_CHUNKS: usize = 3;
/// The tile where `B` (`M`) is one register wide: 16 accumulator chains. Two FMA ports
/// with a 4-cycle latency need 8 chains in flight, and 8 leave no slack.
const WIDE_TILE: usize = 2 * TILE;

/// The registers (`off`, lanes) of columns `first..` of a `stride`-long row, in
/// blocks of up to [`MAX_CHUNKS`].
fn chunk_blocks<E: Real>(stride: usize) -> impl Iterator<Item = (usize, usize)> {
    let block = MAX_CHUNKS * E::WIDTH;
    (0..stride)
        .step_by(block)
        .map(move |off| (off, (stride - off).min(block)))
}

#[target_feature(enable = "avx512f")]
pub unsafe fn gram<E: Real>(a: Strided<'_, E>, b: Strided<'_, E>, out: &mut [E]) {
    for (off, width) in chunk_blocks::<E>(b.stride) {
        let mut i0 = 0;
        while i0 < a.cols {
            if width <= E::WIDTH && i0 + WIDE_TILE <= a.stride {
                gram_tile::<E, WIDE_TILE, 1>(a, b, i0, off, width, out);
                i0 += WIDE_TILE;
                continue;
            }
            match width.div_ceil(E::WIDTH) {
                1 => gram_tile::<E, TILE, 1>(a, b, i0, off, width, out),
                2 => gram_tile::<E, TILE, 2>(a, b, i0, off, width, out),
                _ => gram_tile::<E, TILE, MAX_CHUNKS>(a, b, i0, off, width, out),
            }
            i0 += TILE;
        }
    }
}

/// `out[i0..i0+T, off..off+width] = A[.., i0..i0+T]^T B[.., off..off+width]` (the
/// parts inside `out`): per row, `J` loads of `B`, `T` broadcasts of `A`, `T J` FMAs.
#[inline(always)]
unsafe fn gram_tile<E: Real, const T: usize, const J: usize>(
    a: Strided<'_, E>,
    b: Strided<'_, E>,
    i0: usize,
    off: usize,
    width: usize,
    out: &mut [E],
) {
    let lanes: [usize; J] = std::array::from_fn(|j| width.saturating_sub(j * E::WIDTH));
    let mut total = [[E::zero(); MAX_CHUNKS * 16]; T];
    let (pa, pb) = (a.data.as_ptr().add(i0), b.data.as_ptr().add(off));
    let mut row = 0;
    while row < a.rows {
        let end = (row + SUM_BLOCK).min(a.rows);
        let mut acc = [[E::vzero(); J]; T];
        for i in row..end {
            let ra = base_register(pa.add(i * a.stride));
            let rb = base_register(pb.add(i * b.stride));
            prefetch(ra.wrapping_add(PREFETCH_ROWS * a.stride));
            prefetch(rb.wrapping_add(PREFETCH_ROWS * b.stride));
            let bv: [E::V; J] = std::array::from_fn(|j| E::vload(rb.add(j * E::WIDTH), lanes[j]));
            for (t, acc_t) in acc.iter_mut().enumerate() {
                let s = E::vsplat(ra.add(t));
                for j in 0..J {
                    acc_t[j] = E::vfma(s, bv[j], acc_t[j]);
                }
            }
        }
        for (acc_t, total_t) in acc.iter().zip(total.iter_mut()) {
            for (j, &acc_tj) in acc_t.iter().enumerate() {
                let p = total_t.as_mut_ptr().add(j * E::WIDTH);
                E::vstore(p, E::vadd(E::vload(p, E::WIDTH), acc_tj), E::WIDTH);
            }
        }
        row = end;
    }
    let cols = (b.cols.saturating_sub(off)).min(width);
    for (t, total_t) in total.iter().enumerate().take(a.cols.saturating_sub(i0)) {
        let i = i0 + t;
        out[i * b.cols + off..i * b.cols + off + cols].copy_from_slice(&total_t[..cols]);
    }
}

/// Rows ahead of the one in use that the row loops ask the cache for.
const PREFETCH_ROWS: usize = 12;

/// Asks for the cache line at `p` in L1 (a hint: no fault, whatever `p` is).
#[inline(always)]
unsafe fn prefetch<E>(p: *const E) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
}

/// A padded row-major matrix by its first element (see [`Strided`]).
#[derive(Clone, Copy)]
pub struct RawStrided<E> {
    pub ptr: *const E,
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

/// `C <- beta S + A M`, `S` at `src` laid out like `C` (`C` itself for an update in
/// place; not read for `beta = 0`). Every element of `C`'s rows is written, none read.
#[target_feature(enable = "avx512f")]
pub unsafe fn mul_small_add<E: Real>(
    a: RawStrided<E>,
    m: &[E],
    beta: E,
    src: *const E,
    c: *mut E,
    c_stride: usize,
) {
    let job = Mul {
        a,
        m,
        beta,
        src,
        c,
        c_stride,
    };
    for (off, width) in chunk_blocks::<E>(c_stride) {
        let mut r0 = 0;
        if width <= E::WIDTH && a.stride == a.cols {
            r0 = match a.cols {
                8 => job.rows_with_m_in_registers::<16, 8>(off, width),
                16 => job.rows_with_m_in_registers::<12, 16>(off, width),
                _ => 0,
            };
        }
        if width <= E::WIDTH {
            while r0 + WIDE_TILE <= a.rows {
                job.tile::<WIDE_TILE, 1>(r0, off, width);
                r0 += WIDE_TILE;
            }
        }
        while r0 + TILE <= a.rows {
            job.tile_any::<TILE>(r0, off, width);
            r0 += TILE;
        }
        for r in r0..a.rows {
            job.tile_any::<1>(r, off, width);
        }
    }
}

/// The operands of `C <- beta S + A M` (`M` and `S` rows `c_stride` apart, as `C`'s).
#[derive(Clone, Copy)]
struct Mul<'a, E> {
    a: RawStrided<E>,
    m: &'a [E],
    beta: E,
    src: *const E,
    c: *mut E,
    c_stride: usize,
}

impl<E: Real> Mul<'_, E> {
    /// [`Mul::tile`] with the register count as a constant.
    #[inline(always)]
    unsafe fn tile_any<const T: usize>(self, r0: usize, off: usize, width: usize) {
        match width.div_ceil(E::WIDTH) {
            1 => self.tile::<T, 1>(r0, off, width),
            2 => self.tile::<T, 2>(r0, off, width),
            _ => self.tile::<T, MAX_CHUNKS>(r0, off, width),
        }
    }

    /// `C[r0..r0+T, off..off+width] <- beta C + A[r0..r0+T, ..] M[.., off..off+width]`:
    /// per column of `A`, `J` loads of `M`, `T` broadcasts of `A`, `T J` FMAs.
    #[inline(always)]
    unsafe fn tile<const T: usize, const J: usize>(self, r0: usize, off: usize, width: usize) {
        let Mul { a, m, c_stride, .. } = self;
        let lanes: [usize; J] = std::array::from_fn(|j| width.saturating_sub(j * E::WIDTH));
        let mut acc = [[E::vzero(); J]; T];
        let pa = base_register(a.ptr.add(r0 * a.stride));
        let pm = m.as_ptr().add(off);
        for kk in 0..a.cols {
            let mrow = base_register(pm.add(kk * c_stride));
            let mv: [E::V; J] = std::array::from_fn(|j| E::vload(mrow.add(j * E::WIDTH), lanes[j]));
            for (t, acc_t) in acc.iter_mut().enumerate() {
                let s = E::vsplat(pa.add(t * a.stride + kk));
                for j in 0..J {
                    acc_t[j] = E::vfma(s, mv[j], acc_t[j]);
                }
            }
        }
        self.store(r0, off, lanes, &acc);
    }

    /// Rows `0..` in tiles of `T` with all of `M` (`K` rows of one register) held in
    /// registers: per row, `K` broadcasts of `A` at fixed offsets from one pointer and
    /// `K` FMAs, and no loads of `M`. Needs `A` compact (`stride == cols == K`) and
    /// `width <= E::WIDTH`. Returns the first row not done (a multiple of `T`).
    #[inline(always)]
    unsafe fn rows_with_m_in_registers<const T: usize, const K: usize>(
        self,
        off: usize,
        width: usize,
    ) -> usize {
        let pm = self.m.as_ptr().add(off);
        let mv: [E::V; K] = std::array::from_fn(|k| E::vload(pm.add(k * self.c_stride), width));
        let mut r0 = 0;
        while r0 + T <= self.a.rows {
            let pa = base_register(self.a.ptr.add(r0 * K));
            let mut acc = [[E::vzero(); 1]; T];
            // Unrolled by hand: written as a loop over `k`, the loop stayed rolled and
            // `M` was read from the stack at every step.
            const { assert!(K <= 16) };
            macro_rules! each_k {
                ($($k:literal)*) => {$(
                    if $k < K {
                        let mk = mv[$k];
                        for (t, acc_t) in acc.iter_mut().enumerate() {
                            acc_t[0] = E::vfma(E::vsplat(pa.add(t * K + $k)), mk, acc_t[0]);
                        }
                    }
                )*};
            }
            each_k!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            self.store(r0, off, [width], &acc);
            r0 += T;
        }
        r0
    }

    /// `C[r0..r0+T, off..] <- beta S + acc`, `lanes[j]` lanes of register `j`.
    #[inline(always)]
    unsafe fn store<const T: usize, const J: usize>(
        self,
        r0: usize,
        off: usize,
        lanes: [usize; J],
        acc: &[[E::V; J]; T],
    ) {
        let Mul {
            beta,
            src,
            c,
            c_stride,
            ..
        } = self;
        let at = r0 * c_stride + off;
        // `src` may be null for `beta = 0` (then never read): no `add` on it.
        let (src, c) = (
            base_register(src.wrapping_add(at)),
            base_register(c.add(at)).cast_mut(),
        );
        for (t, acc_t) in acc.iter().enumerate() {
            for j in 0..J {
                let k = t * c_stride + j * E::WIDTH;
                let v = if beta == E::zero() {
                    acc_t[j]
                } else {
                    E::vfma(E::vsplat(&beta), E::vload(src.add(k), lanes[j]), acc_t[j])
                };
                E::vstore(c.add(k), v, lanes[j]);
            }
        }
    }
}
