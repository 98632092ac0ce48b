//! A dense row-major `n x r` matrix on the host: the CPU fast path's working type.

use super::slices;
use super::Real;
use nalgebra::DMatrix;

/// A row-major `rows x cols` matrix in a plain `Vec`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMat<E> {
    /// Number of rows `n`.
    pub rows: usize,
    /// Number of columns `r`.
    pub cols: usize,
    /// Row-major data, `rows * cols` long.
    pub data: Vec<E>,
}

impl<E: Real> HostMat<E> {
    /// Wraps row-major `data`. Panics if the length is not `rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<E>) -> Self {
        assert_eq!(data.len(), rows * cols, "HostMat: data length");
        Self { rows, cols, data }
    }

    /// `A^T B` (`cols_a x cols_b`, computed in `E` by GEMM, returned in `f64`).
    pub fn gram(&self, b: &Self) -> DMatrix<f64> {
        assert_eq!(self.rows, b.rows, "HostMat::gram: row counts differ");
        let (ra, rb) = (self.cols, b.cols);
        let mut c = vec![E::zero(); ra * rb];
        // SAFETY: A^T is `ra x n` with strides (1, ra) over self.data (n * ra long);
        // B is `n x rb` with strides (rb, 1); C is `ra x rb` row-major and owned here.
        unsafe {
            E::gemm(
                ra,
                self.rows,
                rb,
                E::one(),
                self.data.as_ptr(),
                1,
                ra as isize,
                b.data.as_ptr(),
                rb as isize,
                1,
                E::zero(),
                c.as_mut_ptr(),
                rb as isize,
                1,
            );
        }
        DMatrix::from_row_iterator(ra, rb, c.into_iter().map(Real::to_f64))
    }

    /// `C + A M` where `M` is a small host matrix (`cols x m.ncols()`); `C` defaults to 0.
    pub fn mul_small_add(&self, m: &DMatrix<f64>, c: Option<&Self>) -> Self {
        assert_eq!(self.cols, m.nrows(), "HostMat::mul_small: inner dimensions");
        let k = m.ncols();
        let m_e: Vec<E> = m.transpose().iter().map(|&v| E::of_f64(v)).collect();
        let (mut out, beta) = match c {
            Some(c) => {
                assert_eq!((c.rows, c.cols), (self.rows, k), "HostMat::mul_small_add");
                (c.data.clone(), E::one())
            }
            None => (vec![E::zero(); self.rows * k], E::zero()),
        };
        // SAFETY: A is `n x r` row-major, M (transposed iteration above gives row-major)
        // is `r x k`, out is `n x k` row-major and owned here.
        unsafe {
            E::gemm(
                self.rows,
                self.cols,
                k,
                E::one(),
                self.data.as_ptr(),
                self.cols as isize,
                1,
                m_e.as_ptr(),
                k as isize,
                1,
                beta,
                out.as_mut_ptr(),
                k as isize,
                1,
            );
        }
        Self::new(self.rows, k, out)
    }

    /// `alpha A + beta B`.
    pub fn lincomb(alpha: E, a: &Self, beta: E, b: &Self) -> Self {
        assert_eq!((a.rows, a.cols), (b.rows, b.cols), "HostMat::lincomb");
        let mut out = vec![E::zero(); a.data.len()];
        slices::lincomb(alpha, &a.data, beta, &b.data, &mut out);
        Self::new(a.rows, a.cols, out)
    }
}
