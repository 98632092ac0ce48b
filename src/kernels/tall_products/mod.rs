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

use super::layout::ROW_ALIGN;
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

/// `D = A M + B N` (each operand as [`mul_small_add`]'s, `B` with `A`'s rows) written into
/// the spare capacity of `out` as [`mul_small_add_into`] writes `A M`: each piece of rows
/// takes both products while it is in cache, so the sum costs about one pass over `D`.
/// Panics on inconsistent sizes.
pub fn mul_small_pair_into<E: Real>(
    (a, m): (Strided<'_, E>, &[E]),
    (b, n): (Strided<'_, E>, &[E]),
    out: &mut Vec<E>,
    c_stride: usize,
) {
    a.check();
    b.check();
    let len = a.rows * c_stride;
    assert!(
        c_stride.is_multiple_of(ROW_ALIGN)
            && b.rows == a.rows
            && m.len() == a.cols * c_stride
            && n.len() == b.cols * c_stride
            && out.is_empty()
            && out.capacity() >= len,
        "tall_products::mul_small_pair_into: sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        let ranges = pieces(a.rows, a.stride.max(b.stride).max(c_stride));
        let jobs = cut_at_pieces(out.spare_capacity_mut(), ranges, c_stride);
        parallel::run(jobs, |(dst, rows)| {
            let d = dst.as_mut_ptr().cast::<E>();
            // SAFETY: the CPU has AVX-512F; sizes checked above. `dst` is this piece's
            // rows of `out`'s spare capacity, apart from every input: the first product
            // writes each of its elements (`beta = 0` reads nothing), the second adds to
            // them in place.
            unsafe {
                let a_rows = a.rows(rows.clone()).raw();
                avx512_kernels::mul_small_add(a_rows, m, E::zero(), std::ptr::null(), d, c_stride);
                let b_rows = b.rows(rows).raw();
                avx512_kernels::mul_small_add(b_rows, n, E::one(), d.cast_const(), d, c_stride);
            }
        });
        // SAFETY: the pieces cover the first `len` elements, and each was written.
        unsafe { out.set_len(len) };
        return;
    }
    out.resize(len, E::zero());
    mul_small_add(a, m, E::zero(), out, c_stride);
    mul_small_add(b, n, E::one(), out, c_stride);
}

/// `C = alpha A B + beta C` on strided storage (`A: m x k`, `B: k x n`, `C: m x n`,
/// element `(i, j)` of `A` at `a[i*rsa + j*csa]`), by the `gemm` crate that dfdx's own
/// `Cpu` matmul uses (runtime AVX2/FMA dispatch), on one thread: the products' fallback on
/// CPUs without AVX-512F. One thread, because waking a pool costs more than these thin
/// products take.
///
/// # Safety
/// The pointers and strides must describe valid, non-overlapping (for `c`) storage of the
/// stated sizes.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<E: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: E,
    a: *const E,
    rsa: isize,
    csa: isize,
    b: *const E,
    rsb: isize,
    csb: isize,
    beta: E,
    c: *mut E,
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
        beta != E::zero(),
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
        gemm::Parallelism::None,
    )
}

/// [`gram`] by the `gemm` crate (checked arguments).
fn gemm_gram<E: Real>(a: Strided<'_, E>, b: Strided<'_, E>, out: &mut [E]) {
    // SAFETY: A^T is `ra x n` with strides (1, stride_a); B is `n x rb` with strides
    // (stride_b, 1); the output is `ra x rb` row-major and owned here.
    unsafe {
        gemm(
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
        gemm(
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
mod avx512_kernels;

#[cfg(test)]
mod tests;
