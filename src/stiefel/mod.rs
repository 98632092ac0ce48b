//! Geometry of the Stiefel manifold `St(n, r) = {X in R^{n x r} : X^T X = I}` with the
//! Euclidean (embedded) metric: tangent projection, six retractions, projection
//! transport, Haar-random points and checks.
//!
//! Every function is generic over the dfdx device ([`StiefelDevice`](crate::kernels::StiefelDevice)),
//! the element type (`f32`, `f64`) and the dimensions (`(N, R)`, each `Const` or `usize`).
//! The `*_mat` functions and [`Retraction::apply`] work on a backend's working form, for
//! callers (the optimizers) that load a tensor once and run several steps on it.

mod checks;
mod orthonormalize;
mod projection;
mod random;
mod retraction;
pub mod retractions;
mod transport;

pub use checks::{is_tangent, orthogonality_error};
pub use orthonormalize::orthonormalize;
pub use projection::{project_mat, project_tangent};
pub use random::random_point;
pub use retraction::{retract, Retraction, SumRetraction};
pub use transport::{transport, transport_mat};
