//! [`HostMat`]'s pieces of rows: the [`RowPieces`] form the fused host step works in.

use super::{to_dmatrix, HostMat};
use crate::kernels::row_pieces::{PieceOfRows, RowPieces};
use crate::kernels::tall_products::{self, Strided};
use crate::kernels::{parallel, slices, Real};
use nalgebra::DMatrix;
use std::ops::Range;

impl<E: Real> HostMat<E> {
    /// `Y = self + alpha A` in this matrix's storage, with `Y^T Y`: each piece of rows is
    /// summed and its Gram product formed while it is in cache, and the pieces' products
    /// are summed as [`HostMat::gram`] sums them (the same matrix to the bit).
    pub fn plus_scaled_with_gram(mut self, alpha: E, a: &Self) -> (Self, DMatrix<f64>) {
        assert_eq!(
            (a.rows, a.cols),
            (self.rows, self.cols),
            "HostMat::plus_scaled_with_gram"
        );
        let (cols, stride) = (self.cols, self.stride);
        let pieces = self.pieces_mut();
        let mut parts = vec![Vec::new(); pieces.len()];
        let jobs: Vec<_> = pieces.into_iter().zip(parts.iter_mut()).collect();
        parallel::run(jobs, |(piece, part)| {
            let span = piece.rows.start * stride..piece.rows.end * stride;
            // Padding: 0 + alpha 0 = 0.
            slices::axpy(alpha, &a.data[span], piece.data);
            *part = piece.self_gram();
        });
        (self, Self::sum_grams(parts, cols, cols))
    }
}
/// One piece of rows of a product ([`RowPieces::mul_small_axpy_then`]) as the work fused
/// with it sees it: which rows, and those rows of the product `P`, final.
pub struct Piece<'a, E> {
    rows: Range<usize>,
    data: &'a mut [E],
    cols: usize,
    stride: usize,
}

impl<E: Real> Piece<'_, E> {
    fn strided(&self) -> Strided<'_, E> {
        Strided {
            data: self.data,
            rows: self.rows.len(),
            cols: self.cols,
            stride: self.stride,
        }
    }
}

impl<'a, E: Real> PieceOfRows<'a, E, HostMat<E>> for Piece<'a, E> {
    fn rows_mut(&mut self) -> &mut [E] {
        self.data
    }

    fn into_rows(self) -> &'a mut [E] {
        self.data
    }

    fn gram(&self, b: &HostMat<E>) -> Vec<E> {
        tall_products::gram_piece(self.strided(), b.strided().rows(self.rows.clone()))
    }

    fn gram_of(&self, a: &HostMat<E>) -> Vec<E> {
        tall_products::gram_piece(a.strided().rows(self.rows.clone()), self.strided())
    }

    fn self_gram(&self) -> Vec<E> {
        tall_products::gram_piece(self.strided(), self.strided())
    }

    fn mul_small_add_to(&self, m: &DMatrix<f64>, c_rows: &mut [E]) {
        let m_e = HostMat::<E>::padded_small(m, self.stride);
        tall_products::mul_small_add_piece(self.strided(), &m_e, E::one(), c_rows, self.stride);
    }
}

/// The pieces are those of `tall_products::pieces`, and their work is fused with
/// `tall_products::mul_small_add_then`.
impl<E: Real> RowPieces<E> for HostMat<E> {
    type Rows<'a> = Piece<'a, E>;

    fn from_compact(rows: usize, cols: usize, data: Vec<E>) -> Self {
        Self::new(rows, cols, data)
    }

    fn from_padded(rows: usize, cols: usize, data: Vec<E>) -> Self {
        Self::from_storage(rows, cols, data)
    }

    fn into_padded(self) -> Vec<E> {
        self.into_storage()
    }

    fn into_compact(self) -> Vec<E> {
        HostMat::into_compact(self)
    }

    fn padded(&self) -> &[E] {
        &self.data
    }

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn piece_lens(&self) -> Vec<usize> {
        let pieces = tall_products::pieces(self.rows, self.stride);
        pieces.iter().map(|p| p.len() * self.stride).collect()
    }

    fn pieces_mut(&mut self) -> Vec<Piece<'_, E>> {
        let (cols, stride) = (self.cols, self.stride);
        let ranges = tall_products::pieces(self.rows, stride);
        tall_products::cut_at_pieces(&mut self.data, ranges, stride)
            .into_iter()
            .map(|(data, rows)| Piece {
                rows,
                data,
                cols,
                stride,
            })
            .collect()
    }

    fn mul_small_axpy_then<T: Send>(
        &self,
        m: &DMatrix<f64>,
        beta: E,
        mut c: Self,
        extras: Vec<T>,
        then: impl Fn(T, Piece<'_, E>) + Sync,
    ) -> Self {
        assert_eq!(
            (self.cols, self.rows, c.rows, c.cols),
            (m.nrows(), c.rows, self.rows, m.ncols()),
            "HostMat::mul_small_axpy_then"
        );
        let (cols, stride) = (c.cols, c.stride);
        let m_e = Self::padded_small(m, stride);
        tall_products::mul_small_add_then(
            self.strided(),
            &m_e,
            beta,
            &mut c.data,
            stride,
            extras,
            |extra, rows, data| {
                let piece = Piece {
                    rows,
                    data,
                    cols,
                    stride,
                };
                then(extra, piece)
            },
        );
        c
    }

    /// Sums the parts in the order `tall_products::sum_pieces` fixes.
    fn sum_grams(parts: Vec<Vec<E>>, rows: usize, cols: usize) -> DMatrix<f64> {
        to_dmatrix(tall_products::sum_pieces(parts), rows, cols)
    }
}
