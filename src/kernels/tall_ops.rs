//! The per-device arithmetic on tall `n x r` matrices that the geometry is written in.

use super::Real;
use crate::Error;
use dfdx::shapes::Dim;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;
use nalgebra::DMatrix;

/// A rank-2 tensor `[N, R]` on a backend's device.
pub type TallTensor<N, R, E, D> = Tensor<(N, R), E, D>;

/// A flat (rank-1) tensor on a device: how the optimizer's composed path holds parameters,
/// gradients and moments.
pub type Flat<E, D> = Tensor<(usize,), E, D>;

/// Operations on tall `n x r` matrices (`r` small) that every Stiefel computation reduces
/// to: `O(n r^2)` products with small matrices, Gram matrices, linear combinations and a
/// Householder QR. Small `r x r` results live on the host in `f64`.
///
/// Two implementations: [`HostOps`](super::HostOps), fused loops and GEMM on plain slices
/// (the CPU fast path), and [`ComposedOps`](super::ComposedOps), composed from dfdx tensor
/// ops (the path used on CUDA, also runnable on `Cpu` for testing it).
pub trait TallOps<E: Real> {
    /// The dfdx device whose tensors are loaded and stored.
    type Device: Device<E>;
    /// A tall matrix in this backend's working form.
    type Mat: Clone;
    /// A small `r x r` matrix kept where this backend computes (on the host in `f64`, or
    /// on the device), for work that needs no host round trip.
    type Kept;

    /// `(rows, cols)` of `a`.
    fn dims(&self, a: &Self::Mat) -> (usize, usize);

    /// Reads a tensor into the working form.
    fn load<N: Dim, R: Dim>(
        &self,
        x: &TallTensor<N, R, E, Self::Device>,
    ) -> Result<Self::Mat, Error>;

    /// Reads two tensors into the working form (a host backend copies them on two
    /// threads inside [`TallOps::sized_call`]).
    fn load_pair<N: Dim, R: Dim>(
        &self,
        a: &TallTensor<N, R, E, Self::Device>,
        b: &TallTensor<N, R, E, Self::Device>,
    ) -> Result<(Self::Mat, Self::Mat), Error> {
        Ok((self.load(a)?, self.load(b)?))
    }

    /// Runs `f`, one call's work on tall matrices of `elements` elements each. A host
    /// backend shares the work with its helper thread where such matrices outgrow one
    /// core's cache (below that, moving the data between the cores costs more than the
    /// second core saves).
    fn sized_call<T>(&self, elements: usize, f: impl FnOnce() -> T) -> T {
        let _ = elements;
        f()
    }

    /// Builds a new tensor of shape `shape` from the working form.
    fn store<N: Dim, R: Dim>(
        &self,
        a: Self::Mat,
        shape: (N, R),
    ) -> Result<TallTensor<N, R, E, Self::Device>, Error>;

    /// Overwrites `dst`'s data with `a`, in place: `dst` keeps its tensor id.
    fn store_into<N: Dim, R: Dim>(
        &self,
        a: &Self::Mat,
        dst: &mut TallTensor<N, R, E, Self::Device>,
    ) -> Result<(), Error>;

    /// `A^T B`, returned on the host in `f64`.
    fn gram(&self, a: &Self::Mat, b: &Self::Mat) -> Result<DMatrix<f64>, Error>;

    /// `A M` with a small host matrix `M`.
    fn mul_small(&self, a: &Self::Mat, m: &DMatrix<f64>) -> Result<Self::Mat, Error>;

    /// `beta C + A M` with a small host matrix `M`, computed in `C`'s storage where the
    /// backend can.
    fn mul_small_axpy(
        &self,
        a: &Self::Mat,
        m: &DMatrix<f64>,
        beta: E,
        c: Self::Mat,
    ) -> Result<Self::Mat, Error>;

    /// `beta C + A M` in a new matrix, `C` only read.
    fn mul_small_plus(
        &self,
        a: &Self::Mat,
        m: &DMatrix<f64>,
        beta: E,
        c: &Self::Mat,
    ) -> Result<Self::Mat, Error> {
        self.axpy(beta, c, self.mul_small(a, m)?)
    }

    /// `A M + B N` in a new matrix, with small host matrices `M`, `N` (`A`, `B` of the
    /// same rows): a host backend forms both products in one pass over the rows.
    fn mul_small_pair(
        &self,
        (a, m): (&Self::Mat, &DMatrix<f64>),
        (b, n): (&Self::Mat, &DMatrix<f64>),
    ) -> Result<Self::Mat, Error> {
        self.mul_small_add(b, n, self.mul_small(a, m)?)
    }

    /// `C + A M` ([`TallOps::mul_small_axpy`] with `beta = 1`).
    fn mul_small_add(
        &self,
        a: &Self::Mat,
        m: &DMatrix<f64>,
        c: Self::Mat,
    ) -> Result<Self::Mat, Error> {
        self.mul_small_axpy(a, m, E::one(), c)
    }

    /// `alpha A + beta B`.
    fn lincomb(&self, alpha: E, a: &Self::Mat, beta: E, b: &Self::Mat) -> Result<Self::Mat, Error>;

    /// `B + alpha A`, computed in `B`'s storage where the backend can (the caller gives
    /// `B` up: one matrix fewer in flight than [`TallOps::lincomb`]).
    fn axpy(&self, alpha: E, a: &Self::Mat, b: Self::Mat) -> Result<Self::Mat, Error> {
        self.lincomb(alpha, a, E::one(), &b)
    }

    /// `Y = B + alpha A` as [`TallOps::axpy`] forms it, with its Gram matrix `Y^T Y` (on
    /// the host in `f64`): a host backend forms both in one pass over the rows.
    fn axpy_gram(
        &self,
        alpha: E,
        a: &Self::Mat,
        b: Self::Mat,
    ) -> Result<(Self::Mat, DMatrix<f64>), Error> {
        let y = self.axpy(alpha, a, b)?;
        let gram = self.gram(&y, &y)?;
        Ok((y, gram))
    }

    /// Whether every element of `a` is finite.
    fn all_finite(&self, a: &Self::Mat) -> Result<bool, Error>;

    /// The Q factor of the thin QR of `a` with `diag(R) >= 0` (Householder), computed in
    /// `a`'s storage where the backend can.
    fn qr_q(&self, a: Self::Mat) -> Result<Self::Mat, Error>;

    /// `A^T B`, kept on the backend.
    fn gram_kept(&self, a: &Self::Mat, b: &Self::Mat) -> Result<Self::Kept, Error>;

    /// `sym(S) = (S + S^T) / 2` of a kept matrix.
    fn sym_kept(&self, s: Self::Kept) -> Result<Self::Kept, Error>;

    /// `C + A (alpha I + beta S)` for `c = Some(C)` (in `C`'s storage where the backend
    /// can), or `A (alpha I + beta S)` for `None`, with a kept `S`.
    fn mul_kept_add(
        &self,
        a: &Self::Mat,
        alpha: f64,
        s: &Self::Kept,
        beta: f64,
        c: Option<Self::Mat>,
    ) -> Result<Self::Mat, Error>;

    /// `A_k^T B_k` for every pair: like [`TallOps::gram`], but a device backend brings the
    /// whole batch to the host in one transfer.
    fn grams(&self, pairs: &[(&Self::Mat, &Self::Mat)]) -> Result<Vec<DMatrix<f64>>, Error> {
        pairs.iter().map(|(a, b)| self.gram(a, b)).collect()
    }

    /// For every output `k`, `sum_j A_kj M_kj` with small host matrices `M_kj`: like
    /// [`TallOps::mul_small_add`], but a device backend sends all the small matrices in one
    /// transfer. Panics if an output has no term.
    fn combine(
        &self,
        outputs: Vec<Vec<(&Self::Mat, DMatrix<f64>)>>,
    ) -> Result<Vec<Self::Mat>, Error> {
        outputs
            .into_iter()
            .map(|terms| {
                let mut terms = terms.into_iter();
                let (a, m) = terms
                    .next()
                    .expect("TallOps::combine: an output without terms");
                let first = self.mul_small(a, &m)?;
                terms.try_fold(first, |acc, (a, m)| self.mul_small_add(a, &m, acc))
            })
            .collect()
    }

    /// `A_k M_k` for every pair, with square small host matrices `M_k`; the caller gives
    /// the `A_k` up. A device backend sends all the small matrices in one transfer.
    fn transform_each(
        &self,
        pairs: Vec<(Self::Mat, DMatrix<f64>)>,
    ) -> Result<Vec<Self::Mat>, Error> {
        let (mats, smalls): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        self.combine(mats.iter().zip(smalls).map(|term| vec![term]).collect())
    }

    /// [`TallOps::qr_q`] of each matrix: a device backend moves the batch to the host and
    /// back in one transfer each way.
    fn qr_qs(&self, mats: Vec<Self::Mat>) -> Result<Vec<Self::Mat>, Error> {
        mats.into_iter().map(|a| self.qr_q(a)).collect()
    }

    /// `||A_k||_F^2` of each matrix, accumulated in `f64` (by default the traces of
    /// [`TallOps::grams`]: one transfer on a device backend).
    fn squared_norms(&self, mats: &[&Self::Mat]) -> Result<Vec<f64>, Error> {
        let pairs: Vec<_> = mats.iter().map(|a| (*a, *a)).collect();
        Ok(self.grams(&pairs)?.iter().map(|g| g.trace()).collect())
    }

    /// [`TallOps::all_finite`] of each matrix: a device backend answers with one transfer.
    fn all_finite_each(&self, mats: &[&Self::Mat]) -> Result<Vec<bool>, Error> {
        mats.iter().map(|a| self.all_finite(a)).collect()
    }
}
