//! The basis-update (K/L) step: one optimizer step on an adapter `dW = c U S V^T`, jointly
//! on its bases `U` (`basis_out`), `V` (`basis_in`) and full core `S` (`core`).
//!
//! With the layer's gradients `P = c G V` (for `U`), `Q = c G^T U` (for `V`) and
//! `M = U^T P` (for `S`), `G` the full fine-tuning gradient of the layer's weight, and a
//! rule that turns them into directions `D_P`, `D_Q`, `D_M` (below):
//!
//! ```text
//! K  = U S - eta D_P          U1 = qf(K)
//! L  = V S^T - eta D_Q        V1 = qf(L)
//! S1 = (U1^T U)(S - eta_S D_M - eta_S wd S)(V^T V1)
//! ```
//!
//! `qf` is the Q factor of the thin QR with `diag(R) >= 0`, `eta` the bases' learning rate,
//! `eta_S` and `wd` the core group's (decoupled weight decay; an `L2` decay adds `wd S` to
//! `M` instead). Nothing is projected: the core absorbs the part of `P` inside `span(U)`.
//! To first order, with plain gradient descent and `eta_S = eta`, `dW` moves by
//! `-eta c^2 P_T(G)`, `P_T(G) = P_U G + G P_V - P_U G P_V`: the Riemannian gradient on
//! the manifold of rank-`r` matrices, whatever the factor split or the spectrum of `dW`.
//! This is the basis-update & Galerkin integrator of dynamical low-rank approximation
//! (Ceruti and Lubich 2022) with the Galerkin core replaced by the layer's own gradient
//! (`shared/notes/sds-step.md`).
//!
//! Rules. The moments of `P`, `Q` and `M` live in coordinates that rotate with the bases,
//! so after each step they are carried to the new ones with `O_U = U^T U1`,
//! `O_V = V^T V1`: `m_P <- m_P O_V`, `m_Q <- m_Q O_U`, `m_M <- O_U^T m_M O_V`.
//!
//! - SGD: `D = g` without momentum; with momentum `mu` and dampening `d`,
//!   `m <- g` on the first step and `m <- mu m + (1 - d) g` after, `D = m`
//!   (classic) or `D = g + mu m` (Nesterov), for each of `g = P, Q, M`.
//! - Adam: `m <- b1 m + (1 - b1) g` for each of `P, Q, M`, and second moments of the
//!   tangent gradient `P_T(G)`, which survive the rotations (an elementwise second moment
//!   has no fixed meaning in rotating coordinates: it breaks the invariance to the factor
//!   split and fails on ill-conditioned targets). By default one per singular direction of
//!   the core, `S = A diag(sigma) B^T` ([`SecondMomentPer`]): direction `j` measures
//!   `x_j = (||(I - U U^T) P b_j||^2 + ||(I - V V^T) Q a_j||^2 + (||M~ e_j||^2 +
//!   ||M~^T e_j||^2) / 2) / (o + i - r)` with `M~ = A^T M B`, averages it into `v_j`, and
//!   scales by `n_j = 1 / (sqrt(v_hat_j) + eps)`:
//!   `D_P = m_P B diag(n) B^T / (1 - b1^t)`, `D_Q = m_Q A diag(n) A^T / (1 - b1^t)`,
//!   `D_M = A diag(sqrt(n)) A^T m_M B diag(sqrt(n)) B^T / (1 - b1^t)`. The `v_j` are kept
//!   free of the frame, as `A diag(v) A^T` and `B diag(v) B^T`, turned with the bases like
//!   the first moments, and read back in the next step's frame (`singular_directions`:
//!   a direction that keeps its place keeps its moment). Or one for the whole adapter,
//!   `x_t = (||P||^2 + ||Q||^2 - ||M||^2) / ((o + i) r - r^2)`, and
//!   `D = m / ((1 - b1^t) (sqrt(v_hat) + eps))`. Either average over the steps by
//!   Adafactor's increasing decay `v <- b2_t v + (1 - b2_t) x_t`, `b2_t = 1 - t^-0.8`,
//!   `v_hat = v` (the default), or Adam's moving average, `b2_t = b2`,
//!   `v_hat = v / (1 - b2^t)` ([`AdapterSecondMoment`]); AMSGrad uses
//!   `v_max <- max(v_max, v)` in place of `v`.
//!
//! Everything `n x r` goes through [`TallOps`], so the host path and the composed (device)
//! path run these same lines; the `r x r` work is on the host in `f64`.

mod directions;
mod second_moment;
mod singular_directions;

use super::rules::{AdamRule, SgdRule, WeightDecay};
use crate::kernels::{Real, TallOps};
use crate::stiefel::retractions::{q_factors, Sums};
use crate::Error;
use directions::directions;
use nalgebra::DMatrix;
pub use second_moment::{AdapterSecondMoment, SecondMomentPer};
use singular_directions::{turn_held, Frame};

/// An adapter's point: the bases (`[o, r]` and `[i, r]`, orthonormal columns) and the
/// core `[r, r]`.
#[derive(Debug, Clone)]
pub struct AdapterPoint<M> {
    /// `U`.
    pub u: M,
    /// `S`.
    pub s: DMatrix<f64>,
    /// `V`.
    pub v: M,
}

/// The layer's gradients for an adapter.
#[derive(Debug, Clone)]
pub struct AdapterGrad<M> {
    /// `P = c G V`, the gradient of `U`.
    pub p: M,
    /// `M = U^T P`, the gradient of `S`.
    pub m: DMatrix<f64>,
    /// `Q = c G^T U`, the gradient of `V`.
    pub q: M,
}

/// The moments an adapter's rule carries between steps (`None`: not used yet).
#[derive(Debug, Clone)]
pub struct AdapterMoments<M> {
    /// Steps taken.
    pub step: u64,
    /// First moment (or velocity) of `P`.
    pub p: Option<M>,
    /// First moment of `M`.
    pub m: Option<DMatrix<f64>>,
    /// First moment of `Q`.
    pub q: Option<M>,
    /// Adam's second moment (one for the adapter).
    pub v: f64,
    /// Its running maximum (AMSGrad).
    pub v_max: f64,
    /// Adam's second moments per singular direction of the core
    /// ([`SecondMomentPer::SingularDirection`]; empty until a step keeps them), held free
    /// of the core's frame `S = A diag(sigma) B^T` as `A diag(v) A^T` and `B diag(v) B^T`,
    /// each `r x r`, one after the other (`2 r^2` values). A step of another rule passes
    /// them on, turned with the bases.
    pub v_directions: Vec<f64>,
    /// Their running maxima (AMSGrad), held the same way.
    pub v_directions_max: Vec<f64>,
}

impl<M> Default for AdapterMoments<M> {
    /// The moments before the first step.
    fn default() -> Self {
        Self {
            step: 0,
            p: None,
            m: None,
            q: None,
            v: 0.0,
            v_max: 0.0,
            v_directions: Vec::new(),
            v_directions_max: Vec::new(),
        }
    }
}

/// The rule of a basis-update step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdapterRule {
    /// SGD, with momentum, Nesterov and dampening.
    Sgd(SgdRule),
    /// Adam (and AMSGrad) with tangent-norm second moments, averaged over the steps as
    /// the second field says, one per adapter or per singular direction of its core as
    /// the third says.
    Adam(AdamRule, AdapterSecondMoment, SecondMomentPer),
}

/// Step sizes of a basis-update step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdapterStepSizes {
    /// `eta`: the bases' learning rate.
    pub bases: f64,
    /// `eta_S`: the core's learning rate.
    pub core: f64,
    /// The core's weight decay.
    pub core_weight_decay: Option<WeightDecay>,
}

/// Which input of an adapter step holds NaN or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPart {
    /// `U` or its gradient.
    BasisOut,
    /// `S` or its gradient.
    Core,
    /// `V` or its gradient.
    BasisIn,
}

/// The new point and moments of a basis-update step.
pub type Stepped<M> = (AdapterPoint<M>, AdapterMoments<M>);

/// One basis-update step (module docs): the new point and moments. `old` is what the rule
/// carried from the previous step, only read (its buffers stay with the caller's state,
/// which changes only when the whole step succeeds). Errors before anything is returned:
/// a non-finite gradient or core ([`Error::NonFinite`], naming the [`AdapterPart`] in
/// `what`), or a device failure.
pub fn basis_update<E: Real, B: TallOps<E>>(
    ops: &B,
    x: AdapterPoint<B::Mat>,
    g: AdapterGrad<B::Mat>,
    old: &AdapterMoments<B::Mat>,
    rule: AdapterRule,
    sizes: AdapterStepSizes,
) -> Result<Stepped<B::Mat>, Error> {
    let per_direction = matches!(
        rule,
        AdapterRule::Adam(_, _, SecondMomentPer::SingularDirection)
    );
    let (norms, grams) = checked_norms(ops, &x, &g, per_direction)?;
    let AdapterPoint { u, s, v } = x;
    let t = old.step.saturating_add(1);
    let mut gm = g.m;
    if let Some(WeightDecay::L2(wd)) = sizes.core_weight_decay {
        gm += &s * wd;
    }
    // One second moment per singular direction: the frame of S and the energies x_j.
    let split = grams.map(|[ptp, qtq]| {
        let frame = Frame::of(&s);
        let dims = ops.dims(&u).0 + ops.dims(&v).0 - s.nrows();
        let x = frame.energies(&ptp, &qtq, &gm, dims);
        (frame, x)
    });
    let (mut dir, mut next) = directions(ops, rule, (g.p, gm, g.q), norms, old, split.as_ref())?;
    next.step = t;

    // K = U S - eta D_P, L = V S^T - eta D_Q, and their Q factors.
    let eta = sizes.bases;
    let k = dir.p.after(ops, &u, &s, -eta)?;
    let l = dir.q.after(ops, &v, &s.transpose(), -eta)?;
    let mut bases = q_factors(ops, Sums::new(ops, vec![k, l])?)?;
    next.p = dir.p.moment.take();
    next.q = dir.q.moment.take();
    let v1 = bases.pop().expect("two factors");
    let u1 = bases.pop().expect("two factors");
    let rotations = ops.grams(&[(&u, &u1), (&v, &v1)])?;
    let (o_u, o_v) = (&rotations[0], &rotations[1]);

    // S1 = O_U^T (S - eta_S (D_M + wd S)) O_V.
    let decay = match sizes.core_weight_decay {
        Some(WeightDecay::Decoupled(wd)) => wd,
        _ => 0.0,
    };
    let core_step = &s * (1.0 - sizes.core * decay) - dir.m * sizes.core;
    let s1 = o_u.transpose() * core_step * o_v;
    if !s1.iter().all(|x| x.is_finite()) {
        return Err(Error::NonFinite {
            what: "the new core (the step overflows)".into(),
        });
    }

    // Carry the moments to the new bases.
    let mut carried = Vec::new();
    let (has_p, has_q) = (next.p.is_some(), next.q.is_some());
    if let Some(mp) = next.p.take() {
        carried.push((mp, o_v.clone()));
    }
    if let Some(mq) = next.q.take() {
        carried.push((mq, o_u.clone()));
    }
    let mut carried = ops.transform_each(carried)?.into_iter();
    next.p = has_p.then(|| carried.next().expect("carried m_P"));
    next.q = has_q.then(|| carried.next().expect("carried m_Q"));
    next.m = next.m.map(|mm| o_u.transpose() * mm * o_v);
    next.v_directions = turn_held(&next.v_directions, (o_u, o_v));
    next.v_directions_max = turn_held(&next.v_directions_max, (o_u, o_v));
    Ok((
        AdapterPoint {
            u: u1,
            s: s1,
            v: v1,
        },
        next,
    ))
}

/// The gradients' Gram matrices `[P^T P, Q^T Q]`, where `grams` asks for them.
type GradGrams = Option<[DMatrix<f64>; 2]>;

/// `[||P||^2, ||Q||^2]`, accumulated in `f64` (the traces of `P^T P` and `Q^T Q`, also
/// returned, where `grams`); fails with [`Error::NonFinite`] where a gradient or the core
/// holds NaN or an infinity. A finite squared norm means finite entries, so the entries
/// are scanned only where a norm is not finite (NaN, an infinity, or an overflowing sum).
/// (A non-finite basis makes the Gram matrix of `K` or `L` non-finite: [`Sums::new`]
/// reports it.)
fn checked_norms<E: Real, B: TallOps<E>>(
    ops: &B,
    x: &AdapterPoint<B::Mat>,
    g: &AdapterGrad<B::Mat>,
    grams: bool,
) -> Result<([f64; 2], GradGrams), Error> {
    let (norms, grams) = if grams {
        let mut pair = ops.grams(&[(&g.p, &g.p), (&g.q, &g.q)])?;
        let qtq = pair.pop().expect("two Gram matrices");
        let ptp = pair.pop().expect("two Gram matrices");
        (vec![ptp.trace(), qtq.trace()], Some([ptp, qtq]))
    } else {
        (ops.squared_norms(&[&g.p, &g.q])?, None)
    };
    let finite = if norms.iter().all(|n| n.is_finite()) {
        vec![true, true]
    } else {
        ops.all_finite_each(&[&g.p, &g.q])?
    };
    let small_finite = |m: &DMatrix<f64>| m.iter().all(|v| v.is_finite());
    let checks = [
        (finite[0], AdapterPart::BasisOut, "the gradient"),
        (finite[1], AdapterPart::BasisIn, "the gradient"),
        (small_finite(&g.m), AdapterPart::Core, "the gradient"),
        (small_finite(&x.s), AdapterPart::Core, "the value"),
    ];
    match checks.iter().find(|(ok, _, _)| !ok) {
        Some((_, part, what)) => Err(Error::NonFinite {
            what: format!("{what} of {}", part.name()),
        }),
        None => Ok(([norms[0], norms[1]], grams)),
    }
}

impl AdapterPart {
    /// The tensor name of this part (`basis_out`, `core`, `basis_in`).
    pub fn name(self) -> &'static str {
        match self {
            AdapterPart::BasisOut => super::groups::BASIS_OUT_NAME,
            AdapterPart::Core => super::groups::CORE_NAME,
            AdapterPart::BasisIn => super::groups::BASIS_IN_NAME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::RowPieces;
    use crate::optim::groups::{BASIS_IN_NAME, BASIS_OUT_NAME};

    type Mat = <<f64 as Real>::Host as TallOps<f64>>::Mat;

    /// An `8 x 2` host matrix with every entry `x`.
    fn filled(x: f64) -> Mat {
        Mat::from_compact(8, 2, vec![x; 16])
    }

    /// The norms are the gradients' own; a finite gradient whose squared norm overflows
    /// passes (its entries are scanned), and a NaN is named by the tensor that holds it.
    #[test]
    fn checked_norms_scan_the_entries_only_where_a_norm_is_not_finite() {
        let ops = f64::host_ops();
        let x = AdapterPoint {
            u: filled(0.0),
            s: DMatrix::zeros(2, 2),
            v: filled(0.0),
        };
        let grad = |p: f64, q: f64| AdapterGrad {
            p: filled(p),
            m: DMatrix::zeros(2, 2),
            q: filled(q),
        };
        for grams in [false, true] {
            let (norms, got) = checked_norms(&ops, &x, &grad(0.5, 2.0), grams).unwrap();
            assert_eq!(norms, [4.0, 64.0]);
            assert_eq!(got.is_some(), grams);
            let ([p2, q2], _) = checked_norms(&ops, &x, &grad(1e200, 1.0), grams).unwrap();
            assert!(p2.is_infinite() && q2 == 16.0);
        }
        for (g, name) in [
            (grad(f64::NAN, 1.0), BASIS_OUT_NAME),
            (grad(1.0, f64::INFINITY), BASIS_IN_NAME),
        ] {
            match checked_norms(&ops, &x, &g, false) {
                Err(Error::NonFinite { what }) => assert!(what.contains(name), "{what}"),
                other => panic!("expected a non-finite gradient of {name}: {other:?}"),
            }
        }
    }
}
