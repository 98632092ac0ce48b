//! What a rule's formulas compute on: one element on the host, or a whole tensor on a
//! device.
//!
//! Each rule writes its formulas once, generic over a [`Lane`]: the host path runs them
//! on `E` itself, element by element inside its loops over slices (vectorised by the
//! compiler), and the composed path runs the same formulas on [`OnDevice`] tensors, where
//! each operation is one dfdx op over the whole tensor. Multiplications and additions
//! commute exactly in IEEE arithmetic, so an operand order written for the host is the
//! host's bits.

use crate::kernels::Real;
use crate::Error;
use dfdx::shapes::HasShape;
use dfdx::shapes::Shape;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{Device, TryAdd, TryDiv, TryMul};
use std::ops::{Add, Div, Mul};

/// What a moment's formula needs (`m <- b1 m + (1 - b1) g`, a velocity): sums, and
/// products with constants `E`. Besides every [`Lane`], the basis-update step's moments
/// are linear values: its `r x r` matrices, and its tall matrices as linear forms.
pub trait Linear<E>: Clone + Add<Output = Self> + Mul<E, Output = Self> {}

impl<E, T: Clone + Add<Output = T> + Mul<E, Output = T>> Linear<E> for T {}

/// A value a rule computes with: an element (`E`) or a whole tensor of elements
/// ([`OnDevice`]), with scalars `E` as constants.
pub trait Lane<E>:
    Linear<E> + Add<E, Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// The square root.
    fn sqrt_of(self) -> Self;

    /// The larger of the two (`other` where they compare equal or `self` is NaN).
    fn max_with(self, other: Self) -> Self;
}

impl<E: Real> Lane<E> for E {
    #[inline(always)]
    fn sqrt_of(self) -> Self {
        self.sqrt()
    }

    #[inline(always)]
    fn max_with(self, other: Self) -> Self {
        if self > other {
            self
        } else {
            other
        }
    }
}

/// A device tensor as a [`Lane`]: each operation is one dfdx op on the whole tensor, and
/// the first error is carried through to the end of the formula.
#[derive(Debug, Clone)]
pub struct OnDevice<S: Shape, E: Real, D: Device<E>>(pub Result<Tensor<S, E, D>, Error>);

impl<S: Shape, E: Real, D: Device<E>> OnDevice<S, E, D> {
    /// A tensor as a lane.
    pub fn of(t: Tensor<S, E, D>) -> Self {
        Self(Ok(t))
    }

    /// A stored state tensor, or zeros shaped like `like` where none is stored yet.
    pub fn stored(t: &Option<Tensor<S, E, D>>, like: &Tensor<S, E, D>) -> Self {
        Self::of(
            t.clone()
                .unwrap_or_else(|| like.device().zeros_like(like.shape())),
        )
    }

    /// The tensor, or the first error of the formula.
    pub fn into_tensor(self) -> Result<Tensor<S, E, D>, Error> {
        self.0
    }

    fn map(self, f: impl FnOnce(Tensor<S, E, D>) -> Result<Tensor<S, E, D>, D::Err>) -> Self {
        Self(self.0.and_then(|a| f(a).map_err(Error::device)))
    }

    fn zip(
        self,
        other: Self,
        f: impl FnOnce(Tensor<S, E, D>, Tensor<S, E, D>) -> Result<Tensor<S, E, D>, D::Err>,
    ) -> Self {
        Self(self.0.and_then(|a| f(a, other.0?).map_err(Error::device)))
    }
}

/// `impl $op for OnDevice` (`$f` of two tensors) and `impl $op<E> for OnDevice` (`$f` of
/// a tensor and a scalar), each one dfdx op.
macro_rules! device_ops {
    ($($op:ident, $method:ident, $f:ident;)+) => {$(
        impl<S: Shape, E: Real, D: Device<E>> $op for OnDevice<S, E, D> {
            type Output = Self;
            fn $method(self, other: Self) -> Self {
                self.zip(other, |a, b| a.$f(b))
            }
        }

        impl<S: Shape, E: Real, D: Device<E>> $op<E> for OnDevice<S, E, D> {
            type Output = Self;
            fn $method(self, c: E) -> Self {
                self.map(|a| a.$f(c))
            }
        }
    )+};
}

device_ops! {
    Add, add, try_add;
    Mul, mul, try_mul;
    Div, div, try_div;
}

impl<S: Shape, E: Real, D: Device<E>> Lane<E> for OnDevice<S, E, D> {
    fn sqrt_of(self) -> Self {
        self.map(|a| a.try_sqrt())
    }

    fn max_with(self, other: Self) -> Self {
        self.zip(other, |a, b| a.try_maximum(b))
    }
}
