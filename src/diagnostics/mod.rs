//! Diagnostics on host matrices (nalgebra, `f64`): effective and stable rank, orthogonality
//! error, and the alignment between the full fine-tuning gradient and the change a method's
//! step makes to `dW`.

mod alignment;
mod spectrum;

pub use alignment::{alignment, cosine, lora_delta, sds_delta};
pub use spectrum::{effective_rank, singular_values, stable_rank};

use nalgebra::DMatrix;

/// `||X^T X - I||_F` of a host matrix.
pub fn orthogonality_error(x: &DMatrix<f64>) -> f64 {
    let r = x.ncols();
    (x.transpose() * x - DMatrix::identity(r, r)).norm()
}
