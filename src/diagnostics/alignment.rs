//! How well a method's step follows the full fine-tuning gradient.

use nalgebra::DMatrix;

/// Cosine of the angle between two matrices in the Frobenius inner product:
/// `<G, D> / (||G||_F ||D||_F)`; 0 if either is zero.
pub fn cosine(g: &DMatrix<f64>, d: &DMatrix<f64>) -> f64 {
    let norms = g.norm() * d.norm();
    if norms == 0.0 {
        0.0
    } else {
        g.dot(d) / norms
    }
}

/// The first-order change of `dW = c U S V^T` for changes `(dU, dS, dV)` of its
/// factors: `c (dU S V^T + U dS V^T + U S dV^T)` (a diagonal core as
/// `DMatrix::from_diagonal`).
pub fn sds_delta(
    c: f64,
    (u, s, v): (&DMatrix<f64>, &DMatrix<f64>, &DMatrix<f64>),
    (du, ds, dv): (&DMatrix<f64>, &DMatrix<f64>, &DMatrix<f64>),
) -> DMatrix<f64> {
    (du * s * v.transpose() + u * ds * v.transpose() + u * s * dv.transpose()) * c
}

/// The first-order change of `dW = c B A` for changes `(dB, dA)`: `c (dB A + B dA)`.
pub fn lora_delta(
    c: f64,
    (b, a): (&DMatrix<f64>, &DMatrix<f64>),
    (db, da): (&DMatrix<f64>, &DMatrix<f64>),
) -> DMatrix<f64> {
    (db * a + b * da) * c
}

/// Alignment of a step with the full fine-tuning gradient `G`: the cosine between `-G`
/// (the steepest-descent change of `W`) and the change `delta` the step makes to `dW`.
pub fn alignment(g: &DMatrix<f64>, delta: &DMatrix<f64>) -> f64 {
    cosine(&(-g), delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_orthogonal_and_opposite() {
        let g = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 3.0, 4.0]);
        assert!((cosine(&g, &g) - 1.0).abs() < 1e-15);
        assert!((cosine(&g, &(&g * 7.0)) - 1.0).abs() < 1e-15);
        let orth = DMatrix::from_row_slice(2, 2, &[2.0, -1.0, 4.0, -3.0]); // <g, orth> = 0
        assert_eq!(cosine(&g, &orth), 0.0);
        assert!((alignment(&g, &(-&g)) - 1.0).abs() < 1e-15);
        assert_eq!(cosine(&g, &DMatrix::zeros(2, 2)), 0.0);
    }

    #[test]
    fn deltas_are_first_order_changes() {
        // Against a finite difference of the products.
        let u = DMatrix::from_row_slice(3, 2, &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        let v = DMatrix::from_row_slice(2, 2, &[0.6, 0.8, -0.8, 0.6]);
        let s = DMatrix::from_row_slice(2, 2, &[2.0, 0.3, -0.1, 0.5]);
        let (du, dv) = (
            DMatrix::from_fn(3, 2, |i, j| (i + j) as f64 * 0.1),
            DMatrix::from_fn(2, 2, |i, j| (i * 2 + j) as f64 * 0.2),
        );
        let ds = DMatrix::from_row_slice(2, 2, &[0.3, 0.2, 0.1, -0.4]);
        let w = |t: f64| (&u + &du * t) * (&s + &ds * t) * (&v + &dv * t).transpose() * 1.5;
        let fd = (w(1e-6) - w(-1e-6)) / 2e-6;
        assert!((sds_delta(1.5, (&u, &s, &v), (&du, &ds, &dv)) - fd).norm() < 1e-8);
        let (b, a) = (
            DMatrix::from_fn(3, 2, |i, j| (i * 3 + j) as f64),
            DMatrix::from_fn(2, 4, |i, j| (i + 2 * j) as f64 * 0.5),
        );
        let (db, da) = (b.map(|x| x * 0.1 + 1.0), a.map(|x| 0.2 - x));
        let p = |t: f64| (&b + &db * t) * (&a + &da * t) * 0.5;
        let fd = (p(1e-6) - p(-1e-6)) / 2e-6;
        assert!((lora_delta(0.5, (&b, &a), (&db, &da)) - fd).norm() < 1e-7);
    }
}
