//! The dense reference: a basis-update step written out on `(U, S, V)` in nalgebra, with
//! the full gradient `G` formed explicitly.

use super::{full_gradient, host, row_major, Layer, I, O, R};
use nalgebra::DMatrix;

/// `qf(K)`: the Q factor of the thin QR with `diag(R) >= 0`.
pub fn qf(k: &DMatrix<f64>) -> DMatrix<f64> {
    let (q, r) = k.clone().qr().unpack();
    let signs = DMatrix::from_diagonal(&r.diagonal().map(|d| if d < 0.0 { -1.0 } else { 1.0 }));
    q * signs
}

/// The dense reference: the factors after `steps` steps of a rule written out on
/// `(U, S, V)` with `G` formed explicitly.
#[derive(Clone, Copy)]
pub enum Reference {
    Sgd {
        mu: f64,
        nesterov: bool,
        damp: f64,
    },
    /// `b2: None`: Adafactor's increasing decay `1 - t^-0.8`, no correction;
    /// `per_direction`: one second moment per singular direction of the core, else one.
    Adam {
        b1: f64,
        b2: Option<f64>,
        eps: f64,
        per_direction: bool,
    },
}

/// The singular frame of `s`, singular values falling: `(A, B)` with `S = A diag B^T`.
pub fn frame(s: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
    let svd = s.clone().svd(true, true);
    let mut order: Vec<usize> = (0..R).collect();
    order.sort_by(|&x, &y| svd.singular_values[y].total_cmp(&svd.singular_values[x]));
    let (u, vt) = (svd.u.unwrap(), svd.v_t.unwrap());
    (
        DMatrix::from_fn(R, R, |i, k| u[(i, order[k])]),
        DMatrix::from_fn(R, R, |i, k| vt[(order[k], i)]),
    )
}

/// `basis diag(d) basis^T`.
pub fn along(basis: &DMatrix<f64>, d: &[f64]) -> DMatrix<f64> {
    basis * DMatrix::from_diagonal(&nalgebra::DVector::from_column_slice(d)) * basis.transpose()
}

pub fn dense_steps(
    l: &Layer,
    rule: Reference,
    lr: f64,
    steps: usize,
) -> (DMatrix<f64>, DMatrix<f64>, DMatrix<f64>) {
    let c = l.scale();
    let mut work = l.clone();
    let (mut u, mut s, mut v) = (host(&l.basis_out), host(&l.core), host(&l.basis_in));
    let (mut mp, mut mq, mut mm) = (
        DMatrix::zeros(O, R),
        DMatrix::zeros(I, R),
        DMatrix::zeros(R, R),
    );
    let mut second = 0.0;
    let mut seconds = [0.0; R];
    for t in 1..=steps {
        work.basis_out.copy_from(&row_major(&u));
        work.core.copy_from(&row_major(&s));
        work.basis_in.copy_from(&row_major(&v));
        let g = full_gradient(&work);
        let p = &g * &v * c;
        let q = g.transpose() * &u * c;
        let m = u.transpose() * &p;
        let (dp, dq, dm) = match rule {
            Reference::Sgd { mu, nesterov, damp } => {
                if t == 1 {
                    (mp, mq, mm) = (p.clone(), q.clone(), m.clone());
                } else {
                    mp = &mp * mu + &p * (1.0 - damp);
                    mq = &mq * mu + &q * (1.0 - damp);
                    mm = &mm * mu + &m * (1.0 - damp);
                }
                if mu == 0.0 {
                    (p, q, m)
                } else if nesterov {
                    (&p + &mp * mu, &q + &mq * mu, &m + &mm * mu)
                } else {
                    (mp.clone(), mq.clone(), mm.clone())
                }
            }
            Reference::Adam {
                b1,
                b2,
                eps,
                per_direction,
            } => {
                mp = &mp * b1 + &p * (1.0 - b1);
                mq = &mq * b1 + &q * (1.0 - b1);
                mm = &mm * b1 + &m * (1.0 - b1);
                let ti = t as i32;
                let (decay, correction) = match b2 {
                    Some(b2) => (b2, 1.0 / (1.0 - b2.powi(ti))),
                    None => (1.0 - (t as f64).powf(-0.8), 1.0),
                };
                let unbias = 1.0 / (1.0 - b1.powi(ti));
                if per_direction {
                    // Direction j: the parts of P b_j, Q a_j outside the bases and half
                    // of the core's row and column j, over o + i - r dimensions.
                    let (a, b) = frame(&s);
                    let p_out = &p - &u * (u.transpose() * &p);
                    let q_out = &q - &v * (v.transpose() * &q);
                    let core = a.transpose() * &m * &b;
                    let n: Vec<f64> = (0..R)
                        .map(|j| {
                            let x = ((&p_out * b.column(j)).norm_squared()
                                + (&q_out * a.column(j)).norm_squared()
                                + (core.column(j).norm_squared() + core.row(j).norm_squared())
                                    / 2.0)
                                / (O + I - R) as f64;
                            seconds[j] = decay * seconds[j] + (1.0 - decay) * x;
                            1.0 / ((seconds[j] * correction).sqrt() + eps)
                        })
                        .collect();
                    let root: Vec<f64> = n.iter().map(|x| x.sqrt()).collect();
                    (
                        &mp * along(&b, &n) * unbias,
                        &mq * along(&a, &n) * unbias,
                        along(&a, &root) * &mm * along(&b, &root) * unbias,
                    )
                } else {
                    let dim = ((O + I) * R - R * R) as f64;
                    let norm2 = p.norm_squared() + q.norm_squared() - m.norm_squared();
                    second = decay * second + (1.0 - decay) * norm2 / dim;
                    let scale = unbias / ((second * correction).sqrt() + eps);
                    (&mp * scale, &mq * scale, &mm * scale)
                }
            }
        };
        let old_frame = frame(&s);
        let u1 = qf(&(&u * &s - &dp * lr));
        let v1 = qf(&(&v * s.transpose() - &dq * lr));
        let (o_u, o_v) = (u.transpose() * &u1, v.transpose() * &v1);
        s = o_u.transpose() * (&s - &dm * lr) * &o_v;
        // Each new direction k takes the old moments weighted by its squared overlaps.
        let (a1, b1) = frame(&s);
        let w_u = old_frame.0.transpose() * &o_u * a1;
        let w_v = old_frame.1.transpose() * &o_v * b1;
        seconds = std::array::from_fn(|k| {
            (0..R)
                .map(|j| seconds[j] * (w_u[(j, k)].powi(2) + w_v[(j, k)].powi(2)) / 2.0)
                .sum()
        });
        mp = &mp * &o_v;
        mq = &mq * &o_u;
        mm = o_u.transpose() * &mm * &o_v;
        (u, v) = (u1, v1);
    }
    (u, s, v)
}

pub fn assert_factors(got: &Layer, want: &(DMatrix<f64>, DMatrix<f64>, DMatrix<f64>), what: &str) {
    let gaps = [
        (host(&got.basis_out) - &want.0).norm(),
        (host(&got.core) - &want.1).norm() / want.1.norm(),
        (host(&got.basis_in) - &want.2).norm(),
    ];
    assert!(gaps.iter().all(|&g| g <= 1e-10), "{what}: {gaps:?}");
}
