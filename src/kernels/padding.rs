//! Copies between compact row-major storage (rows `cols` apart) and the padded storage of
//! [`HostMat`](super::HostMat) (rows `stride` apart, `stride >= cols`, padding zero).
//!
//! A copy of one short row is a call to `memmove` when written as `copy_from_slice`, one
//! call per row each way (and a zero-fill before padding): at small `r` padding and
//! compacting would dominate the retractions. On CPUs
//! with AVX-512F each register-wide part of a row is one load and one store (masked where
//! the row is shorter), and the padding is written with the row, so nothing is
//! zero-filled first.

use super::Real;

/// Appends `src` (`rows` rows of `cols` elements, compact) to the empty `dst` with rows
/// `stride` apart, each followed by `stride - cols` zeros. Panics unless
/// `src.len() == rows * cols`, `stride >= cols` and `dst` is empty.
pub fn pad_rows<E: Real>(src: &[E], rows: usize, cols: usize, stride: usize, dst: &mut Vec<E>) {
    copy_rows(Rows::new(src, rows, cols, cols, stride), dst);
}

/// Appends the first `cols` elements of each of the `rows` rows of `src` (`stride` long)
/// to the empty `dst`, compact. Panics unless `src.len() == rows * stride`,
/// `stride >= cols` and `dst` is empty.
pub fn compact_rows<E: Real>(src: &[E], rows: usize, stride: usize, cols: usize, dst: &mut Vec<E>) {
    copy_rows(Rows::new(src, rows, stride, cols, cols), dst);
}

/// A copy of the first `cols` elements of `rows` rows `src_stride` apart into rows
/// `dst_stride` apart, zeros after `cols`.
#[derive(Clone, Copy)]
struct Rows<'a, E> {
    src: &'a [E],
    rows: usize,
    src_stride: usize,
    cols: usize,
    dst_stride: usize,
}

impl<'a, E> Rows<'a, E> {
    /// The copy. Panics unless `src` holds `rows` rows of `src_stride` and both strides
    /// hold `cols`.
    fn new(src: &'a [E], rows: usize, src_stride: usize, cols: usize, dst_stride: usize) -> Self {
        assert!(
            src.len() == rows * src_stride && src_stride >= cols && dst_stride >= cols,
            "padding: shapes"
        );
        Self {
            src,
            rows,
            src_stride,
            cols,
            dst_stride,
        }
    }
}

/// Appends the rows of `job` to the empty `dst` (panics if it is not empty).
fn copy_rows<E: Real>(job: Rows<'_, E>, dst: &mut Vec<E>) {
    assert!(dst.is_empty(), "padding: the destination is not empty");
    dst.reserve_exact(job.rows * job.dst_stride);
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: the CPU has AVX-512F; `dst` has room for the `rows * dst_stride`
        // elements, every one of which the kernel writes, and `src` holds `rows` rows of
        // `src_stride` (checked by `Rows::new`).
        unsafe {
            avx512_rows::copy(job, dst.as_mut_ptr());
            dst.set_len(job.rows * job.dst_stride);
        }
        return;
    }
    copy_rows_plain(job, dst);
}

/// [`copy_rows`] without vector registers.
fn copy_rows_plain<E: Real>(job: Rows<'_, E>, dst: &mut Vec<E>) {
    for i in 0..job.rows {
        let start = i * job.src_stride;
        dst.extend_from_slice(&job.src[start..start + job.cols]);
        dst.resize(dst.len() + job.dst_stride - job.cols, E::zero());
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_rows {
    use super::Rows;
    use crate::kernels::avx512::base_register;
    use crate::kernels::Real;

    /// Writes `job`'s rows at `dst`, `dst_stride` elements each: row `i` is the first
    /// `cols` elements of the source's row `i`, then zeros. Each register-wide part of a
    /// row is one load (lanes past `cols` read nothing and come out zero) and one store,
    /// masked where the row is shorter than the register.
    ///
    /// # Safety
    /// AVX-512F; `dst` valid for writes of `rows * dst_stride` elements, apart from the
    /// source.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn copy<E: Real>(job: Rows<'_, E>, dst: *mut E) {
        let Rows {
            src,
            rows,
            src_stride,
            cols,
            dst_stride,
        } = job;
        let src = src.as_ptr();
        if dst_stride <= E::WIDTH {
            // One register per row, the same masks for every row.
            for i in 0..rows {
                let v = E::vload(src.add(i * src_stride), cols);
                E::vstore(dst.add(i * dst_stride), v, dst_stride);
            }
            return;
        }
        for i in 0..rows {
            let s = base_register(src.add(i * src_stride));
            let d = base_register(dst.add(i * dst_stride)).cast_mut();
            let mut off = 0;
            while off < dst_stride {
                // Past `cols` of the last row this points beyond `src`, and reads nothing.
                let v = E::vload(s.wrapping_add(off), cols.saturating_sub(off).min(E::WIDTH));
                E::vstore(d.add(off), v, (dst_stride - off).min(E::WIDTH));
                off += E::WIDTH;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape class: rows shorter than, as long as and longer than a register, with
    /// and without padding, no columns, no rows; `f32` and `f64`; the vector path (where
    /// the CPU has one) and the plain one against the definition.
    fn check<E: Real>() {
        for (rows, cols, stride) in [
            (1, 1, 8),
            (37, 4, 8),
            (5, 8, 8),
            (64, 12, 16),
            (9, 17, 24),
            (3, 33, 40),
            (0, 4, 8),
            (6, 0, 8),
        ] {
            let compact: Vec<E> = (0..rows * cols)
                .map(|i| E::of_f64(i as f64 * 0.5 - 7.0))
                .collect();
            // The plain path on the same copy.
            let plain = |src: &[E], src_stride: usize, dst_stride: usize| {
                let mut out = Vec::new();
                copy_rows_plain(Rows::new(src, rows, src_stride, cols, dst_stride), &mut out);
                out
            };
            let expected: Vec<E> = (0..rows * stride)
                .map(|k| {
                    let (i, j) = (k / stride, k % stride);
                    if j < cols {
                        compact[i * cols + j]
                    } else {
                        E::zero()
                    }
                })
                .collect();
            let mut padded = Vec::new();
            pad_rows(&compact, rows, cols, stride, &mut padded);
            assert_eq!(padded, expected, "pad {rows} x {cols} to {stride}");
            assert_eq!(plain(&compact, cols, stride), expected, "plain padding");
            let mut back = Vec::new();
            compact_rows(&padded, rows, stride, cols, &mut back);
            assert_eq!(back, compact, "compact {rows} x {stride} to {cols}");
            assert_eq!(plain(&padded, stride, cols), compact, "plain compacting");
        }
    }

    #[test]
    fn padding_and_compacting_match_a_plain_loop() {
        check::<f32>();
        check::<f64>();
    }

    /// The padding is written, whatever the buffer held before (a pooled allocation).
    #[test]
    fn padding_overwrites_old_values_with_zeros() {
        let mut dst = vec![f32::NAN; 64];
        dst.clear();
        pad_rows(&[1.0, 2.0, 3.0, 4.0], 2, 2, 8, &mut dst);
        assert_eq!(
            dst,
            [1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }
}
