//! The two matrix products every host Stiefel computation reduces to, on row-major padded
//! storage (rows `stride` apart, `stride` a multiple of [`ROW_ALIGN`], padding zero):
//!
//! - the Gram product `A^T B` (`n x ra` by `n x rb`, a small result), and
//! - `C <- beta C + A M` with a small `M` (`n x k` by `k x m`).
//!
//! Both are long reductions or long sweeps over `n` rows with `r <= 64` columns, a shape
//! general GEMM kernels handle poorly. On CPUs with AVX-512F they run as register-tiled
//! kernels: a tile of 8 columns of `A` (one [`ROW_ALIGN`] block, so the tile never leaves
//! the padded row) against up to three registers of `B`, or 8 rows of `C` against up to
//! three registers of `M`; 8 or more independent accumulator chains hide the FMA latency.
//! Elsewhere they call the `gemm` crate ([`Real::gemm`]).
//!
//! The Gram product sums rows in blocks of [`SUM_BLOCK`] before adding each block's
//! partial sums to the total, so that a sum of `n` terms carries about
//! `(SUM_BLOCK + n / SUM_BLOCK) eps` relative error in the worst case, not `n eps`.

use super::host_mat::ROW_ALIGN;
use super::{parallel, Real};

/// Rows per partial sum in the Gram product.
pub const SUM_BLOCK: usize = 64;

/// A row-major matrix in padded storage: `rows x cols`, rows `stride` apart.
#[derive(Clone, Copy)]
pub struct Strided<'a, E> {
    /// The storage, at least `rows * stride` long.
    pub data: &'a [E],
    /// Number of rows.
    pub rows: usize,
    /// Number of (unpadded) columns.
    pub cols: usize,
    /// Distance between row starts: a multiple of [`ROW_ALIGN`], at least `cols`.
    pub stride: usize,
}

impl<E> Strided<'_, E> {
    #[cfg(target_arch = "x86_64")]
    fn raw(&self) -> avx512_kernels::RawStrided<E> {
        avx512_kernels::RawStrided {
            ptr: self.data.as_ptr(),
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
        }
    }

    fn check(&self) {
        assert!(
            self.stride.is_multiple_of(ROW_ALIGN)
                && self.stride >= self.cols
                && self.data.len() >= self.rows * self.stride,
            "tall_products: storage is not padded row-major"
        );
    }
}

/// Elements of the widest operand below which a product runs in one piece.
pub const SPLIT_MIN_ELEMENTS: usize = 32 << 10;

/// Elements of the widest operand per piece of a split product.
pub const PIECE_ELEMENTS: usize = 16 << 10;

/// The row ranges a product over `rows` rows of `stride` elements is cut into: one piece
/// below [`SPLIT_MIN_ELEMENTS`], else pieces of about [`PIECE_ELEMENTS`] (whole multiples
/// of [`SUM_BLOCK`] rows). The pieces run on up to two threads ([`parallel::run`]); they
/// depend on the shape alone, so results do not depend on the threads.
pub fn pieces(rows: usize, stride: usize) -> Vec<std::ops::Range<usize>> {
    if rows * stride < SPLIT_MIN_ELEMENTS {
        return std::iter::once(0..rows).collect();
    }
    let per_piece = (PIECE_ELEMENTS / stride.max(1) / SUM_BLOCK).max(1) * SUM_BLOCK;
    (0..rows)
        .step_by(per_piece)
        .map(|r0| r0..(r0 + per_piece).min(rows))
        .collect()
}

/// `buf`, rows `stride` apart, cut at the row ranges of [`pieces`] (`ranges`), each part
/// with its rows; `buf` must hold at least the rows the ranges cover.
pub fn cut_at_pieces<T>(
    buf: &mut [T],
    ranges: Vec<std::ops::Range<usize>>,
    stride: usize,
) -> Vec<(&mut [T], std::ops::Range<usize>)> {
    let rows = ranges.last().map_or(0, |r| r.end);
    // Every piece but the last is as long as the first.
    let per_piece = ranges.first().map_or(1, |r| r.len().max(1)) * stride;
    buf[..rows * stride]
        .chunks_mut(per_piece)
        .zip(ranges)
        .collect()
}

impl<'a, E> Strided<'a, E> {
    /// Rows `rows` of this matrix.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Strided<'a, E> {
        Strided {
            data: &self.data[rows.start * self.stride..rows.end * self.stride],
            rows: rows.len(),
            ..*self
        }
    }
}

/// `A^T B` as a row-major `a.cols x b.cols` vector. Panics if the row counts differ.
///
/// Large products are split by rows ([`pieces`]), and the pieces' products summed in
/// order.
pub fn gram<E: Real>(a: Strided<'_, E>, b: Strided<'_, E>) -> Vec<E> {
    a.check();
    b.check();
    assert_eq!(a.rows, b.rows, "tall_products::gram: row counts differ");
    let ranges = pieces(a.rows, a.stride.max(b.stride));
    if ranges.len() == 1 {
        return gram_piece(a, b);
    }
    let mut parts = vec![Vec::new(); ranges.len()];
    let jobs: Vec<_> = ranges.into_iter().zip(parts.iter_mut()).collect();
    parallel::run(jobs, |(rows, part)| {
        *part = gram_piece(a.rows(rows.clone()), b.rows(rows));
    });
    sum_pieces(parts)
}

/// The Gram matrices of a product's [`pieces`] summed in order, as [`gram`] sums them:
/// `gram_piece` of every piece, then this, gives `gram`'s result to the bit.
pub fn sum_pieces<E: Real>(parts: Vec<Vec<E>>) -> Vec<E> {
    let mut parts = parts.into_iter();
    let mut out = parts.next().expect("at least one piece");
    for part in parts {
        out.iter_mut().zip(part).for_each(|(o, p)| *o += p);
    }
    out
}

/// [`gram`] of one piece, on this thread. Panics if the row counts differ.
pub fn gram_piece<E: Real>(a: Strided<'_, E>, b: Strided<'_, E>) -> Vec<E> {
    a.check();
    b.check();
    assert_eq!(
        a.rows, b.rows,
        "tall_products::gram_piece: row counts differ"
    );
    let mut out = vec![E::zero(); a.cols * b.cols];
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: the CPU has AVX-512F; the storage was checked above.
        unsafe { avx512_kernels::gram(a, b, &mut out) };
        return out;
    }
    gemm_gram(a, b, &mut out);
    out
}

/// `C <- beta C + A M`, where `m` is the `a.cols x c_cols` matrix `M` stored row-major with
/// rows `c_stride` apart and zeros beyond column `c_cols` (so that `C`'s padding stays
/// zero), and `c` is `a.rows` rows of `c_stride` elements. With `beta = 0`, `C`'s old
/// contents are not read. Panics on inconsistent sizes.
pub fn mul_small_add<E: Real>(a: Strided<'_, E>, m: &[E], beta: E, c: &mut [E], c_stride: usize) {
    let extras = vec![(); pieces(a.rows, a.stride.max(c_stride)).len()];
    mul_small_add_then(a, m, beta, c, c_stride, extras, |(), _, _| ());
}

/// [`mul_small_add`], then `then(extra, rows, c_rows)` on each piece of rows of `C` as soon
/// as it is final, on the thread that formed it (while it is in that core's cache): work
/// on the same rows fused with the product. `extras` holds one value per piece
/// ([`pieces`]`(a.rows, max(a.stride, c_stride))`), handed to `then` with its piece.
/// Panics on inconsistent sizes.
pub fn mul_small_add_then<E: Real, T: Send>(
    a: Strided<'_, E>,
    m: &[E],
    beta: E,
    c: &mut [E],
    c_stride: usize,
    extras: Vec<T>,
    then: impl Fn(T, std::ops::Range<usize>, &mut [E]) + Sync,
) {
    a.check();
    assert!(
        c_stride.is_multiple_of(ROW_ALIGN)
            && m.len() == a.cols * c_stride
            && c.len() >= a.rows * c_stride,
        "tall_products::mul_small_add: sizes"
    );
    let ranges = pieces(a.rows, a.stride.max(c_stride));
    assert_eq!(
        extras.len(),
        ranges.len(),
        "tall_products: one extra per piece"
    );
    let jobs: Vec<_> = cut_at_pieces(c, ranges, c_stride)
        .into_iter()
        .zip(extras)
        .collect();
    parallel::run(jobs, |((c, rows), extra)| {
        mul_small_add_piece(a.rows(rows.clone()), m, beta, c, c_stride);
        then(extra, rows, c);
    });
}

/// [`mul_small_add`] of one piece, on this thread (`c` holds `a.rows` rows; sizes as
/// [`mul_small_add`] checks them).
pub fn mul_small_add_piece<E: Real>(
    a: Strided<'_, E>,
    m: &[E],
    beta: E,
    c: &mut [E],
    c_stride: usize,
) {
    a.check();
    assert!(
        m.len() == a.cols * c_stride && c.len() >= a.rows * c_stride,
        "tall_products::mul_small_add_piece: sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: the CPU has AVX-512F; the sizes were checked by the caller, and `c` is
        // borrowed apart from `a`.
        unsafe {
            let c = c.as_mut_ptr();
            avx512_kernels::mul_small_add(a.raw(), m, beta, c.cast_const(), c, c_stride);
        }
        return;
    }
    gemm_mul_small_add(a, m, beta, c, c_stride);
}

/// `D = beta C + A M` (operands as [`mul_small_add`]; `c = Some((beta, C))`, or `None`
/// for `A M`) written into the spare capacity of `out`, which must be empty with room
/// for `a.rows * c_stride` elements; sets `out`'s length. `C` is only read, and `out`
/// needs no zero-filling first: with AVX-512F the kernel writes every element of its
/// rows (padding included) straight into the unwritten memory. Elsewhere `out` is
/// filled (with `C`, or zeros) and the product runs in place. Panics on inconsistent
/// sizes.
pub fn mul_small_add_into<E: Real>(
    a: Strided<'_, E>,
    m: &[E],
    c: Option<(E, &[E])>,
    out: &mut Vec<E>,
    c_stride: usize,
) {
    a.check();
    let len = a.rows * c_stride;
    assert!(
        c_stride.is_multiple_of(ROW_ALIGN)
            && m.len() == a.cols * c_stride
            && out.is_empty()
            && out.capacity() >= len
            && c.is_none_or(|(_, c)| c.len() >= len),
        "tall_products::mul_small_add_into: sizes"
    );
    let beta = c.map_or(E::zero(), |(beta, _)| beta);
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        let ranges = pieces(a.rows, a.stride.max(c_stride));
        let jobs = cut_at_pieces(out.spare_capacity_mut(), ranges, c_stride);
        parallel::run(jobs, |(dst, rows)| {
            let src = c.map_or(std::ptr::null(), |(_, c)| {
                c[rows.start * c_stride..].as_ptr()
            });
            // SAFETY: the CPU has AVX-512F; sizes checked above. `dst` is this piece's
            // rows of `out`'s spare capacity, apart from every input; the kernel writes
            // each of its elements and reads `beta C` from `src` (not read for
            // `beta = 0`).
            unsafe {
                avx512_kernels::mul_small_add(
                    a.rows(rows).raw(),
                    m,
                    beta,
                    src,
                    dst.as_mut_ptr().cast::<E>(),
                    c_stride,
                )
            };
        });
        // SAFETY: the pieces cover the first `len` elements, and each was written.
        unsafe { out.set_len(len) };
        return;
    }
    match c {
        Some((_, c)) => out.extend_from_slice(&c[..len]),
        None => out.resize(len, E::zero()),
    }
    mul_small_add(a, m, beta, out, c_stride);
}

/// [`gram`] by the `gemm` crate (checked arguments).
fn gemm_gram<E: Real>(a: Strided<'_, E>, b: Strided<'_, E>, out: &mut [E]) {
    // SAFETY: A^T is `ra x n` with strides (1, stride_a); B is `n x rb` with strides
    // (stride_b, 1); the output is `ra x rb` row-major and owned here.
    unsafe {
        E::gemm(
            a.cols,
            a.rows,
            b.cols,
            E::one(),
            a.data.as_ptr(),
            1,
            a.stride as isize,
            b.data.as_ptr(),
            b.stride as isize,
            1,
            E::zero(),
            out.as_mut_ptr(),
            b.cols as isize,
            1,
        );
    }
}

/// [`mul_small_add`] by the `gemm` crate (checked arguments).
fn gemm_mul_small_add<E: Real>(a: Strided<'_, E>, m: &[E], beta: E, c: &mut [E], c_stride: usize) {
    // SAFETY: A is `n x k` with row stride `stride`, M is `k x c_stride` row-major, C is
    // `n x c_stride` row-major; all borrowed here, C exclusively.
    unsafe {
        E::gemm(
            a.rows,
            a.cols,
            c_stride,
            E::one(),
            a.data.as_ptr(),
            a.stride as isize,
            1,
            m.as_ptr(),
            c_stride as isize,
            1,
            beta,
            c.as_mut_ptr(),
            c_stride as isize,
            1,
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_kernels {
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
                let bv: [E::V; J] =
                    std::array::from_fn(|j| E::vload(rb.add(j * E::WIDTH), lanes[j]));
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
                let mv: [E::V; J] =
                    std::array::from_fn(|j| E::vload(mrow.add(j * E::WIDTH), lanes[j]));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A padded `rows x cols` matrix with deterministic entries in [-1, 1].
    fn padded<E: Real>(rows: usize, cols: usize, seed: usize) -> (Vec<E>, usize) {
        let stride = cols.div_ceil(ROW_ALIGN).max(1) * ROW_ALIGN;
        let mut data = vec![E::zero(); rows * stride];
        for i in 0..rows {
            for j in 0..cols {
                let h = (i * 131 + j * 71 + seed * 29) % 197;
                data[i * stride + j] = E::of_f64(h as f64 / 98.0 - 1.0);
            }
        }
        (data, stride)
    }

    /// A small `rows x cols` matrix `M` stored as the products take it: rows `stride`
    /// apart, zeros beyond column `cols`.
    fn small_matrix<E: Real>(rows: usize, cols: usize, stride: usize, seed: usize) -> Vec<E> {
        let (mut m, _) = padded::<E>(rows, stride, seed);
        for row in m.chunks_exact_mut(stride) {
            row[cols..].fill(E::zero());
        }
        m
    }

    fn view<E>(data: &[E], rows: usize, cols: usize, stride: usize) -> Strided<'_, E> {
        Strided {
            data,
            rows,
            cols,
            stride,
        }
    }

    /// The kernels (AVX-512 where the CPU has it) and the `gemm` crate both match a plain
    /// f64 triple loop, for shapes that exercise partial registers, partial tiles and the
    /// block sums.
    fn check_products<E: Real>(tol: f64) {
        for &(n, ra, rb) in &[
            (1, 1, 1),
            (7, 3, 5),
            (9, 8, 8),
            (70, 16, 16),
            (131, 13, 24),
            (200, 33, 40),
            (65, 64, 64),
            (300, 20, 49),
            (40, 8, 8),
            (50, 20, 10),
            (37, 16, 7),
            // Cut into pieces (SPLIT_MIN_ELEMENTS and more).
            (3000, 16, 16),
            (2500, 13, 24),
        ] {
            let (a, sa) = padded::<E>(n, ra, 1);
            let (b, sb) = padded::<E>(n, rb, 2);
            let (av, bv) = (view(&a, n, ra, sa), view(&b, n, rb, sb));
            let expect = |i: usize, j: usize| {
                (0..n)
                    .map(|k| a[k * sa + i].to_f64() * b[k * sb + j].to_f64())
                    .sum::<f64>()
            };
            let fast = gram(av, bv);
            let mut slow = vec![E::zero(); ra * rb];
            gemm_gram(av, bv, &mut slow);
            for i in 0..ra {
                for j in 0..rb {
                    let e = expect(i, j);
                    let bound = tol * (1.0 + e.abs()) * n as f64;
                    assert!(
                        (fast[i * rb + j].to_f64() - e).abs() <= bound,
                        "gram {n}x{ra}x{rb}"
                    );
                    assert!(
                        (slow[i * rb + j].to_f64() - e).abs() <= bound,
                        "gemm {n}x{ra}x{rb}"
                    );
                }
            }
            // C <- beta C + A M with M: ra x rb, for beta 0 (C garbage) and -0.5.
            let m_pad = small_matrix::<E>(ra, rb, sb, 3);
            for beta in [0.0, -0.5] {
                let mut c_fast = vec![E::of_f64(if beta == 0.0 { f64::NAN } else { 0.25 }); n * sb];
                for row in c_fast.chunks_exact_mut(sb) {
                    row[rb..].fill(E::zero());
                }
                let mut c_slow = c_fast.clone();
                mul_small_add(av, &m_pad, E::of_f64(beta), &mut c_fast, sb);
                gemm_mul_small_add(av, &m_pad, E::of_f64(beta), &mut c_slow, sb);
                for i in 0..n {
                    for j in 0..sb {
                        let e = if j < rb {
                            let old = if beta == 0.0 { 0.0 } else { 0.25 * beta };
                            old + (0..ra)
                                .map(|k| a[i * sa + k].to_f64() * m_pad[k * sb + j].to_f64())
                                .sum::<f64>()
                        } else {
                            0.0
                        };
                        let bound = tol * (1.0 + e.abs()) * ra as f64;
                        let (f, s) = (c_fast[i * sb + j].to_f64(), c_slow[i * sb + j].to_f64());
                        assert!(
                            (f - e).abs() <= bound,
                            "mul {n}x{ra}x{rb} beta {beta}: {f} vs {e}"
                        );
                        assert!((s - e).abs() <= bound, "gemm mul {n}x{ra}x{rb} beta {beta}");
                    }
                }
            }
        }
    }

    /// The product written into spare capacity equals [`mul_small_add`] into a written
    /// buffer, bit for bit, with and without `beta C` (`C` unchanged), for outputs of one
    /// register block and wider, in one piece and in several.
    fn check_into<E: Real>() {
        for &(n, r, k) in &[
            (1, 1, 1),
            (37, 7, 7),
            (70, 16, 16),
            (131, 13, 5),
            (50, 20, 33),
            (65, 64, 64),
            (3000, 16, 16),
        ] {
            let (a, sa) = padded::<E>(n, r, 4);
            let (c, sc) = padded::<E>(n, k, 6);
            let m = small_matrix::<E>(r, k, sc, 5);
            for beta in [None, Some(E::of_f64(-0.5))] {
                let mut expect = c.clone();
                let b = beta.unwrap_or(E::zero());
                mul_small_add(view(&a, n, r, sa), &m, b, &mut expect, sc);
                let mut out = Vec::with_capacity(n * sc);
                let src = beta.map(|b| (b, &c[..]));
                mul_small_add_into(view(&a, n, r, sa), &m, src, &mut out, sc);
                let same = |x: &[E], y: &[E]| {
                    x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_f64() == q.to_f64())
                };
                assert!(same(&out, &expect), "{n} x {r} x {k}, beta {beta:?}");
                assert!(same(&c, &padded::<E>(n, k, 6).0), "C unchanged");
            }
        }
    }

    #[test]
    fn product_into_spare_capacity_matches_the_one_in_place() {
        check_into::<f32>();
        check_into::<f64>();
    }

    #[test]
    fn products_match_a_plain_loop_f64() {
        check_products::<f64>(1e-15);
    }

    #[test]
    fn products_match_a_plain_loop_f32() {
        check_products::<f32>(1e-6);
    }

    /// The same with the pieces shared between two threads.
    #[test]
    fn products_split_between_threads() {
        parallel::splitting(|| {
            check_products::<f64>(1e-15);
            check_into::<f32>();
        });
    }
}
