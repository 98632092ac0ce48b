//! Per-device arithmetic: the bottom layer.
//!
//! Everything the geometry needs is a handful of operations on tall `n x r` matrices
//! ([`TallOps`]) plus small `r x r` work on the host in `f64` ([`small`]). On `Cpu` they
//! run as fused loops and thin products ([`tall_products`]) on plain slices ([`HostOps`]),
//! compiled for the widest vector unit the CPU has ([`simd`]); on other devices they are
//! composed from dfdx ops ([`ComposedOps`]).

#[cfg(target_arch = "x86_64")]
pub mod avx512;
mod composed_ops;
pub mod device_cache;
mod grad_add;
mod host_mat;
mod host_ops;
mod host_read;
mod householder;
mod layout;
mod padding;
pub mod parallel;
mod real;
pub mod scratch;
pub mod simd;
pub mod slices;
pub mod small;
mod stiefel_device;
mod tall_ops;
pub mod tall_products;

pub use composed_ops::{ComposedOps, Transfers};
pub use grad_add::add_into_grad;
pub use host_mat::{HostMat, Piece};
pub use host_ops::HostOps;
pub use host_read::{gradient_of, Read};
pub use householder::householder_q;
pub use layout::ROW_ALIGN;
pub use real::{HostSimd, Real};
pub use stiefel_device::StiefelDevice;
pub use tall_ops::{Flat, TallOps, TallTensor};
