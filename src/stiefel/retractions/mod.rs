//! The six retractions, one file each, written once over [`TallOps`](crate::kernels::TallOps).

mod cayley;
mod cholesky_qr2;
mod exp;
mod newton_schulz;
mod polar;
mod qr;

pub use cayley::cayley;
pub use cholesky_qr2::cholesky_qr2;
pub use exp::exp;
pub use newton_schulz::newton_schulz;
pub use polar::polar;
pub use qr::qr;
