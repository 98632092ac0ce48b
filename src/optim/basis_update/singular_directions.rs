//! One second moment per singular direction of the core: the frame, the split of the
//! tangent gradient's energy among its directions, the preconditioner it gives, and how
//! the moments follow the frame from step to step.
//!
//! With `S = A diag(sigma) B^T` (sorted so that `sigma` falls), direction `j` of the
//! adapter is the pair `(U a_j, V b_j)`. Its share of the tangent gradient's squared norm,
//! per dimension (`o + i - r` of them), is
//!
//! ```text
//! x_j = ( (B^T P^T P B)_jj + (A^T Q^T Q A)_jj - (||M~ e_j||^2 + ||M~^T e_j||^2) / 2 ) / (o + i - r)
//! ```
//!
//! with `M~ = A^T M B`: the parts of `P b_j` and `Q a_j` outside the bases, and half of the
//! core's row and column `j` (the parts inside are those of `M~`). The `x_j` sum to the
//! whole `||P_T(G)||^2` over `o + i - r`.
//!
//! With `n_j = 1 / (sqrt(v_hat_j) + eps)` the directions become
//! `D_P = m_P B diag(n) B^T`, `D_Q = m_Q A diag(n) A^T` and
//! `D_M = A diag(sqrt(n)) A^T m_M B diag(sqrt(n)) B^T` (bias-corrected moments): each part
//! of the tangent direction scaled by its own directions' `n` (the core's entry `(i, j)`
//! by `sqrt(n_i n_j)`), a positive scaling, so still a descent direction. With equal
//! `v_j` it is the one-per-adapter rule.
//!
//! The moments are kept free of the frame, as the pair of symmetric matrices
//! `H_U = A diag(v) A^T` (in `U`'s coordinates) and `H_V = B diag(v) B^T` (in `V`'s),
//! which turn with the bases as the first moments do: `H_U <- O_U^T H_U O_U`,
//! `H_V <- O_V^T H_V O_V`. The next step reads its directions' moments from them,
//! `v_j = (a_j^T H_U a_j + b_j^T H_V b_j) / 2` with its own frame: each new direction takes
//! the old moments weighted by its squared overlaps with the old directions, so a direction
//! that keeps its place keeps its moment and directions that swap or mix share theirs. (One
//! SVD of the core per step, none to carry.)

use nalgebra::DMatrix;

/// The singular frame of a core: `S = A diag(sigma) B^T`, `sigma` falling.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    a: DMatrix<f64>,
    b: DMatrix<f64>,
}

impl Frame {
    /// The frame of `s` (`r x r`), by nalgebra's SVD sorted here. Not the crate's
    /// `small::svd_jacobi`, which is accurate to rounding on clustered spectra but takes
    /// about twice as long: this SVD runs every step, and a frame off by rounding among
    /// nearly equal singular values only mixes directions whose moments are alike.
    pub(super) fn of(s: &DMatrix<f64>) -> Self {
        let r = s.nrows();
        let svd = s.clone().svd(true, true);
        let sigma = &svd.singular_values;
        let mut order: Vec<usize> = (0..r).collect();
        order.sort_by(|&x, &y| sigma[y].total_cmp(&sigma[x]));
        let (u, v_t) = (svd.u.expect("asked for U"), svd.v_t.expect("asked for V^T"));
        Frame {
            a: DMatrix::from_fn(r, r, |i, k| u[(i, order[k])]),
            b: DMatrix::from_fn(r, r, |i, k| v_t[(order[k], i)]),
        }
    }

    /// `x_j` (module docs) from `P^T P`, `Q^T Q`, `M` and `o + i - r`.
    pub(super) fn energies(
        &self,
        ptp: &DMatrix<f64>,
        qtq: &DMatrix<f64>,
        m: &DMatrix<f64>,
        dims: usize,
    ) -> Vec<f64> {
        let (a, b) = (&self.a, &self.b);
        let (p_side, q_side) = (diagonal_of(ptp, b), diagonal_of(qtq, a));
        let core = a.transpose() * m * b;
        (0..a.ncols())
            .map(|j| {
                let inside = (core.column(j).norm_squared() + core.row(j).norm_squared()) / 2.0;
                (p_side[j] + q_side[j] - inside).max(0.0) / dims.max(1) as f64
            })
            .collect()
    }

    /// The preconditioner of the scalings `n` (module docs): `B diag(n) B^T` for `P`,
    /// `A diag(n) A^T` for `Q`, and the core's left and right factors
    /// `A diag(sqrt(n)) A^T`, `B diag(sqrt(n)) B^T`.
    pub(super) fn preconditioner(&self, n: &[f64]) -> Preconditioner {
        let root: Vec<f64> = n.iter().map(|x| x.sqrt()).collect();
        Preconditioner {
            p: along(&self.b, n),
            q: along(&self.a, n),
            core_left: along(&self.a, &root),
            core_right: along(&self.b, &root),
        }
    }

    /// The moments `v` of this frame's directions held free of it: `H_U` and `H_V`
    /// (module docs), each `r x r`, one after the other (`2 r^2` values).
    pub(super) fn hold(&self, v: &[f64]) -> Vec<f64> {
        let (h_u, h_v) = (along(&self.a, v), along(&self.b, v));
        h_u.iter().chain(h_v.iter()).copied().collect()
    }

    /// The moments of this frame's directions read from a held pair (at least 0 each);
    /// `None` unless `held` has `2 r^2` values.
    pub(super) fn read(&self, held: &[f64]) -> Option<Vec<f64>> {
        let (h_u, h_v) = split_held(held, self.a.nrows())?;
        let (left, right) = (diagonal_of(&h_u, &self.a), diagonal_of(&h_v, &self.b));
        Some(
            left.iter()
                .zip(&right)
                .map(|(l, r)| ((l + r) / 2.0).max(0.0))
                .collect(),
        )
    }
}

/// `basis diag(d) basis^T`.
fn along(basis: &DMatrix<f64>, d: &[f64]) -> DMatrix<f64> {
    let mut scaled = basis.clone();
    for (mut column, &x) in scaled.column_iter_mut().zip(d) {
        column *= x;
    }
    scaled * basis.transpose()
}

/// The diagonal of `basis^T h basis`: `basis_j^T h basis_j`.
fn diagonal_of(h: &DMatrix<f64>, basis: &DMatrix<f64>) -> Vec<f64> {
    let hb = h * basis;
    (0..basis.ncols())
        .map(|j| basis.column(j).dot(&hb.column(j)))
        .collect()
}

/// The two `r x r` matrices of a held pair; `None` unless it has `2 r^2` values.
fn split_held(held: &[f64], r: usize) -> Option<(DMatrix<f64>, DMatrix<f64>)> {
    (held.len() == 2 * r * r).then(|| {
        (
            DMatrix::from_column_slice(r, r, &held[..r * r]),
            DMatrix::from_column_slice(r, r, &held[r * r..]),
        )
    })
}

/// A held pair turned with the bases: `H_U <- O_U^T H_U O_U`, `H_V <- O_V^T H_V O_V`
/// (`O_U = U^T U1`, `O_V = V^T V1`); empty stays empty.
pub(super) fn turn_held(held: &[f64], (o_u, o_v): (&DMatrix<f64>, &DMatrix<f64>)) -> Vec<f64> {
    match split_held(held, o_u.nrows()) {
        Some((h_u, h_v)) => {
            let (h_u, h_v) = (o_u.transpose() * h_u * o_u, o_v.transpose() * h_v * o_v);
            h_u.iter().chain(h_v.iter()).copied().collect()
        }
        None => held.to_vec(),
    }
}

/// The right factors of the tall directions and the two factors of the core's.
#[derive(Debug, Clone)]
pub(super) struct Preconditioner {
    /// `D_P = m_P p`.
    pub(super) p: DMatrix<f64>,
    /// `D_Q = m_Q q`.
    pub(super) q: DMatrix<f64>,
    /// `D_M = core_left m_M core_right`.
    pub(super) core_left: DMatrix<f64>,
    /// See `core_left`.
    pub(super) core_right: DMatrix<f64>,
}

#[cfg(test)]
mod tests {
    use super::{turn_held, Frame};
    use nalgebra::DMatrix;

    fn fixed(rows: usize, cols: usize, k: f64) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |i, j| ((i * 5 + j * 3) as f64 * k + 0.2).sin())
    }

    /// The energies split the tangent gradient's squared norm; equal scalings are the
    /// scalar rule; a frame carried through no turn keeps every moment in place.
    #[test]
    fn energies_split_the_tangent_norm_and_the_frame_is_carried() {
        let (o, i, r) = (7, 5, 3);
        let u = fixed(o, r, 0.3).qr().q();
        let v = fixed(i, r, 0.7).qr().q();
        let g = fixed(o, i, 1.1);
        let (p, q) = (&g * &v, g.transpose() * &u);
        let m = u.transpose() * &p;
        let s = fixed(r, r, 0.45) + DMatrix::identity(r, r) * 2.0;
        let frame = Frame::of(&s);
        let x = frame.energies(&(p.transpose() * &p), &(q.transpose() * &q), &m, o + i - r);
        let tangent = &u * u.transpose() * &g + &g * &v * v.transpose()
            - &u * u.transpose() * &g * &v * v.transpose();
        let total: f64 = x.iter().sum::<f64>() * (o + i - r) as f64;
        assert!((total - tangent.norm_squared()).abs() < 1e-12 * tangent.norm_squared());

        let pre = frame.preconditioner(&[0.5; 3]);
        assert!((&pre.p - DMatrix::identity(r, r) * 0.5).norm() < 1e-14);
        assert!((&pre.core_left * &pre.core_right - DMatrix::identity(r, r) * 0.5).norm() < 1e-14);

        // Held and read in the same frame, the moments come back; turned by no rotation
        // they stay.
        let id = DMatrix::identity(r, r);
        let held = frame.hold(&[1.0, 2.0, 3.0]);
        let same = |got: Vec<f64>, want: [f64; 3]| {
            got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-13)
        };
        assert!(same(
            frame.read(&turn_held(&held, (&id, &id))).unwrap(),
            [1.0, 2.0, 3.0]
        ));
        assert!(frame.read(&held[1..]).is_none());
        // Two directions whose singular values cross trade places in the sorted frame;
        // each keeps its own moment.
        let before = Frame::of(&DMatrix::from_diagonal(&nalgebra::dvector![3.0, 2.0, 1.0]));
        let after = Frame::of(&DMatrix::from_diagonal(&nalgebra::dvector![2.0, 3.0, 1.0]));
        let w = after.read(&before.hold(&[1.0, 2.0, 3.0])).unwrap();
        assert!(same(w.clone(), [2.0, 1.0, 3.0]), "{w:?}");
        // Bases turned by O (S1 = O^T S O, the same dW): each direction keeps its moment.
        let o = fixed(r, r, 0.9).qr().q();
        let turned = Frame::of(&(o.transpose() * &s * &o));
        let w = turned.read(&turn_held(&held, (&o, &o))).unwrap();
        assert!(same(w.clone(), [1.0, 2.0, 3.0]), "{w:?}");
    }
}
