//! Haar-distributed random points on St(n, r).

use crate::kernels::{Real, RowPieces, TallOps};
use crate::Error;
use dfdx::shapes::{Dim, Shape};
use dfdx::tensor::{Tensor, TensorFromVec};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// A random point of St(n, r), uniform (Haar) on the manifold: the Q factor, with
/// `diag(R) > 0`, of an `n x r` matrix of independent standard normals drawn from a
/// `StdRng` seeded with `seed`. The same seed gives the same bits on every device.
///
/// ```
/// use dfdx::prelude::*;
/// use sds_lora::stiefel::{orthogonality_error, random_point};
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank2<16, 4>, f32, _> = random_point(&dev, (Const, Const), 7).unwrap();
/// assert!(orthogonality_error(&x) < 1e-5);
/// ```
pub fn random_point<E: Real, N: Dim, R: Dim, D: TensorFromVec<E>>(
    dev: &D,
    shape: (N, R),
    seed: u64,
) -> Result<Tensor<(N, R), E, D>, Error> {
    let [n, r] = shape.concrete();
    if r > n {
        return Err(Error::NotTall { rows: n, cols: r });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<E> = (0..n * r)
        .map(|_| E::of_f64(StandardNormal.sample(&mut rng)))
        .collect();
    let q = E::host_ops().qr_q(RowPieces::from_compact(n, r, data))?;
    dev.try_tensor_from_vec(RowPieces::into_compact(q), shape)
        .map_err(Error::device)
}
