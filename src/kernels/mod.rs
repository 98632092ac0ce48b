//! Per-device arithmetic: the bottom layer.
//!
//! Everything the geometry needs is a handful of operations on tall `n x r` matrices
//! ([`TallOps`]) plus small `r x r` work on the host in `f64` (`crate::small`, shared by every layer). On `Cpu` they
//! run as fused loops and thin products (`tall_products`) on plain slices ([`HostOps`]),
//! compiled for the widest vector unit the CPU has (`simd`); on other devices they are
//! composed from dfdx ops ([`ComposedOps`]).

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
mod composed_ops;
pub(crate) mod device_cache;
mod host_mat;
mod host_ops;
mod host_read;
mod householder;
mod layout;
mod padding;
pub(crate) mod parallel;
mod real;
mod row_pieces;
pub(crate) mod scratch;
pub(crate) mod simd;
pub(crate) mod slices;
mod stiefel_device;
mod tall_ops;
pub(crate) mod tall_products;

pub use composed_ops::{ComposedBackend, ComposedOps, Transfers};
pub(crate) use host_mat::HostMat;
pub use host_ops::HostOps;
pub(crate) use host_read::{gradient_of, Read};
pub(crate) use householder::householder_q;
pub use real::{HostElement, Real};
pub(crate) use row_pieces::{HostBackend, PieceOfRows, RowPieces};
pub use stiefel_device::{HostRead, StiefelDevice};
pub use tall_ops::{Flat, TallOps, TallTensor};
