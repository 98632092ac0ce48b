//! The core `S` of an [`SdsLinear`](super::SdsLinear): a full `R x R` matrix (the default)
//! or, as an ablation, a diagonal of `R` scales.

use crate::kernels::Real;
use dfdx::prelude::*;
use nalgebra::DMatrix;

pub use crate::optim::groups::{CORE_NAME, SCALES_NAME};

/// What an adapter's core is: its tensor shape and name, and its dense `R x R` form.
///
/// Two kinds: [`FullCore`] (the default) and [`DiagonalCore`] (the ablation). The
/// optimizers update a full core jointly with its bases (the basis-update step); a
/// diagonal core is a Euclidean tensor beside two Stiefel bases.
pub trait CoreKind<const R: usize>:
    Copy + Default + std::fmt::Debug + Send + Sync + 'static
{
    /// The core tensor's shape.
    type Shape: ConstShape;
    /// The core tensor's name in the module ([`CORE_NAME`] or [`SCALES_NAME`]).
    const NAME: &'static str;

    /// The core tensor, seen as what it is.
    fn view<E: Dtype, D: Storage<E>>(t: &Tensor<Self::Shape, E, D>) -> CoreRef<'_, R, E, D>;

    /// The row-major data of this kind of core that stands for the dense `R x R` matrix
    /// `s`; `None` for a diagonal core and an `s` with nonzero entries off the diagonal.
    fn data_of<E: Real>(s: &DMatrix<f64>) -> Option<Vec<E>>;
}

/// A core tensor, by kind.
#[derive(Debug)]
pub enum CoreRef<'a, const R: usize, E: Dtype, D: Storage<E>> {
    /// `S: [R, R]`.
    Full(&'a Tensor<Rank2<R, R>, E, D>),
    /// `s: [R]`, standing for `diag(s)`.
    Diagonal(&'a Tensor<Rank1<R>, E, D>),
}

impl<const R: usize, E: Dtype, D: Storage<E>> Clone for CoreRef<'_, R, E, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<const R: usize, E: Dtype, D: Storage<E>> Copy for CoreRef<'_, R, E, D> {}

/// An owned core tensor (a handle sharing the layer's storage), by kind.
#[derive(Debug, Clone)]
pub(crate) enum CoreTensor<const R: usize, E: Dtype, D: Storage<E>> {
    /// `S: [R, R]`.
    Full(Tensor<Rank2<R, R>, E, D>),
    /// `s: [R]`.
    Diagonal(Tensor<Rank1<R>, E, D>),
}

impl<const R: usize, E: Dtype, D: Storage<E>> CoreTensor<R, E, D> {
    /// The borrowed view.
    pub(crate) fn as_ref(&self) -> CoreRef<'_, R, E, D> {
        match self {
            CoreTensor::Full(s) => CoreRef::Full(s),
            CoreTensor::Diagonal(s) => CoreRef::Diagonal(s),
        }
    }
}

impl<const R: usize, E: Dtype, D: Storage<E>> CoreRef<'_, R, E, D> {
    /// An owned handle on the same tensor.
    pub(crate) fn to_owned(self) -> CoreTensor<R, E, D> {
        match self {
            CoreRef::Full(s) => CoreTensor::Full(s.clone()),
            CoreRef::Diagonal(s) => CoreTensor::Diagonal(s.clone()),
        }
    }
}

impl<const R: usize, E: Real, D: Device<E>> CoreRef<'_, R, E, D> {
    /// The dense `R x R` core on the host.
    pub fn dense(&self) -> DMatrix<f64> {
        match self {
            CoreRef::Full(s) => E::from_row_major(R, R, &s.as_vec()),
            CoreRef::Diagonal(s) => DMatrix::from_diagonal(&nalgebra::DVector::from_iterator(
                R,
                s.as_vec().into_iter().map(Real::to_f64),
            )),
        }
    }
}

/// A full `R x R` core, tensor `core`: the default. With it the fixed points of the
/// decoupled field are the true ones, and the basis-update step converges whatever the
/// target's spectrum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FullCore;

/// A diagonal core `diag(s)`, tensor `scales`: an ablation. Under decoupled gradients it
/// stalls wherever the target's singular values differ: the symmetric off-diagonal part of
/// `U^T G V` is never corrected (`shared/notes/sds-step.md`, "Why diagonal S stalls").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiagonalCore;

impl<const R: usize> CoreKind<R> for FullCore {
    type Shape = Rank2<R, R>;
    const NAME: &'static str = CORE_NAME;

    fn view<E: Dtype, D: Storage<E>>(t: &Tensor<Rank2<R, R>, E, D>) -> CoreRef<'_, R, E, D> {
        CoreRef::Full(t)
    }

    fn data_of<E: Real>(s: &DMatrix<f64>) -> Option<Vec<E>> {
        Some(E::row_major(s))
    }
}

impl<const R: usize> CoreKind<R> for DiagonalCore {
    type Shape = Rank1<R>;
    const NAME: &'static str = SCALES_NAME;

    fn view<E: Dtype, D: Storage<E>>(t: &Tensor<Rank1<R>, E, D>) -> CoreRef<'_, R, E, D> {
        CoreRef::Diagonal(t)
    }

    fn data_of<E: Real>(s: &DMatrix<f64>) -> Option<Vec<E>> {
        let off_diagonal = (0..R).any(|i| (0..R).any(|j| i != j && s[(i, j)] != 0.0));
        (!off_diagonal).then(|| s.diagonal().iter().map(|&v| E::of_f64(v)).collect())
    }
}
