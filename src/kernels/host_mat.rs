//! A dense row-major `n x r` matrix on the host: the CPU fast path's working type.

use super::scratch;
use super::slices;
use super::tall_products::{self, Strided};
use super::Real;
use nalgebra::DMatrix;

/// Rows are padded to a multiple of this many elements (one AVX2 register of `f32`), so
/// that row kernels run over whole vector registers.
pub const ROW_ALIGN: usize = 8;

/// A row-major `rows x cols` matrix whose rows are `stride` elements apart
/// (`stride = cols` rounded up to [`ROW_ALIGN`]); the padding holds zeros.
///
/// Storage comes from, and returns on drop to, a per-thread [pool](super::scratch).
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
        cols.div_ceil(ROW_ALIGN).max(1) * ROW_ALIGN
    }

    /// A `rows x cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let stride = Self::stride_for(cols);
        Self {
            rows,
            cols,
            stride,
            data: scratch::zeroed(rows * stride),
        }
    }

    /// A matrix whose every element (padding included) the caller will overwrite.
    fn overwritten(rows: usize, cols: usize) -> Self {
        let stride = Self::stride_for(cols);
        Self {
            rows,
            cols,
            stride,
            data: scratch::overwritten(rows * stride),
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
        let mut m = Self::zeros(rows, cols);
        {
            let mut compact = scratch::overwritten(rows * cols);
            fill(&mut compact);
            for (dst, src) in m
                .data
                .chunks_exact_mut(m.stride)
                .zip(compact.chunks_exact(cols))
            {
                dst[..cols].copy_from_slice(src);
            }
            scratch::recycle(compact);
        }
        m
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
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for row in self.data.chunks_exact(self.stride) {
            out.extend_from_slice(&row[..self.cols]);
        }
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

    /// This matrix as padded storage for the [`tall_products`] kernels.
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
        DMatrix::from_row_iterator(self.cols, b.cols, c.into_iter().map(Real::to_f64))
    }

    /// `beta C + A M` for `c = Some((beta, C))`, computed in `C`'s storage, or `A M`
    /// for `None`; `M` is a small host matrix (`cols x m.ncols()`).
    pub fn mul_small_add(&self, m: &DMatrix<f64>, c: Option<(E, Self)>) -> Self {
        assert_eq!(self.cols, m.nrows(), "HostMat::mul_small: inner dimensions");
        let k = m.ncols();
        let (mut out, beta) = match c {
            Some((beta, c)) => {
                assert_eq!((c.rows, c.cols), (self.rows, k), "HostMat::mul_small_add");
                (c, beta)
            }
            // The product writes every element, padding included.
            None => (Self::overwritten(self.rows, k), E::zero()),
        };
        let stride = out.stride;
        let m_e = Self::padded_small(m, stride);
        tall_products::mul_small_add(self.strided(), &m_e, beta, &mut out.data, stride);
        out
    }

    /// `A M` for a square small `M` (`cols x cols`), in `A`'s storage.
    pub fn mul_small_in_place(mut self, m: &DMatrix<f64>) -> Self {
        assert_eq!(
            (m.nrows(), m.ncols()),
            (self.cols, self.cols),
            "HostMat::mul_small_in_place"
        );
        let m_e = Self::padded_small(m, self.stride);
        tall_products::mul_small_in_place(&mut self.data, self.rows, self.cols, self.stride, &m_e);
        self
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

    /// `alpha A + beta B`.
    pub fn lincomb(alpha: E, a: &Self, beta: E, b: &Self) -> Self {
        assert_eq!((a.rows, a.cols), (b.rows, b.cols), "HostMat::lincomb");
        // Padding: alpha 0 + beta 0 = 0.
        let mut out = Self::overwritten(a.rows, a.cols);
        slices::lincomb(alpha, &a.data, beta, &b.data, &mut out.data);
        out
    }
}
