//! The generic path: [`TallOps`] composed from dfdx tensor ops, for any dfdx device.

use super::{householder_q, HostMat, Real, TallOps};
use crate::Error;
use dfdx::shapes::{Axes2, Dim, HasShape, Rank0, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{Device, PermuteTo, ReshapeTo, SumTo, TryAdd, TryMatMul, TryMul};
use nalgebra::DMatrix;

/// [`TallOps`] for any dfdx device, composed from dfdx ops: the `n x r` products run on
/// the device (cuBLAS on CUDA), `r x r` results make one host round trip each, and the
/// Householder QR is done on the host (one transfer each way).
///
/// This is the path used on `Cuda`; on `Cpu` it is slower than [`HostOps`](super::HostOps)
/// but computes the same thing, which is how the tests check it without a GPU.
#[derive(Debug, Clone)]
pub struct ComposedOps<D> {
    dev: D,
}

impl<D: Clone> ComposedOps<D> {
    /// The composed backend for `dev`.
    pub fn new(dev: &D) -> Self {
        Self { dev: dev.clone() }
    }
}

type Mat<E, D> = Tensor<(usize, usize), E, D>;

/// Copies a small host matrix to the device, row-major, converted to `E`.
fn upload<E: Real, D: Device<E>>(dev: &D, m: &DMatrix<f64>) -> Result<Mat<E, D>, Error> {
    let data: Vec<E> = m.transpose().iter().map(|&v| E::of_f64(v)).collect();
    dev.try_tensor_from_vec(data, (m.nrows(), m.ncols()))
        .map_err(Error::device)
}

impl<E: Real, D: Device<E>> TallOps<E> for ComposedOps<D> {
    type Device = D;
    type Mat = Mat<E, D>;

    fn dims(&self, a: &Mat<E, D>) -> (usize, usize) {
        *a.shape()
    }

    fn load<N: Dim, R: Dim>(&self, x: &Tensor<(N, R), E, D>) -> Result<Mat<E, D>, Error> {
        let [n, r] = x.shape().concrete();
        x.clone().try_reshape_like(&(n, r)).map_err(Error::device)
    }

    fn store<N: Dim, R: Dim>(
        &self,
        a: Mat<E, D>,
        shape: (N, R),
    ) -> Result<Tensor<(N, R), E, D>, Error> {
        let [n, r] = shape.concrete();
        Error::check_shape(TallOps::<E>::dims(self, &a), (n, r))?;
        a.try_reshape_like(&shape).map_err(Error::device)
    }

    fn store_into<N: Dim, R: Dim>(
        &self,
        a: &Mat<E, D>,
        dst: &mut Tensor<(N, R), E, D>,
    ) -> Result<(), Error> {
        let [n, r] = dst.shape().concrete();
        Error::check_shape(TallOps::<E>::dims(self, a), (n, r))?;
        let src = a
            .clone()
            .try_reshape_like(dst.shape())
            .map_err(Error::device)?;
        dst.try_fill_with_zeros().map_err(Error::device)?;
        dst.try_axpy(1.0, &src, 1.0).map_err(Error::device)
    }

    fn gram(&self, a: &Mat<E, D>, b: &Mat<E, D>) -> Result<DMatrix<f64>, Error> {
        let (_, ra) = *a.shape();
        let (_, rb) = *b.shape();
        let g = a
            .clone()
            .try_permute::<_, Axes2<1, 0>>()
            .and_then(|at| at.try_matmul(b.clone()))
            .map_err(Error::device)?;
        Ok(DMatrix::from_row_iterator(
            ra,
            rb,
            g.as_vec().into_iter().map(Real::to_f64),
        ))
    }

    fn mul_small(&self, a: &Mat<E, D>, m: &DMatrix<f64>) -> Result<Mat<E, D>, Error> {
        let m = upload(&self.dev, m)?;
        a.clone().try_matmul(m).map_err(Error::device)
    }

    fn mul_small_add(
        &self,
        a: &Mat<E, D>,
        m: &DMatrix<f64>,
        c: Mat<E, D>,
    ) -> Result<Mat<E, D>, Error> {
        let am = self.mul_small(a, m)?;
        c.try_add(am).map_err(Error::device)
    }

    fn lincomb(&self, alpha: E, a: &Mat<E, D>, beta: E, b: &Mat<E, D>) -> Result<Mat<E, D>, Error> {
        let mut out = b.clone();
        out.try_axpy(beta.to_f64(), a, alpha.to_f64())
            .map_err(Error::device)?;
        Ok(out)
    }

    fn all_finite(&self, a: &Mat<E, D>) -> Result<bool, Error> {
        // 0 * x is 0 for finite x and NaN otherwise; NaN survives the sum.
        let s = a
            .clone()
            .try_mul(E::zero())
            .and_then(|z| z.try_sum::<Rank0, _>())
            .map_err(Error::device)?;
        Ok(s.as_vec()[0] == E::zero())
    }

    fn qr_q(&self, a: Mat<E, D>) -> Result<Mat<E, D>, Error> {
        let (n, r) = *a.shape();
        let q = householder_q(HostMat::new(n, r, a.as_vec()));
        self.dev
            .try_tensor_from_vec(q.into_compact(), (n, r))
            .map_err(Error::device)
    }
}
