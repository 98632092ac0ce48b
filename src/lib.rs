//! # sds-lora
//!
//! SDS-LoRA (scale-decoupled, Stiefel-constrained low-rank adaptation) for
//! [dfdx](https://docs.rs/dfdx) 0.13.
//!
//! The adapter is `dW = c U S V^T` with `U`, `V` on Stiefel manifolds (orthonormal
//! columns) and a full `r x r` core `S`; the optimizers update each adapter's triple
//! jointly by the basis-update step ([`optim::basis_update`](mod@optim::basis_update)), which moves `dW` along the
//! Riemannian gradient of the fixed-rank manifold whatever the factor split or the
//! target's spectrum. This crate is layered, dependencies pointing down only:
//!
//! - [`diagnostics`]: effective and stable rank, orthogonality, gradient alignment.
//! - [`nn`]: the layers [`nn::SdsLinear`] (scale-decoupled backward) and
//!   [`nn::LoraLinear`] (baseline), merging, conversions and PEFT export.
//! - [`optim`]: the dfdx optimizers [`optim::SdsAdam`] and [`optim::SdsSgd`]: the
//!   basis-update step for adapters, Euclidean rules, parameter groups, the per-tensor
//!   Riemannian composition for other Stiefel tensors.
//! - [`stiefel`]: geometry on `St(n, r)`: tangent projection, six retractions, transport,
//!   random points, checks.
//! - [`kernels`]: per-device arithmetic behind the backend traits ([`kernels::TallOps`],
//!   [`kernels::StiefelDevice`]) and the element trait ([`kernels::Real`]): fused loops and
//!   GEMM on plain slices for `Cpu`, dfdx ops for other devices.
//! - `small` (crate-private): the `r x r` work every layer does on the host in `f64`
//!   through nalgebra (factorisations, inverse square roots, the Jacobi SVD).
//!
//! ```
//! use dfdx::prelude::*;
//! use sds_lora::stiefel::{orthogonality_error, project_tangent, random_point, retract, Retraction};
//!
//! let dev = Cpu::default();
//! let x: Tensor<Rank2<64, 8>, f32, _> = random_point(&dev, (Const, Const), 42).unwrap();
//! let euclidean_grad: Tensor<Rank2<64, 8>, f32, _> = dev.sample_normal();
//! let step = project_tangent(&x, &euclidean_grad).unwrap() * -0.01;
//! let x_next = retract(&x, &step, Retraction::Qr).unwrap();
//! assert!(orthogonality_error(&x_next) < 1e-5);
//! ```

#![warn(missing_docs)]

pub mod diagnostics;
mod error;
pub mod kernels;
pub mod nn;
pub mod optim;
pub(crate) mod small;
pub mod stiefel;

pub use error::Error;
