//! Exponential map (geodesic) of the Euclidean metric.

use super::{from_step_grams, Steps};
use crate::kernels::{Real, TallOps};
use crate::small;
use crate::Error;
use nalgebra::DMatrix;

/// The geodesic of the Euclidean (embedded) metric from `X` with velocity `xi`, at time 1
/// (Edelman, Arias and Smith 1998, eq. 2.14):
///
/// `R_X(xi) = [X, xi] expm([[A, -S], [I, A]]) [expm(-A); 0]`, `A = X^T xi`, `S = xi^T xi`.
///
/// With `[C1; C2] = expm([[A, -S], [I, A]])[:, ..r] expm(-A)` (`2r x r`, host), the result
/// is `X C1 + xi C2`. For tangent `xi`, `A` is skew. `C` is polished
/// against the Gram matrix `[[X^T X, A], [A^T, S]]` of `[X, xi]`, which moves it by
/// rounding only and keeps the result on the manifold to rounding.
pub fn exp<E: Real, B: TallOps<E>>(ops: &B, steps: &Steps<B::Mat>) -> Result<Vec<B::Mat>, Error> {
    from_step_grams(ops, steps, |[xtx, a, s]| {
        let c = coefficients(&xtx, &a, &s)?;
        let r = a.nrows();
        Ok([c.rows(0, r).into_owned(), c.rows(r, r).into_owned()])
    })
}

/// `C = [C1; C2]` from `X^T X`, `A` and `S`.
fn coefficients(
    xtx: &DMatrix<f64>,
    a: &DMatrix<f64>,
    s: &DMatrix<f64>,
) -> Result<DMatrix<f64>, Error> {
    let r = a.nrows();
    let mut h = DMatrix::zeros(2 * r, 2 * r);
    h.view_mut((0, 0), (r, r)).copy_from(xtx);
    h.view_mut((0, r), (r, r)).copy_from(a);
    h.view_mut((r, 0), (r, r)).copy_from(&a.transpose());
    h.view_mut((r, r), (r, r)).copy_from(s);
    let mut m = DMatrix::zeros(2 * r, 2 * r);
    m.view_mut((0, 0), (r, r)).copy_from(a);
    m.view_mut((0, r), (r, r)).copy_from(&(-s));
    m.view_mut((r, 0), (r, r)).fill_with_identity();
    m.view_mut((r, r), (r, r)).copy_from(a);
    let c = small::polish(&(small::expm(&m).columns(0, r) * small::expm(&(-a))), &h);
    if !c.iter().all(|v| v.is_finite()) {
        return Err(Error::NonFinite {
            what: "matrix exponential of the geodesic".into(),
        });
    }
    Ok(c)
}
