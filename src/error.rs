//! The crate's one error type.

use std::fmt;

/// Everything that can go wrong in `sds_lora`.
///
/// Every fallible operation leaves its inputs (parameters, optimizer state) exactly as they
/// were when it returns one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A Stiefel point must be tall: `[n, r]` with `r <= n`.
    NotTall {
        /// Rows `n`.
        rows: usize,
        /// Columns `r`.
        cols: usize,
    },
    /// A tensor marked as a Stiefel point is not a matrix.
    NotAMatrix {
        /// Its dotted path in the model.
        path: String,
        /// Its dimensions.
        dims: Vec<usize>,
    },
    /// Trainable tensors received no gradient (dotted paths).
    UnusedParams(Vec<String>),
    /// A serialised optimizer state does not fit the model.
    StateMismatch(String),
    /// Two operands that must have the same shape do not.
    ShapeMismatch {
        /// Shape of the first operand.
        left: (usize, usize),
        /// Shape of the second operand.
        right: (usize, usize),
    },
    /// An input holds NaN or an infinity.
    NonFinite {
        /// What was not finite ("point", "tangent step", "gradient of 0.basis_out", ...).
        what: String,
    },
    /// A Cholesky factorisation met a matrix that is not numerically positive definite.
    NotPositiveDefinite {
        /// Which computation needed it.
        what: &'static str,
    },
    /// A linear solve met a numerically singular matrix.
    Singular {
        /// Which computation needed it.
        what: &'static str,
    },
    /// Newton-Schulz was started outside its convergence region (`||X^T X - I||_2 >= 1`).
    NotConvergent {
        /// The spectral distance `||Y^T Y - I||_2` of the starting point.
        distance: f64,
    },
    /// The dfdx device reported an error.
    Device(String),
    /// Reading or writing a file failed.
    Io(String),
    /// An input (a file's contents, a config, a setting) is malformed, contradicts itself
    /// or asks for something unsupported; the message names it.
    Invalid(String),
    /// A tensor that must have orthonormal columns does not.
    NotOrthonormal {
        /// Its dotted path.
        path: String,
        /// `||X^T X - I||_F`.
        error: f64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotTall { rows, cols } => write!(
                f,
                "a Stiefel point must be tall ([n, r] with r <= n), got [{rows}, {cols}]"
            ),
            Error::NotAMatrix { path, dims } => write!(
                f,
                "{path} is marked as a Stiefel point but has dimensions {dims:?}, not [n, r]"
            ),
            Error::UnusedParams(paths) => {
                write!(
                    f,
                    "trainable tensors without a gradient: {}",
                    paths.join(", ")
                )
            }
            Error::StateMismatch(what) => write!(f, "optimizer state does not fit: {what}"),
            Error::ShapeMismatch { left, right } => {
                write!(f, "shape mismatch: {left:?} vs {right:?}")
            }
            Error::NonFinite { what } => write!(f, "non-finite values (NaN or inf) in {what}"),
            Error::NotPositiveDefinite { what } => {
                write!(f, "{what}: matrix is not numerically positive definite")
            }
            Error::Singular { what } => write!(f, "{what}: matrix is numerically singular"),
            Error::NotConvergent { distance } => write!(
                f,
                "Newton-Schulz needs ||Y^T Y - I||_2 < 1 to converge, got {distance:.3e}: \
                 take a smaller step or another retraction"
            ),
            Error::Device(e) => write!(f, "device error: {e}"),
            Error::Io(e) => write!(f, "i/o: {e}"),
            Error::Invalid(e) => write!(f, "invalid input: {e}"),
            Error::NotOrthonormal { path, error } => write!(
                f,
                "{path} must have orthonormal columns but ||X^T X - I||_F = {error:.3e}; \
                 re-orthonormalise it first (sds_lora::stiefel::orthonormalize)"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// `Ok` if the two shapes agree, else [`Error::ShapeMismatch`].
    pub(crate) fn check_shape(left: (usize, usize), right: (usize, usize)) -> Result<(), Error> {
        if left == right {
            Ok(())
        } else {
            Err(Error::ShapeMismatch { left, right })
        }
    }

    /// Wraps a dfdx device error.
    pub(crate) fn device(e: impl fmt::Debug) -> Self {
        Error::Device(format!("{e:?}"))
    }
}
