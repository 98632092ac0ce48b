//! A module holding one Stiefel tensor, `basis_out` [N, R]: the smallest model an
//! optimizer step can be measured on; and an adapter's three tensors alone. Shared by the
//! `step_bench` example and the `optimizer_step` bench.

#![allow(dead_code)] // shared by several targets; each uses part of it

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::prelude::*;

/// One trainable `[N, R]` tensor named `basis_out`.
#[derive(Debug, Clone)]
pub struct Basis<const N: usize, const R: usize, E: Dtype, D: Device<E>> {
    /// The basis.
    pub basis_out: Tensor<Rank2<N, R>, E, D>,
}

impl<const N: usize, const R: usize, E: Dtype, D: Device<E>> TensorCollection<E, D>
    for Basis<N, R, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Basis<N, R, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            Self::tensor(
                "basis_out",
                |s| &s.basis_out,
                |s| &mut s.basis_out,
                TensorOptions::reset_to_zeros(),
            ),
            |basis_out| Basis { basis_out },
        )
    }
}

/// An adapter's trainable tensors alone: `basis_out` [N, R], the core (`core` [R, R] or
/// `scales` [R], by `K`) and `basis_in` [N, R], without the frozen weight.
#[derive(Debug, Clone)]
pub struct AdapterFactors<
    const N: usize,
    const R: usize,
    K: sds_lora::nn::CoreKind<R>,
    E: Dtype,
    D: Device<E>,
> {
    /// `U`.
    pub basis_out: Tensor<Rank2<N, R>, E, D>,
    /// The core.
    pub core: Tensor<K::Shape, E, D>,
    /// `V`.
    pub basis_in: Tensor<Rank2<N, R>, E, D>,
}

impl<const N: usize, const R: usize, K: sds_lora::nn::CoreKind<R>, E: Dtype, D: Device<E>>
    TensorCollection<E, D> for AdapterFactors<N, R, K, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = AdapterFactors<N, R, K, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "basis_out",
                    |s| &s.basis_out,
                    |s| &mut s.basis_out,
                    TensorOptions::reset_to_zeros(),
                ),
                Self::tensor(
                    K::NAME,
                    |s| &s.core,
                    |s| &mut s.core,
                    TensorOptions::reset_to_zeros(),
                ),
                Self::tensor(
                    "basis_in",
                    |s| &s.basis_in,
                    |s| &mut s.basis_in,
                    TensorOptions::reset_to_zeros(),
                ),
            ),
            |(basis_out, core, basis_in)| AdapterFactors {
                basis_out,
                core,
                basis_in,
            },
        )
    }
}
