//! The thin products against plain loops, in both float types, split and not.

use super::*;

/// A padded `rows x cols` matrix with deterministic entries in [-1, 1].
fn padded<E: Real>(rows: usize, cols: usize, seed: usize) -> (Vec<E>, usize) {
    let stride = crate::kernels::layout::padded_stride(cols);
    let mut data = vec![E::zero(); rows * stride];
    for i in 0..rows {
        for j in 0..cols {
            let h = (i * 131 + j * 71 + seed * 29) % 197;
            data[i * stride + j] = E::of_f64(h as f64 / 98.0 - 1.0);
        }
    }
    (data, stride)
}

/// A small `rows x cols` matrix `M` stored as the products take it: rows `stride`
/// apart, zeros beyond column `cols`.
fn small_matrix<E: Real>(rows: usize, cols: usize, stride: usize, seed: usize) -> Vec<E> {
    let (mut m, _) = padded::<E>(rows, stride, seed);
    for row in m.chunks_exact_mut(stride) {
        row[cols..].fill(E::zero());
    }
    m
}

fn view<E>(data: &[E], rows: usize, cols: usize, stride: usize) -> Strided<'_, E> {
    Strided {
        data,
        rows,
        cols,
        stride,
    }
}

/// `(n, r, k)`: `n` rows, `r` and `k` columns, from one register block to several, in one
/// piece and cut into several (`SPLIT_MIN_ELEMENTS` and more).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 3, 5),
    (9, 8, 8),
    (37, 7, 7),
    (37, 16, 7),
    (40, 8, 8),
    (50, 20, 10),
    (50, 20, 33),
    (65, 64, 64),
    (70, 16, 16),
    (131, 13, 5),
    (131, 13, 24),
    (200, 33, 40),
    (300, 20, 49),
    (2500, 13, 24),
    (3000, 16, 16),
];

/// The kernels (AVX-512 where the CPU has it) and the `gemm` crate both match a plain
/// f64 triple loop, for shapes that exercise partial registers, partial tiles and the
/// block sums.
fn check_products<E: Real>(tol: f64) {
    for &(n, ra, rb) in SHAPES {
        let (a, sa) = padded::<E>(n, ra, 1);
        let (b, sb) = padded::<E>(n, rb, 2);
        let (av, bv) = (view(&a, n, ra, sa), view(&b, n, rb, sb));
        let expect = |i: usize, j: usize| {
            (0..n)
                .map(|k| a[k * sa + i].to_f64() * b[k * sb + j].to_f64())
                .sum::<f64>()
        };
        let fast = gram(av, bv);
        let mut slow = vec![E::zero(); ra * rb];
        gemm_gram(av, bv, &mut slow);
        for i in 0..ra {
            for j in 0..rb {
                let e = expect(i, j);
                let bound = tol * (1.0 + e.abs()) * n as f64;
                assert!(
                    (fast[i * rb + j].to_f64() - e).abs() <= bound,
                    "gram {n}x{ra}x{rb}"
                );
                assert!(
                    (slow[i * rb + j].to_f64() - e).abs() <= bound,
                    "gemm {n}x{ra}x{rb}"
                );
            }
        }
        // C <- beta C + A M with M: ra x rb, for beta 0 (C garbage) and -0.5.
        let m_pad = small_matrix::<E>(ra, rb, sb, 3);
        for beta in [0.0, -0.5] {
            let mut c_fast = vec![E::of_f64(if beta == 0.0 { f64::NAN } else { 0.25 }); n * sb];
            for row in c_fast.chunks_exact_mut(sb) {
                row[rb..].fill(E::zero());
            }
            let mut c_slow = c_fast.clone();
            mul_small_add(av, &m_pad, E::of_f64(beta), &mut c_fast, sb);
            gemm_mul_small_add(av, &m_pad, E::of_f64(beta), &mut c_slow, sb);
            for i in 0..n {
                for j in 0..sb {
                    let e = if j < rb {
                        let old = if beta == 0.0 { 0.0 } else { 0.25 * beta };
                        old + (0..ra)
                            .map(|k| a[i * sa + k].to_f64() * m_pad[k * sb + j].to_f64())
                            .sum::<f64>()
                    } else {
                        0.0
                    };
                    let bound = tol * (1.0 + e.abs()) * ra as f64;
                    let (f, s) = (c_fast[i * sb + j].to_f64(), c_slow[i * sb + j].to_f64());
                    assert!(
                        (f - e).abs() <= bound,
                        "mul {n}x{ra}x{rb} beta {beta}: {f} vs {e}"
                    );
                    assert!((s - e).abs() <= bound, "gemm mul {n}x{ra}x{rb} beta {beta}");
                }
            }
        }
    }
}

/// The product written into spare capacity equals [`mul_small_add`] into a written
/// buffer, bit for bit, with and without `beta C` (`C` unchanged), for outputs of one
/// register block and wider, in one piece and in several.
fn check_into<E: Real>() {
    for &(n, r, k) in SHAPES {
        let (a, sa) = padded::<E>(n, r, 4);
        let (c, sc) = padded::<E>(n, k, 6);
        let m = small_matrix::<E>(r, k, sc, 5);
        for beta in [None, Some(E::of_f64(-0.5))] {
            let mut expect = c.clone();
            let b = beta.unwrap_or(E::zero());
            mul_small_add(view(&a, n, r, sa), &m, b, &mut expect, sc);
            let mut out = Vec::with_capacity(n * sc);
            let src = beta.map(|b| (b, &c[..]));
            mul_small_add_into(view(&a, n, r, sa), &m, src, &mut out, sc);
            let same = |x: &[E], y: &[E]| {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_f64() == q.to_f64())
            };
            assert!(same(&out, &expect), "{n} x {r} x {k}, beta {beta:?}");
            assert!(same(&c, &padded::<E>(n, k, 6).0), "C unchanged");
        }
    }
}

/// `A M + B N` in one pass equals `A M` then `+= B N` in place, bit for bit (the same
/// kernel calls in the same order per row), for `A`, `B` of other widths.
fn check_pair<E: Real>() {
    for &(n, r, k) in SHAPES {
        let (a, sa) = padded::<E>(n, r, 4);
        let (b, sb) = padded::<E>(n, r + 3, 8);
        let sc = crate::kernels::layout::padded_stride(k);
        let m = small_matrix::<E>(r, k, sc, 5);
        let mn = small_matrix::<E>(r + 3, k, sc, 9);
        let mut expect = vec![E::zero(); n * sc];
        mul_small_add(view(&a, n, r, sa), &m, E::zero(), &mut expect, sc);
        mul_small_add(view(&b, n, r + 3, sb), &mn, E::one(), &mut expect, sc);
        let mut out = Vec::with_capacity(n * sc);
        mul_small_pair_into(
            (view(&a, n, r, sa), &m),
            (view(&b, n, r + 3, sb), &mn),
            &mut out,
            sc,
        );
        let same = out.len() == expect.len()
            && out
                .iter()
                .zip(&expect)
                .all(|(p, q)| p.to_f64() == q.to_f64());
        assert!(same, "{n} x {r} x {k}");
    }
}

#[test]
fn products_match_a_plain_loop_and_into_spare_capacity_the_one_in_place() {
    check_products::<f64>(1e-15);
    check_products::<f32>(1e-6);
    check_into::<f32>();
    check_into::<f64>();
    check_pair::<f32>();
    check_pair::<f64>();
}

/// The same with the pieces shared between two threads.
#[test]
fn products_split_between_threads() {
    parallel::splitting(|| {
        check_products::<f64>(1e-15);
        check_into::<f32>();
        check_pair::<f64>();
    });
}
