//! The reflection sweep on AVX-512 registers.
//!
//! Row `i` below the pivot holds `v_i = A[i, k]`; the sweep sets
//! `A[i, k+1..] += v_i w` (`w` holding `-beta_k w_j`, zero for `j <= k`, so the update can
//! cover whole registers from the one holding column `k+1`) and accumulates
//! `u += A[i, k+1] A[i, ..]` over the whole updated row. Rows are processed `U` at a time into separate
//! accumulators so that the FMA latency does not serialise the sweep, and the partial sums
//! join `u` every [`SUM_BLOCK`] rows, as in the portable sweep.

use super::blocking::SUM_BLOCK;
use crate::kernels::Real;

/// Registers per row handled by the tiled sweeps; wider rows take the portable sweep.
const MAX_CHUNKS: usize = 8;

/// Runs reflector `k`'s sweep (`pivot`; `None`: the sweep before the first reflector,
/// which only collects `u = A^T A[.., 0]`) over `rows` (`stride`-long rows below the pivot)
/// and returns true, or returns false without touching anything when a row spans more
/// than [`MAX_CHUNKS`] registers, or less than one: rows narrower than a register share
/// cache lines, and a masked load right after a masked store to the same line stalls.
///
/// # Safety
/// The CPU must support AVX-512F and the caller must be compiled with it enabled.
#[inline(always)]
pub unsafe fn sweep<E: Real>(
    rows: &mut [E],
    stride: usize,
    pivot: Option<usize>,
    w: &[E],
    u: &mut [E],
) -> bool {
    let x_col = pivot.map_or(0, |k| k + 1);
    let at = Sweep {
        stride,
        first_updated: x_col / E::WIDTH,
        v_col: pivot.unwrap_or(0),
        x_col,
    };
    if stride < E::WIDTH {
        return false;
    }
    match (pivot.is_some(), stride.div_ceil(E::WIDTH)) {
        (true, 1) => at.run::<E, 1, 4, true>(rows, w, u),
        (true, 2) => at.run::<E, 2, 2, true>(rows, w, u),
        (true, 3) => at.run::<E, 3, 2, true>(rows, w, u),
        (true, 4) => at.run::<E, 4, 2, true>(rows, w, u),
        (true, 5..=MAX_CHUNKS) => at.run::<E, MAX_CHUNKS, 1, true>(rows, w, u),
        (false, 1) => at.run::<E, 1, 4, false>(rows, w, u),
        (false, 2..=4) => at.run::<E, 4, 2, false>(rows, w, u),
        (false, 5..=MAX_CHUNKS) => at.run::<E, MAX_CHUNKS, 1, false>(rows, w, u),
        _ => return false,
    }
    true
}

/// Where one sweep reads and writes in a row.
#[derive(Clone, Copy)]
struct Sweep {
    stride: usize,
    /// The first register updated: the one holding column `k+1` (`w` is zero before it).
    first_updated: usize,
    /// Column of `v_i`.
    v_col: usize,
    /// Column `k+1`.
    x_col: usize,
}

impl Sweep {
    /// The sweep with `J` registers per row (the last ones possibly partial or empty),
    /// `U` rows in flight, and the update of the rows on or off.
    #[inline(always)]
    unsafe fn run<E: Real, const J: usize, const U: usize, const UPDATE: bool>(
        self,
        rows: &mut [E],
        w: &[E],
        u: &mut [E],
    ) {
        let stride = self.stride;
        let lanes: [usize; J] =
            std::array::from_fn(|j| stride.saturating_sub(j * E::WIDTH).min(E::WIDTH));
        let wv: [E::V; J] =
            std::array::from_fn(|j| E::vload(w.as_ptr().add(j * E::WIDTH), lanes[j]));
        let mut total: [E::V; J] = [E::vzero(); J];
        for block in rows.chunks_mut(stride * SUM_BLOCK) {
            let count = block.len() / stride;
            let base = block.as_mut_ptr();
            let mut acc = [[E::vzero(); J]; U];
            let mut i = 0;
            while i + U <= count {
                for (t, acc_t) in acc.iter_mut().enumerate() {
                    self.row::<E, J, UPDATE>(base.add((i + t) * stride), &wv, &lanes, acc_t);
                }
                i += U;
            }
            for i in i..count {
                self.row::<E, J, UPDATE>(base.add(i * stride), &wv, &lanes, &mut acc[0]);
            }
            for acc_t in &acc {
                for j in 0..J {
                    total[j] = E::vadd(total[j], acc_t[j]);
                }
            }
        }
        for j in 0..J {
            let p = u.as_mut_ptr().add(j * E::WIDTH);
            E::vstore(p, E::vadd(E::vload(p, lanes[j]), total[j]), lanes[j]);
        }
    }

    /// One row: `A[i, ..] += v_i w` (if `UPDATE`, on the registers from the one holding
    /// column `k+1`), then `acc += A[i, k+1] A[i, ..]`.
    #[inline(always)]
    unsafe fn row<E: Real, const J: usize, const UPDATE: bool>(
        self,
        row: *mut E,
        wv: &[E::V; J],
        lanes: &[usize; J],
        acc: &mut [E::V; J],
    ) {
        let mut rv: [E::V; J] = std::array::from_fn(|j| E::vload(row.add(j * E::WIDTH), lanes[j]));
        if UPDATE {
            let vi = E::vsplat(row.add(self.v_col));
            for j in self.first_updated..J {
                rv[j] = E::vfma(vi, wv[j], rv[j]);
                E::vstore(row.add(j * E::WIDTH), rv[j], lanes[j]);
            }
        }
        // Read back through memory: the store forwards, and no register is indexed at run time.
        let x = E::vsplat(row.add(self.x_col));
        for j in 0..J {
            acc[j] = E::vfma(x, rv[j], acc[j]);
        }
    }
}
