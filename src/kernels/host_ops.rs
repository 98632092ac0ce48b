//! The CPU fast path: [`TallOps`] on plain slices for dfdx's `Cpu` device.

use super::{device_cache, householder_q, slices, HostMat, Real, TallOps};
use crate::Error;
use dfdx::shapes::{Dim, HasShape, Shape};
use dfdx::tensor::{Cpu, Tensor, TensorFromVec, ZerosTensor};
use dfdx::tensor_ops::{Device, ReshapeTo};
use nalgebra::DMatrix;

/// [`TallOps`] on `Cpu`: a tensor is copied into a [`HostMat`] once, all work is fused
/// loops and the [`tall_products`](super::tall_products) on its slice, and the result
/// becomes a tensor: its storage itself, or, where the device caches allocations
/// ([`device_cache`](super::device_cache)), a copy in a buffer from the device.
#[derive(Debug, Clone, Default)]
pub struct HostOps {
    dev: Cpu,
}

impl HostOps {
    /// The host backend for `dev`.
    pub fn new(dev: &Cpu) -> Self {
        Self { dev: dev.clone() }
    }
}

impl<E: Real> TallOps<E> for HostOps
where
    Cpu: Device<E>,
{
    type Device = Cpu;
    type Mat = HostMat<E>;

    fn dims(&self, a: &HostMat<E>) -> (usize, usize) {
        (a.rows(), a.cols())
    }

    fn load<N: Dim, R: Dim>(&self, x: &Tensor<(N, R), E, Cpu>) -> Result<HostMat<E>, Error> {
        let [n, r] = x.shape().concrete();
        // A contiguous view (free unless `x` is strided), then one memcpy.
        let contiguous = x.clone().try_reshape_like(&(n, r)).map_err(Error::device)?;
        Ok(HostMat::filled_with(n, r, |buf| contiguous.copy_into(buf)))
    }

    fn store<N: Dim, R: Dim>(
        &self,
        a: HostMat<E>,
        shape: (N, R),
    ) -> Result<Tensor<(N, R), E, Cpu>, Error> {
        let [n, r] = shape.concrete();
        Error::check_shape(TallOps::<E>::dims(self, &a), (n, r))?;
        if device_cache::caching(&self.dev) {
            // A buffer of ours would enter the cache when the tensor drops, and stay there.
            let mut t = self.dev.try_zeros_like(&shape).map_err(Error::device)?;
            a.with_compact(|data| t.copy_from(data));
            return Ok(t);
        }
        self.dev
            .try_tensor_from_vec(a.into_compact(), shape)
            .map_err(Error::device)
    }

    fn store_into<N: Dim, R: Dim>(
        &self,
        a: &HostMat<E>,
        dst: &mut Tensor<(N, R), E, Cpu>,
    ) -> Result<(), Error> {
        let [n, r] = dst.shape().concrete();
        Error::check_shape(TallOps::<E>::dims(self, a), (n, r))?;
        a.with_compact(|data| dst.copy_from(data));
        Ok(())
    }

    fn gram(&self, a: &HostMat<E>, b: &HostMat<E>) -> Result<DMatrix<f64>, Error> {
        Ok(a.gram(b))
    }

    fn mul_small(&self, a: &HostMat<E>, m: &DMatrix<f64>) -> Result<HostMat<E>, Error> {
        Ok(a.mul_small_add(m, None))
    }

    fn mul_small_axpy(
        &self,
        a: &HostMat<E>,
        m: &DMatrix<f64>,
        beta: E,
        c: HostMat<E>,
    ) -> Result<HostMat<E>, Error> {
        Ok(a.mul_small_add(m, Some((beta, c))))
    }

    fn transform_each(
        &self,
        pairs: Vec<(HostMat<E>, DMatrix<f64>)>,
    ) -> Result<Vec<HostMat<E>>, Error> {
        Ok(pairs
            .into_iter()
            .map(|(a, m)| a.mul_small_in_place(&m))
            .collect())
    }

    fn lincomb(
        &self,
        alpha: E,
        a: &HostMat<E>,
        beta: E,
        b: &HostMat<E>,
    ) -> Result<HostMat<E>, Error> {
        Ok(HostMat::lincomb(alpha, a, beta, b))
    }

    fn all_finite(&self, a: &HostMat<E>) -> Result<bool, Error> {
        Ok(slices::all_finite(a.storage()))
    }

    fn qr_q(&self, a: HostMat<E>) -> Result<HostMat<E>, Error> {
        Ok(householder_q(a))
    }
}
