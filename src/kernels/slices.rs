//! Fused loops over plain slices, compiled for the widest vector unit the CPU has
//! ([`dispatch`]).
//!
//! Reductions keep 64 independent partial sums so that the compiler can vectorise
//! them without reassociating floating-point additions itself, over several registers so
//! that the additions' latency does not serialise the loop.

use super::simd::{dispatch, Fma, Kernel, Loop};
use super::Real;

/// Partial sums of a reduction: four AVX-512 registers of `f32`.
const LANES: usize = 64;

/// `out_i = alpha a_i + beta b_i`.
pub fn lincomb<E: Real>(alpha: E, a: &[E], beta: E, b: &[E], out: &mut [E]) {
    assert!(
        a.len() == b.len() && a.len() == out.len(),
        "lincomb: lengths"
    );
    dispatch(Loop(|| {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = alpha * x + beta * y;
        }
    }))
}

/// `y_i <- y_i + alpha x_i`, in `y`'s storage.
pub fn axpy<E: Real>(alpha: E, x: &[E], y: &mut [E]) {
    assert_eq!(x.len(), y.len(), "axpy: lengths");
    dispatch(Loop(|| {
        for (o, &v) in y.iter_mut().zip(x) {
            *o += alpha * v;
        }
    }))
}

/// `sum a_i^2`, accumulated in `f64` over 16 partial sums (one chain of
/// dependent additions would serialise the loop on the adder's latency).
pub fn squared_norm<E: Real>(a: &[E]) -> f64 {
    dispatch(SquaredNorm(a))
}

/// Partial sums of [`squared_norm`]: two AVX-512 registers of `f64`.
const NORM_LANES: usize = 16;

struct SquaredNorm<'a, E>(&'a [E]);

impl<E: Real> Kernel for SquaredNorm<'_, E> {
    type Output = f64;
    #[inline(always)]
    fn run<F: Fma>(self) -> f64 {
        let mut acc = [0.0f64; NORM_LANES];
        let mut chunks = self.0.chunks_exact(NORM_LANES);
        for c in &mut chunks {
            for l in 0..NORM_LANES {
                let x = c[l].to_f64();
                acc[l] += x * x;
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&x| x.to_f64() * x.to_f64())
            .sum();
        acc.iter().sum::<f64>() + tail
    }
}

/// Whether every element is finite (no NaN, no infinity).
pub fn all_finite<E: Real>(a: &[E]) -> bool {
    dispatch(AllFinite(a))
}

struct AllFinite<'a, E>(&'a [E]);

impl<E: Real> Kernel for AllFinite<'_, E> {
    type Output = bool;
    #[inline(always)]
    fn run<F: Fma>(self) -> bool {
        all_finite_loop(self.0)
    }
}

#[inline(always)]
fn all_finite_loop<E: Real>(a: &[E]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axpy_adds_in_place_as_lincomb_does() {
        let x: Vec<f32> = (0..203).map(|i| (i as f32).sin()).collect();
        let y0: Vec<f32> = (0..203).map(|i| (i as f32 * 0.37).cos()).collect();
        let mut by_lincomb = vec![0.0; 203];
        lincomb(-0.5, &x, 1.0, &y0, &mut by_lincomb);
        let mut y = y0.clone();
        axpy(-0.5, &x, &mut y);
        assert_eq!(y, by_lincomb);
        assert_eq!(y[10], y0[10] - 0.5 * x[10]);
    }

    #[test]
    fn squared_norm_sums_every_square() {
        for len in [0usize, 1, 15, 16, 17, 203] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).sin()).collect();
            let want: f64 = a.iter().map(|&x| (x as f64) * (x as f64)).sum();
            let got = squared_norm(&a);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "{len}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn all_finite_finds_nan_and_inf_anywhere() {
        let mut v = vec![1.0f32; 200];
        assert!(all_finite(&v));
        for i in [0usize, 8, 63, 64, 130, 191, 192, 199] {
            v[i] = f32::NAN;
            assert!(!all_finite(&v));
            v[i] = f32::NEG_INFINITY;
            assert!(!all_finite(&v));
            v[i] = 1.0;
        }
    }
}
