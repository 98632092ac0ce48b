//! The generic path: [`TallOps`] composed from dfdx tensor ops, for any dfdx device.

use super::{householder_q, HostMat, Real, TallOps, TallTensor};
use crate::Error;
use dfdx::shapes::{Axes2, Dim, HasShape, Rank0, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{Device, PermuteTo, ReshapeTo, SumTo, TryAdd, TryMatMul, TryMul, TryStack};
use nalgebra::DMatrix;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// [`TallOps`] for any dfdx device, composed from dfdx ops: the `n x r` products run on
/// the device (cuBLAS on CUDA); projections and Newton-Schulz steps keep their `r x r`
/// products on the device; the `r x r` factorisations run on the host, and the batch
/// methods ([`TallOps::grams`], [`TallOps::combine`], [`TallOps::qr_qs`],
/// [`TallOps::all_finite_each`]) move a whole batch in one transfer each way (one per
/// distinct matrix shape). The Householder QR is done on the host.
///
/// This is the path used on `Cuda`; on `Cpu` it is slower than [`HostOps`](super::HostOps)
/// but computes the same thing, which is how the tests check it without a GPU.
/// [`ComposedOps::transfers`] counts the host transfers (shared by clones).
#[derive(Debug, Clone)]
pub struct ComposedOps<D> {
    dev: D,
    counts: Arc<[AtomicUsize; 2]>,
}

/// Host transfers made by a [`ComposedOps`] and its clones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Device-to-host copies.
    pub to_host: usize,
    /// Host-to-device copies.
    pub to_device: usize,
}

impl<D: Clone> ComposedOps<D> {
    /// The composed backend for `dev`.
    pub fn new(dev: &D) -> Self {
        Self {
            dev: dev.clone(),
            counts: Arc::default(),
        }
    }

    /// The host transfers made so far by this backend and its clones.
    pub fn transfers(&self) -> Transfers {
        Transfers {
            to_host: self.counts[0].load(Ordering::Relaxed),
            to_device: self.counts[1].load(Ordering::Relaxed),
        }
    }
}

type Mat<E, D> = Tensor<(usize, usize), E, D>;

impl<D: Clone> ComposedOps<D> {
    /// Copies a tensor's data to the host (row-major), counted.
    fn to_host<S: Shape, E: Real>(&self, t: &Tensor<S, E, D>) -> Vec<E>
    where
        D: Device<E>,
    {
        self.counts[0].fetch_add(1, Ordering::Relaxed);
        t.as_vec()
    }

    /// Copies host data (row-major) into a new tensor, counted.
    fn to_device<S: Shape, E: Real>(&self, data: Vec<E>, shape: S) -> Result<Tensor<S, E, D>, Error>
    where
        D: Device<E>,
    {
        self.counts[1].fetch_add(1, Ordering::Relaxed);
        self.dev
            .try_tensor_from_vec(data, shape)
            .map_err(Error::device)
    }

    /// New device matrices from row-major host data, in one transfer: concatenated on the
    /// host, sliced on the device.
    fn upload<E: Real>(&self, mats: Vec<(Vec<E>, (usize, usize))>) -> Result<Vec<Mat<E, D>>, Error>
    where
        D: Device<E>,
    {
        if mats.is_empty() {
            return Ok(Vec::new());
        }
        let total = mats.iter().map(|(v, _)| v.len()).sum();
        let mut data = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(mats.len());
        for (v, shape) in mats {
            spans.push((data.len()..data.len() + v.len(), shape));
            data.extend(v);
        }
        let flat = self.to_device(data, (total,))?;
        spans
            .into_iter()
            .map(|(span, shape)| {
                flat.clone()
                    .try_slice((span,))
                    .and_then(|t| t.try_reshape_like(&shape))
                    .map_err(Error::device)
            })
            .collect()
    }
}

/// What an optimizer step on the composed path needs of its backend beside [`TallOps`]:
/// the device, and the batched host transfers of the `r x r` work. [`ComposedOps`] is
/// the implementation, on every dfdx device.
pub trait ComposedBackend<E: Real, D: Device<E>>:
    TallOps<E, Device = D, Mat = TallTensor<usize, usize, E, D>> + Clone + std::fmt::Debug
{
    /// The device this backend works on.
    fn device(&self) -> &D;

    /// The data of each matrix, row-major, in one transfer per distinct shape.
    fn download(&self, mats: Vec<Mat<E, D>>) -> Result<Vec<Vec<E>>, Error>;

    /// Small host matrices on the device, converted to `E`, in one transfer.
    fn upload_small(&self, mats: &[&DMatrix<f64>]) -> Result<Vec<Mat<E, D>>, Error>;
}

impl<E: Real, D: Device<E>> ComposedBackend<E, D> for ComposedOps<D> {
    fn device(&self) -> &D {
        &self.dev
    }

    /// The matrices are stacked on the device by shape and each stack makes one transfer.
    fn download(&self, mats: Vec<Mat<E, D>>) -> Result<Vec<Vec<E>>, Error> {
        let mut by_shape: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        for (i, m) in mats.iter().enumerate() {
            by_shape.entry(*m.shape()).or_default().push(i);
        }
        let mut out = vec![Vec::new(); mats.len()];
        for ((r, c), idx) in by_shape {
            let stack: Vec<Mat<E, D>> = idx.iter().map(|&i| mats[i].clone()).collect();
            let data = self.to_host(&stack.try_stack().map_err(Error::device)?);
            for (chunk, &i) in data.chunks_exact((r * c).max(1)).zip(&idx) {
                out[i] = chunk.to_vec();
            }
        }
        Ok(out)
    }

    fn upload_small(&self, mats: &[&DMatrix<f64>]) -> Result<Vec<Mat<E, D>>, Error> {
        self.upload(
            mats.iter()
                .map(|m| {
                    let data = E::row_major(m);
                    (data, m.shape())
                })
                .collect(),
        )
    }
}

/// `A^T B` on the device.
fn product<E: Real, D: Device<E>>(a: &Mat<E, D>, b: &Mat<E, D>) -> Result<Mat<E, D>, Error> {
    a.clone()
        .try_permute::<_, Axes2<1, 0>>()
        .and_then(|at| at.try_matmul(b.clone()))
        .map_err(Error::device)
}

impl<E: Real, D: Device<E>> TallOps<E> for ComposedOps<D> {
    type Device = D;
    type Mat = Mat<E, D>;
    type Kept = Mat<E, D>;

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
        Ok(self.grams(&[(a, b)])?.remove(0))
    }

    fn mul_small(&self, a: &Mat<E, D>, m: &DMatrix<f64>) -> Result<Mat<E, D>, Error> {
        let m = self.upload_small(&[m])?.remove(0);
        a.clone().try_matmul(m).map_err(Error::device)
    }

    fn mul_small_axpy(
        &self,
        a: &Mat<E, D>,
        m: &DMatrix<f64>,
        beta: E,
        mut c: Mat<E, D>,
    ) -> Result<Mat<E, D>, Error> {
        let am = self.mul_small(a, m)?;
        c.try_axpy(beta.to_f64(), &am, 1.0).map_err(Error::device)?;
        Ok(c)
    }

    fn lincomb(&self, alpha: E, a: &Mat<E, D>, beta: E, b: &Mat<E, D>) -> Result<Mat<E, D>, Error> {
        axpby(alpha, a, beta, b.clone())
    }

    fn axpy(&self, alpha: E, a: &Mat<E, D>, b: Mat<E, D>) -> Result<Mat<E, D>, Error> {
        axpby(alpha, a, E::one(), b)
    }

    fn all_finite(&self, a: &Mat<E, D>) -> Result<bool, Error> {
        Ok(self.all_finite_each(&[a])?[0])
    }

    fn qr_q(&self, a: Mat<E, D>) -> Result<Mat<E, D>, Error> {
        Ok(self.qr_qs(vec![a])?.remove(0))
    }

    fn gram_kept(&self, a: &Mat<E, D>, b: &Mat<E, D>) -> Result<Mat<E, D>, Error> {
        product(a, b)
    }

    fn sym_kept(&self, s: Mat<E, D>) -> Result<Mat<E, D>, Error> {
        let st = s.clone().try_permute::<_, Axes2<1, 0>>();
        st.and_then(|st| s.try_add(st))
            .and_then(|sum| sum.try_mul(E::of_f64(0.5)))
            .map_err(Error::device)
    }

    /// On the device: `A S`, then `C + beta A S + alpha A` by `axpy` (the `alpha` term
    /// only where `alpha != 0`).
    fn mul_kept_add(
        &self,
        a: &Mat<E, D>,
        alpha: f64,
        s: &Mat<E, D>,
        beta: f64,
        c: Option<Mat<E, D>>,
    ) -> Result<Mat<E, D>, Error> {
        let a_s = a.clone().try_matmul(s.clone()).map_err(Error::device)?;
        let out = match c {
            Some(mut c) => {
                Error::check_shape(*c.shape(), *a_s.shape())?;
                c.try_axpy(1.0, &a_s, beta).map_err(Error::device)?;
                if alpha != 0.0 {
                    c.try_axpy(1.0, a, alpha).map_err(Error::device)?;
                }
                c
            }
            None => {
                let mut out = a_s;
                out.try_axpy(beta, a, alpha).map_err(Error::device)?;
                out
            }
        };
        Ok(out)
    }

    fn grams(&self, pairs: &[(&Mat<E, D>, &Mat<E, D>)]) -> Result<Vec<DMatrix<f64>>, Error> {
        let products = pairs
            .iter()
            .map(|(a, b)| product(a, b))
            .collect::<Result<Vec<_>, _>>()?;
        let shapes: Vec<(usize, usize)> = products.iter().map(|p| *p.shape()).collect();
        let data = self.download(products)?;
        Ok(data
            .into_iter()
            .zip(shapes)
            .map(|(v, (r, c))| E::from_row_major(r, c, &v))
            .collect())
    }

    fn combine(
        &self,
        outputs: Vec<Vec<(&Mat<E, D>, DMatrix<f64>)>>,
    ) -> Result<Vec<Mat<E, D>>, Error> {
        let smalls: Vec<&DMatrix<f64>> = outputs.iter().flatten().map(|(_, m)| m).collect();
        let mut uploaded = self.upload_small(&smalls)?.into_iter();
        outputs
            .iter()
            .map(|terms| {
                let mut sum: Option<Mat<E, D>> = None;
                for ((a, _), m) in terms.iter().zip(uploaded.by_ref()) {
                    let am = (*a).clone().try_matmul(m).map_err(Error::device)?;
                    sum = Some(match sum {
                        None => am,
                        Some(acc) => acc.try_add(am).map_err(Error::device)?,
                    });
                }
                Ok(sum.expect("TallOps::combine: an output without terms"))
            })
            .collect()
    }

    fn qr_qs(&self, mats: Vec<Mat<E, D>>) -> Result<Vec<Mat<E, D>>, Error> {
        let shapes: Vec<(usize, usize)> = mats.iter().map(|m| *m.shape()).collect();
        let data = self.download(mats)?;
        let qs = data
            .into_iter()
            .zip(shapes)
            .map(|(v, (n, r))| (householder_q(HostMat::new(n, r, v)).into_compact(), (n, r)))
            .collect();
        self.upload(qs)
    }

    /// `0 * x` is 0 for finite `x` and NaN otherwise; NaN survives the sum. The sums of
    /// all the matrices come to the host together.
    fn all_finite_each(&self, mats: &[&Mat<E, D>]) -> Result<Vec<bool>, Error> {
        let sums = mats
            .iter()
            .map(|a| {
                (*a).clone()
                    .try_mul(E::zero())
                    .and_then(|z| z.try_sum::<Rank0, _>())
                    .map_err(Error::device)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sums.is_empty() {
            return Ok(Vec::new());
        }
        let sums = self.to_host(&sums.try_stack().map_err(Error::device)?);
        Ok(sums.into_iter().map(|s| s == E::zero()).collect())
    }
}

/// `alpha A + beta B` in `B`'s storage (dfdx copies it first where it is shared).
fn axpby<E: Real, D: Device<E>>(
    alpha: E,
    a: &Mat<E, D>,
    beta: E,
    mut b: Mat<E, D>,
) -> Result<Mat<E, D>, Error> {
    b.try_axpy(beta.to_f64(), a, alpha.to_f64())
        .map_err(Error::device)?;
    Ok(b)
}
