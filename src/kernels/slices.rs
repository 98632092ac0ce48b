//! Fused loops over plain slices: the CPU arithmetic every host kernel is built from.
//!
//! Reductions keep eight independent partial sums so that the compiler can vectorise them
//! without reassociating floating-point additions itself.

use super::Real;

const LANES: usize = 8;

/// `sum_i a_i b_i`.
pub fn dot<E: Real>(a: &[E], b: &[E]) -> E {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [E::zero(); LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += xa[l] * xb[l];
        }
    }
    let mut tail = E::zero();
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    let pairs = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
}

/// `y <- y + alpha x`.
pub fn axpy<E: Real>(alpha: E, x: &[E], y: &mut [E]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `out_i = alpha a_i + beta b_i`.
pub fn lincomb<E: Real>(alpha: E, a: &[E], beta: E, b: &[E], out: &mut [E]) {
    debug_assert!(a.len() == b.len() && a.len() == out.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = alpha * x + beta * y;
    }
}

/// Whether every element is finite (no NaN, no infinity).
pub fn all_finite<E: Real>(a: &[E]) -> bool {
    // 0 * x is 0 for finite x and NaN otherwise; NaN poisons the sum.
    let mut acc = [E::zero(); LANES];
    let mut chunks = a.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l] * E::zero();
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(E::zero(), |s, &x| s + x * E::zero());
    acc.iter().fold(tail, |s, &x| s + x) == E::zero()
}

/// Transposes a row-major `rows x cols` matrix into `out` (row-major `cols x rows`).
pub fn transpose<E: Real>(a: &[E], rows: usize, cols: usize, out: &mut [E]) {
    debug_assert!(a.len() == rows * cols && out.len() == rows * cols);
    for (i, row) in a.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * rows + i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_on_odd_lengths() {
        for len in [0usize, 1, 7, 8, 9, 37] {
            let a: Vec<f64> = (0..len).map(|i| i as f64 * 0.5 - 3.0).collect();
            let b: Vec<f64> = (0..len).map(|i| (i * i) as f64 * 0.25).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() <= 1e-12 * (1.0 + naive.abs()));
        }
    }

    #[test]
    fn all_finite_finds_nan_and_inf_anywhere() {
        let mut v = vec![1.0f32; 19];
        assert!(all_finite(&v));
        for i in [0usize, 8, 18] {
            v[i] = f32::NAN;
            assert!(!all_finite(&v));
            v[i] = f32::NEG_INFINITY;
            assert!(!all_finite(&v));
            v[i] = 1.0;
        }
    }

    #[test]
    fn transpose_moves_each_element() {
        let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut t = [0.0; 6];
        transpose(&a, 2, 3, &mut t);
        assert_eq!(t, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
