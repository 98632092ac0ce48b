//! The host backend's door for fused work: its matrices held in pieces of rows, and the
//! work on those pieces shared between threads.
//!
//! A fused optimizer step (the Riemannian composition on `Cpu`) runs the Euclidean rule
//! and the Gram products of the step on the same pieces of rows of a product, while they
//! are in cache. The optimizer writes that step against these two traits and the element
//! trait only; the host matrices, the product loops and the helper thread stay private to
//! the kernels.

use super::{HostMat, HostOps, Real, TallOps};
use nalgebra::DMatrix;

/// A tall `rows x cols` matrix on the host whose products are split into pieces of rows
/// (in padded storage: rows `padded_cols(cols)` elements apart, padding zero).
pub trait RowPieces<E: Real>: Clone + Send + Sync + Sized {
    /// A piece of rows of a product, as work fused with the product sees it.
    type Rows<'a>: PieceOfRows<'a, E, Self> + Send
    where
        Self: 'a;

    /// A matrix holding compact row-major `data`. Panics if the length is not
    /// `rows * cols`.
    fn from_compact(rows: usize, cols: usize, data: Vec<E>) -> Self;

    /// Wraps padded storage, as [`RowPieces::into_padded`] returns it.
    fn from_padded(rows: usize, cols: usize, data: Vec<E>) -> Self;

    /// The padded storage, moved out.
    fn into_padded(self) -> Vec<E>;

    /// The compact row-major data.
    fn into_compact(self) -> Vec<E>;

    /// The padded storage.
    fn padded(&self) -> &[E];

    /// `(rows, cols)`.
    fn shape(&self) -> (usize, usize);

    /// The storage length of each piece of rows, in order.
    fn piece_lens(&self) -> Vec<usize>;

    /// This matrix cut into its pieces of rows, for work on them that is not fused with a
    /// product (run it with [`HostBackend::run_pieces`]).
    fn pieces_mut(&mut self) -> Vec<Self::Rows<'_>>;

    /// `beta C + A M` in `C`'s storage (`A = self`, `M` a small host matrix), then
    /// `then(extra, piece)` on each piece of rows of the result as soon as it is final, on
    /// the thread that formed it; `extras` holds one value per piece.
    fn mul_small_axpy_then<T: Send>(
        &self,
        m: &DMatrix<f64>,
        beta: E,
        c: Self,
        extras: Vec<T>,
        then: impl Fn(T, Self::Rows<'_>) + Sync,
    ) -> Self;

    /// The Gram matrix (`rows x cols`) from the parts that the pieces of a product gave:
    /// the same bits as the Gram product of the whole matrices.
    fn sum_grams(parts: Vec<Vec<E>>, rows: usize, cols: usize) -> DMatrix<f64>;
}

/// One piece of rows of a product `P` (a matrix laid out like `M`), final.
pub trait PieceOfRows<'a, E, M> {
    /// The product's rows in padded storage, to update in place.
    fn rows_mut(&mut self) -> &mut [E];

    /// The product's rows, given up for the piece's lifetime.
    fn into_rows(self) -> &'a mut [E];

    /// `P^T B[rows]`: this piece's part of the Gram product of `P` and `b`.
    fn gram(&self, b: &M) -> Vec<E>;

    /// `A[rows]^T P`: this piece's part of the Gram product of `a` and `P`.
    fn gram_of(&self, a: &M) -> Vec<E>;

    /// `P^T P`: this piece's part of `P`'s own Gram matrix.
    fn self_gram(&self) -> Vec<E>;

    /// `C[rows] <- C[rows] + P M`, where `c_rows` holds those rows of a matrix `C` laid
    /// out like `P`.
    fn mul_small_add_to(&self, m: &DMatrix<f64>, c_rows: &mut [E]);
}

/// A host backend whose working form is held in pieces of rows, with the thread split for
/// work on them.
pub trait HostBackend<E: Real>: TallOps<E, Mat: RowPieces<E>, Kept = DMatrix<f64>> {
    /// Runs `f` on every job, sharing the jobs with a helper thread inside
    /// [`HostBackend::splitting`]: the results do not depend on which thread runs a job.
    fn run_pieces<T: Send>(&self, jobs: Vec<T>, f: impl Fn(T) + Sync);

    /// Runs `f` while [`HostBackend::run_pieces`] may share its jobs with a helper thread:
    /// worth it where several passes go over the same pieces (an optimizer step).
    fn splitting<R>(&self, f: impl FnOnce() -> R) -> R;
}

impl<E: Real> HostBackend<E> for HostOps
where
    HostOps: TallOps<E, Mat = HostMat<E>, Kept = DMatrix<f64>>,
{
    fn run_pieces<T: Send>(&self, jobs: Vec<T>, f: impl Fn(T) + Sync) {
        super::parallel::run(jobs, f)
    }

    fn splitting<R>(&self, f: impl FnOnce() -> R) -> R {
        super::parallel::splitting(f)
    }
}
