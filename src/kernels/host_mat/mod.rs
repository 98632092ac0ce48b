//! A dense row-major `n x r` matrix on the host: the CPU fast path's working type.

mod pieces;

use super::layout::padded_stride;
use super::scratch;
use super::tall_products::{self, Strided};
use super::Real;
use super::{padding, parallel, slices};
use nalgebra::DMatrix;
use std::ops::Range;

/// A row-major `rows x cols` matrix whose rows are `stride` elements apart
/// (`stride = cols` rounded up to `ROW_ALIGN`); the padding holds zeros.
///
/// Storage comes from, and returns on drop to, a per-thread pool.
#[derive(Debug, PartialEq)]
pub struct HostMat<E: Real> {
    rows: usize,
    cols: usize,
    stride: usize,
    data: Vec<E>,
}

impl<E: Real> Drop for HostMat<E> {
    fn drop(&mut self) {
        scratch::recycle(std::mem::take(&mut self.data));
    }
}

impl<E: Real> Clone for HostMat<E> {
    fn clone(&self) -> Self {
        let mut data = scratch::overwritten(self.data.len());
        data.copy_from_slice(&self.data);
        Self { data, ..*self }
    }
}

impl<E: Real> HostMat<E> {
    /// The padded row length for `cols` columns.
    pub fn stride_for(cols: usize) -> usize {
        padded_stride(cols)
    }

    /// A `rows x cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::with_buffer(rows, cols, scratch::zeroed)
    }

    /// A matrix whose every element (padding included) the caller will overwrite.
    fn overwritten(rows: usize, cols: usize) -> Self {
        Self::with_buffer(rows, cols, scratch::overwritten)
    }

    /// A `rows x cols` matrix in the storage `buffer(len)` gives.
    fn with_buffer(rows: usize, cols: usize, buffer: fn(usize) -> Vec<E>) -> Self {
        let stride = Self::stride_for(cols);
        Self {
            rows,
            cols,
            stride,
            data: buffer(rows * stride),
        }
    }

    /// Fills a matrix through `fill`, which must write all of the buffer it receives: the
    /// storage itself when `stride == cols`, else a compact row-major buffer that is then
    /// copied in with zero padding.
    pub fn filled_with(rows: usize, cols: usize, fill: impl FnOnce(&mut [E])) -> Self {
        if Self::stride_for(cols) == cols {
            let mut m = Self::overwritten(rows, cols);
            fill(&mut m.data);
            return m;
        }
        let mut compact = scratch::overwritten(rows * cols);
        fill(&mut compact);
        let stride = Self::stride_for(cols);
        let mut data = scratch::spare(rows * stride);
        padding::pad_rows(&compact, rows, cols, stride, &mut data);
        scratch::recycle(compact);
        Self {
            rows,
            cols,
            stride,
            data,
        }
    }

    /// Two `rows x cols` matrices, matrix `k` filled by `fill(k, ..)` as
    /// [`HostMat::filled_with`] fills one; the two fills are two jobs for
    /// [`parallel::run`].
    pub fn filled_pair(
        rows: usize,
        cols: usize,
        fill: impl Fn(usize, &mut [E]) + Sync,
    ) -> [Self; 2] {
        if Self::stride_for(cols) != cols {
            return [0, 1].map(|k| Self::filled_with(rows, cols, |buf| fill(k, buf)));
        }
        let mut pair = [Self::overwritten(rows, cols), Self::overwritten(rows, cols)];
        let jobs: Vec<_> = pair
            .iter_mut()
            .map(|m| &mut m.data[..])
            .enumerate()
            .collect();
        parallel::run(jobs, |(k, buf)| fill(k, buf));
        pair
    }

    /// A matrix holding compact row-major `data`. Panics if the length is not `rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<E>) -> Self {
        assert_eq!(data.len(), rows * cols, "HostMat: data length");
        if Self::stride_for(cols) == cols {
            return Self {
                rows,
                cols,
                stride: cols,
                data,
            };
        }
        let m = Self::filled_with(rows, cols, |buf| buf.copy_from_slice(&data));
        scratch::recycle(data);
        m
    }

    /// Wraps padded storage (`rows * stride_for(cols)` long, padding zero), as returned by
    /// [`HostMat::into_storage`].
    pub fn from_storage(rows: usize, cols: usize, data: Vec<E>) -> Self {
        let stride = Self::stride_for(cols);
        assert_eq!(data.len(), rows * stride, "HostMat::from_storage: length");
        Self {
            rows,
            cols,
            stride,
            data,
        }
    }

    /// The padded storage, moved out.
    pub fn into_storage(mut self) -> Vec<E> {
        std::mem::take(&mut self.data)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between the starts of consecutive rows.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The padded storage, `rows * stride` long.
    pub fn storage(&self) -> &[E] {
        &self.data
    }

    /// The padded storage, mutably. Padding must stay zero.
    pub fn storage_mut(&mut self) -> &mut [E] {
        &mut self.data
    }

    /// Element `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> E {
        self.data[i * self.stride + j]
    }

    /// Runs `f` on the compact row-major data (no copy when `stride == cols`).
    pub fn with_compact<R>(&self, f: impl FnOnce(&[E]) -> R) -> R {
        if self.stride == self.cols {
            return f(&self.data);
        }
        let compact = self.to_compact();
        let out = f(&compact);
        scratch::recycle(compact);
        out
    }

    /// The compact row-major data, copied.
    pub fn to_compact(&self) -> Vec<E> {
        let mut out = Vec::new();
        padding::compact_rows(&self.data, self.rows, self.stride, self.cols, &mut out);
        out
    }

    /// The compact row-major data (moved out when `stride == cols`).
    pub fn into_compact(mut self) -> Vec<E> {
        if self.stride == self.cols {
            std::mem::take(&mut self.data)
        } else {
            self.to_compact()
        }
    }

    /// The compact row-major data, to leave the pool for good (as a tensor's storage).
    /// Compact storage itself is handed over, and an allocation as long takes its place
    /// in the `scratch` pool at once, with nothing written to it
    /// (`scratch::replace`); padded storage is copied out.
    ///
    /// The replacement is allocated while the handed-over buffer is still alive. Allocated
    /// later (when the pool next runs short, after the caller has freed the results), it
    /// let glibc return the freed results to the system and map them in again (page faults
    /// on every call of a loop that drops its results). How a heap reuses memory is the
    /// allocator's business; dfdx's allocation cache (`Cpu::enable_cache`) avoids the
    /// question.
    pub fn into_exported(self) -> Vec<E> {
        let handed_over = self.stride == self.cols;
        let data = self.into_compact();
        if handed_over {
            scratch::replace::<E>(data.len());
        }
        data
    }

    /// This matrix as padded storage for the `tall_products` kernels.
    pub fn strided(&self) -> Strided<'_, E> {
        Strided {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
        }
    }

    /// `A^T B` (`cols_a x cols_b`, computed in `E`, returned in `f64`).
    pub fn gram(&self, b: &Self) -> DMatrix<f64> {
        let c = tall_products::gram(self.strided(), b.strided());
        to_dmatrix(c, self.cols, b.cols)
    }

    /// `beta C + A M` for `c = Some((beta, C))`, computed in `C`'s storage, or `A M`
    /// for `None`, written into a spare buffer; `M` is a small host
    /// matrix (`cols x m.ncols()`).
    pub fn mul_small_add(&self, m: &DMatrix<f64>, c: Option<(E, Self)>) -> Self {
        let Some((beta, mut out)) = c else {
            return self.product(m, None);
        };
        assert_eq!(self.cols, m.nrows(), "HostMat::mul_small: inner dimensions");
        let k = m.ncols();
        assert_eq!(
            (out.rows, out.cols),
            (self.rows, k),
            "HostMat::mul_small_add"
        );
        let stride = out.stride;
        let m_e = Self::padded_small(m, stride);
        tall_products::mul_small_add(self.strided(), &m_e, beta, &mut out.data, stride);
        out
    }

    /// `beta C + A M` in a new matrix, `C` only read: written into a
    /// spare buffer, with no zero-filling before
    /// (`tall_products::mul_small_add_into`).
    pub fn mul_small_add_new(&self, m: &DMatrix<f64>, beta: E, c: &Self) -> Self {
        self.product(m, Some((beta, c)))
    }

    /// `beta C + A M` (or `A M` for `None`) written into a [spare](scratch::spare)
    /// buffer: no zero-filling before the product writes it
    /// ([`tall_products::mul_small_add_into`]).
    fn product(&self, m: &DMatrix<f64>, c: Option<(E, &Self)>) -> Self {
        assert_eq!(self.cols, m.nrows(), "HostMat::mul_small: inner dimensions");
        let (rows, cols, stride) = (self.rows, m.ncols(), Self::stride_for(m.ncols()));
        if let Some((_, c)) = c {
            assert_eq!((c.rows, c.cols), (rows, cols), "HostMat::mul_small_add_new");
        }
        let m_e = Self::padded_small(m, stride);
        let mut data = scratch::spare(rows * stride);
        let src = c.map(|(beta, c)| (beta, &c.data[..]));
        tall_products::mul_small_add_into(self.strided(), &m_e, src, &mut data, stride);
        Self {
            rows,
            cols,
            stride,
            data,
        }
    }

    /// `A M + B N` in a new matrix (`B` with this matrix's rows), both products on each
    /// piece of rows while it is in cache ([`tall_products::mul_small_pair_into`]).
    pub fn mul_small_pair(&self, m: &DMatrix<f64>, b: &Self, n: &DMatrix<f64>) -> Self {
        assert_eq!(
            self.cols,
            m.nrows(),
            "HostMat::mul_small_pair: inner dimensions"
        );
        assert_eq!(
            b.cols,
            n.nrows(),
            "HostMat::mul_small_pair: inner dimensions"
        );
        assert_eq!(m.ncols(), n.ncols(), "HostMat::mul_small_pair: outputs");
        let (rows, cols, stride) = (self.rows, m.ncols(), Self::stride_for(m.ncols()));
        let (m_e, n_e) = (Self::padded_small(m, stride), Self::padded_small(n, stride));
        let mut data = scratch::spare(rows * stride);
        tall_products::mul_small_pair_into(
            (self.strided(), &m_e),
            (b.strided(), &n_e),
            &mut data,
            stride,
        );
        Self {
            rows,
            cols,
            stride,
            data,
        }
    }

    /// `M` in `E`, rows padded with zeros to `stride` (an output's row length).
    fn padded_small(m: &DMatrix<f64>, stride: usize) -> Vec<E> {
        let mut m_e = vec![E::zero(); m.nrows() * stride];
        for (i, row) in m_e.chunks_exact_mut(stride).enumerate() {
            for (j, v) in row[..m.ncols()].iter_mut().enumerate() {
                *v = E::of_f64(m[(i, j)]);
            }
        }
        m_e
    }

    /// `self + alpha A`, in this matrix's storage, by pieces of rows ([`parallel::run`]).
    pub fn plus_scaled(mut self, alpha: E, a: &Self) -> Self {
        assert_eq!(
            (a.rows, a.cols),
            (self.rows, self.cols),
            "HostMat::plus_scaled"
        );
        // Padding: 0 + alpha 0 = 0.
        let jobs = self.spans_mut();
        parallel::run(jobs, |(y, span)| slices::axpy(alpha, &a.data[span], y));
        self
    }

    /// `alpha A + beta B`, by pieces of rows ([`parallel::run`]).
    pub fn lincomb(alpha: E, a: &Self, beta: E, b: &Self) -> Self {
        assert_eq!((a.rows, a.cols), (b.rows, b.cols), "HostMat::lincomb");
        // Padding: alpha 0 + beta 0 = 0.
        let mut out = Self::overwritten(a.rows, a.cols);
        let jobs = out.spans_mut();
        parallel::run(jobs, |(o, span)| {
            slices::lincomb(alpha, &a.data[span.clone()], beta, &b.data[span], o)
        });
        out
    }

    /// `||A||_F^2`, accumulated in `f64` by pieces of rows ([`parallel::run`]) and their
    /// sums added in order (the padding is zero).
    pub fn squared_norm(&self) -> f64 {
        let spans: Vec<_> = (self.pieces().into_iter())
            .map(|rows| span(rows, self.stride))
            .collect();
        let mut parts = vec![0.0; spans.len()];
        let jobs: Vec<_> = spans.into_iter().zip(parts.iter_mut()).collect();
        parallel::run(jobs, |(span, part)| {
            *part = slices::squared_norm(&self.data[span])
        });
        parts.iter().sum()
    }

    /// The storage cut at the pieces of rows of `tall_products::pieces`, each part with
    /// its range of storage.
    fn spans_mut(&mut self) -> Vec<(&mut [E], Range<usize>)> {
        let (ranges, stride) = (self.pieces(), self.stride);
        tall_products::cut_at_pieces(&mut self.data, ranges, stride)
            .into_iter()
            .map(|(data, rows)| (data, span(rows, stride)))
            .collect()
    }

    /// The pieces of rows of `tall_products::pieces`.
    fn pieces(&self) -> Vec<Range<usize>> {
        tall_products::pieces(self.rows, self.stride)
    }
}

/// The storage of `rows`, rows `stride` elements apart.
fn span(rows: Range<usize>, stride: usize) -> Range<usize> {
    rows.start * stride..rows.end * stride
}

/// A row-major `rows x cols` result in `E`, as an `f64` matrix.
fn to_dmatrix<E: Real>(c: Vec<E>, rows: usize, cols: usize) -> DMatrix<f64> {
    E::from_row_major(rows, cols, &c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix with distinct, exactly representable values.
    fn ramp<E: Real>(rows: usize, cols: usize, seed: usize) -> HostMat<E> {
        let data = (0..rows * cols)
            .map(|i| E::of_f64(((i * 7 + seed * 13) % 101) as f64 / 16.0 - 3.0))
            .collect();
        HostMat::new(rows, cols, data)
    }

    /// The fused sum and Gram product: the same bits as the sum, then `gram`, over many
    /// pieces and one, padded rows and unpadded.
    #[test]
    fn plus_scaled_with_gram_is_plus_scaled_then_gram() {
        fn check<E: Real>(rows: usize, cols: usize) {
            let (a, b) = (ramp::<E>(rows, cols, 1), ramp::<E>(rows, cols, 2));
            let alpha = E::of_f64(-0.75);
            let expected = b.clone().plus_scaled(alpha, &a);
            let expected_gram = expected.gram(&expected);
            let (y, gram) = b.plus_scaled_with_gram(alpha, &a);
            assert_eq!(y, expected, "{rows} x {cols}");
            assert_eq!(gram, expected_gram, "{rows} x {cols}");
        }
        check::<f32>(5000, 16);
        check::<f32>(3000, 5);
        check::<f64>(4100, 12);
        check::<f64>(40, 3);
    }

    /// Each of the pair is filled with its own values, as `filled_with` fills one.
    #[test]
    fn filled_pair_fills_each_as_filled_with() {
        for (rows, cols) in [(2000usize, 16usize), (700, 5)] {
            let values =
                |k: usize| -> Vec<f32> { (0..rows * cols).map(|i| (i * (k + 2)) as f32).collect() };
            let [a, b] =
                HostMat::<f32>::filled_pair(rows, cols, |k, buf| buf.copy_from_slice(&values(k)));
            for (k, m) in [a, b].into_iter().enumerate() {
                let one =
                    HostMat::<f32>::filled_with(rows, cols, |buf| buf.copy_from_slice(&values(k)));
                assert_eq!(m, one, "{rows} x {cols}, matrix {k}");
            }
        }
    }
}
