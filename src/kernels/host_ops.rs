//! The CPU fast path: [`TallOps`] on plain slices for dfdx's `Cpu` device.

use super::{device_cache, householder_q, parallel, slices, HostMat, Real, TallOps};
use crate::small;
use crate::Error;
use dfdx::shapes::{Dim, HasShape, Shape};
use dfdx::tensor::{Cpu, Tensor, TensorFromVec, ZerosTensor};
use dfdx::tensor_ops::{Device, ReshapeTo};
use nalgebra::DMatrix;

/// [`TallOps`] on `Cpu`: a tensor is copied into a `HostMat` once, all work is fused
/// loops and the `tall_products` on its slice, and the result
/// becomes a tensor: its storage itself (`HostMat::into_exported`), or, where the device
/// caches allocations (`device_cache`), a copy in a buffer from the
/// device.
#[derive(Debug, Clone, Default)]
pub struct HostOps {
    dev: Cpu,
}

/// The size of a tall matrix from which one call's work is shared between two threads:
/// half of a core's 2 MiB L2 cache, where a call's inputs, sum and result no longer fit
/// in it.
pub(crate) const SHARED_BYTES: usize = 1 << 20;

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
    type Kept = DMatrix<f64>;

    fn dims(&self, a: &HostMat<E>) -> (usize, usize) {
        (a.rows(), a.cols())
    }

    fn load<N: Dim, R: Dim>(&self, x: &Tensor<(N, R), E, Cpu>) -> Result<HostMat<E>, Error> {
        let [n, r] = x.shape().concrete();
        // A contiguous view (free unless `x` is strided), then one memcpy.
        let contiguous = x.clone().try_reshape_like(&(n, r)).map_err(Error::device)?;
        Ok(HostMat::filled_with(n, r, |buf| contiguous.copy_into(buf)))
    }

    fn load_pair<N: Dim, R: Dim>(
        &self,
        a: &Tensor<(N, R), E, Cpu>,
        b: &Tensor<(N, R), E, Cpu>,
    ) -> Result<(HostMat<E>, HostMat<E>), Error> {
        let [n, r] = a.shape().concrete();
        if b.shape().concrete() != [n, r] {
            return Ok((self.load(a)?, self.load(b)?));
        }
        let contiguous =
            |t: &Tensor<(N, R), E, Cpu>| t.clone().try_reshape_like(&(n, r)).map_err(Error::device);
        let pair = [contiguous(a)?, contiguous(b)?];
        let [a, b] = HostMat::filled_pair(n, r, |k, buf| pair[k].copy_into(buf));
        Ok((a, b))
    }

    /// Matrices of `SHARED_BYTES` (1 MiB) or more: shared with the helper thread.
    fn sized_call<T>(&self, elements: usize, f: impl FnOnce() -> T) -> T {
        if elements * std::mem::size_of::<E>() >= SHARED_BYTES {
            parallel::splitting(f)
        } else {
            f()
        }
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
            .try_tensor_from_vec(a.into_exported(), shape)
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

    /// One pass: both products on each piece of rows.
    fn mul_small_pair(
        &self,
        (a, m): (&HostMat<E>, &DMatrix<f64>),
        (b, n): (&HostMat<E>, &DMatrix<f64>),
    ) -> Result<HostMat<E>, Error> {
        Ok(a.mul_small_pair(m, b, n))
    }

    /// One pass: the product and the sum together.
    fn mul_small_plus(
        &self,
        a: &HostMat<E>,
        m: &DMatrix<f64>,
        beta: E,
        c: &HostMat<E>,
    ) -> Result<HostMat<E>, Error> {
        Ok(a.mul_small_add_new(m, beta, c))
    }

    /// Each product is written into a spare buffer, and
    /// its input goes back to the pool at once, values kept, for the next load to copy
    /// into: a product handed out as a tensor's storage then leaves an empty allocation in
    /// the pool, not one to zero-fill (`HostMat::into_exported`).
    fn transform_each(
        &self,
        pairs: Vec<(HostMat<E>, DMatrix<f64>)>,
    ) -> Result<Vec<HostMat<E>>, Error> {
        Ok(pairs
            .into_iter()
            .map(|(a, m)| a.mul_small_add(&m, None))
            .collect())
    }

    fn gram_kept(&self, a: &HostMat<E>, b: &HostMat<E>) -> Result<DMatrix<f64>, Error> {
        Ok(a.gram(b))
    }

    fn sym_kept(&self, s: DMatrix<f64>) -> Result<DMatrix<f64>, Error> {
        Ok(small::sym(&s))
    }

    /// `alpha I + beta S` formed on the host, then one product.
    fn mul_kept_add(
        &self,
        a: &HostMat<E>,
        alpha: f64,
        s: &DMatrix<f64>,
        beta: f64,
        c: Option<HostMat<E>>,
    ) -> Result<HostMat<E>, Error> {
        let m = small::identity_plus(alpha, beta, s);
        Ok(a.mul_small_add(&m, c.map(|c| (E::one(), c))))
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

    fn axpy(&self, alpha: E, a: &HostMat<E>, b: HostMat<E>) -> Result<HostMat<E>, Error> {
        Ok(b.plus_scaled(alpha, a))
    }

    fn axpy_gram(
        &self,
        alpha: E,
        a: &HostMat<E>,
        b: HostMat<E>,
    ) -> Result<(HostMat<E>, DMatrix<f64>), Error> {
        Ok(b.plus_scaled_with_gram(alpha, a))
    }

    /// One pass over each storage (its padding is zero).
    fn squared_norms(&self, mats: &[&HostMat<E>]) -> Result<Vec<f64>, Error> {
        Ok(mats.iter().map(|a| a.squared_norm()).collect())
    }

    fn all_finite(&self, a: &HostMat<E>) -> Result<bool, Error> {
        Ok(slices::all_finite(a.storage()))
    }

    fn qr_q(&self, a: HostMat<E>) -> Result<HostMat<E>, Error> {
        Ok(householder_q(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::scratch;
    use dfdx::tensor::SampleTensor;

    /// A result takes its storage out of the pool, and the pool keeps as many buffers,
    /// call after call. (Without the replacement it loses one buffer each call.)
    #[test]
    fn results_leave_the_pool_as_many_buffers() {
        let dev = Cpu::default();
        let ops = HostOps::new(&dev);
        let shape = (300usize, 32usize);
        let t: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&shape);
        // Spare buffers in the pool, which a result that takes a pool buffer uses up.
        let spares: Vec<Vec<f32>> = (0..4).map(|_| scratch::zeroed(300 * 32)).collect();
        spares.into_iter().for_each(scratch::recycle);
        let mut pools = Vec::new();
        for _ in 0..4 {
            let a = ops.load(&t).unwrap();
            let twice = ops.lincomb(1.0, &a, 1.0, &a).unwrap();
            drop(a);
            let out = ops.store(twice, shape).unwrap();
            let storage = &out[[0, 0]] as *const f32 as usize;
            let pool = scratch::pooled::<f32>();
            assert!(
                !pool.contains(&storage),
                "a result's storage is a pool buffer"
            );
            let expected: Vec<f32> = t.as_vec().iter().map(|v| 2.0 * v).collect();
            assert_eq!(out.as_vec(), expected);
            pools.push(pool.len());
        }
        assert!(pools[0] > 0);
        assert!(
            pools.windows(2).all(|w| w[0] == w[1]),
            "buffers in the pool after each call: {pools:?}"
        );
    }

    /// Matrices of [`SHARED_BYTES`] and more are loaded, summed with their Gram matrix,
    /// combined, measured and multiplied on two threads: the same bits as on one, for a
    /// padded and an unpadded shape.
    #[test]
    fn shared_calls_give_the_one_thread_results() {
        let dev = Cpu::default();
        let ops = HostOps::new(&dev);
        for shape in [(16_384usize, 16usize), (13_200, 20)] {
            let elements = shape.0 * shape.1;
            assert!(elements * 4 >= SHARED_BYTES);
            let x: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&shape);
            let xi: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&shape);
            let m = DMatrix::from_fn(shape.1, shape.1, |i, j| (i as f64 - 2.0 * j as f64) / 7.0);
            let one_thread = {
                let (xm, xim) = (ops.load(&x).unwrap(), ops.load(&xi).unwrap());
                let mixed = HostMat::lincomb(0.5, &xm, -2.0, &xim);
                let norm = mixed.squared_norm();
                let y = xim.plus_scaled(1.0, &xm);
                let gram = y.gram(&y);
                (y.mul_small_add(&m, None), gram, mixed, norm)
            };
            let shared = TallOps::<f32>::sized_call(&ops, elements, || {
                let (xm, xim) = ops.load_pair(&x, &xi).unwrap();
                assert_eq!(xm.to_compact(), x.as_vec());
                assert_eq!(xim.to_compact(), xi.as_vec());
                let mixed = ops.lincomb(0.5, &xm, -2.0, &xim).unwrap();
                let norm = ops.squared_norms(&[&mixed]).unwrap()[0];
                let (y, gram) = ops.axpy_gram(1.0, &xm, xim).unwrap();
                (
                    ops.transform_each(vec![(y, m.clone())]).unwrap().remove(0),
                    gram,
                    mixed,
                    norm,
                )
            });
            let expected: f64 = (x.as_vec().iter().zip(xi.as_vec()))
                .map(|(&a, b)| (0.5 * a - 2.0 * b) as f64)
                .map(|v| v * v)
                .sum();
            assert!((shared.3 - expected).abs() <= 1e-6 * expected, "{shape:?}");
            assert_eq!(shared, one_thread, "{shape:?}");
        }
    }
}
