//! A basis-update rule's directions and new moments (formulas: the parent module's docs).
//!
//! The rule's formulas are the per-tensor rules' own ([`SgdStep`], [`AdamStep`]): they
//! run on [`Form`]s, linear forms over the gradient and the moments, which gives one set
//! of coefficients for `P` and `Q`; each tall matrix is then formed in one pass, and the
//! `r x r` ones on the host.

use super::singular_directions::Frame;
use super::{AdapterMoments, AdapterRule};
use crate::kernels::{Real, TallOps};
use crate::optim::rules::{AdamStep, SgdStep};
use crate::Error;
use nalgebra::DMatrix;
use std::ops::{Add, Mul};

/// What a rule's coefficients multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operand {
    /// The gradient (`P`, `Q` or `M`).
    Gradient,
    /// The moment carried from the previous step.
    OldMoment,
    /// The moment this step keeps.
    Moment,
}

/// A linear form `sum_k a_k X_k` over the [`Operand`]s.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Form(Vec<(f64, Operand)>);

impl Add for Form {
    type Output = Self;
    fn add(mut self, other: Self) -> Self {
        self.0.extend(other.0);
        self
    }
}

impl Mul<f64> for Form {
    type Output = Self;
    fn mul(self, c: f64) -> Self {
        Form(self.0.into_iter().map(|(a, x)| (a * c, x)).collect())
    }
}

impl Form {
    /// Whether a term of this form multiplies `x`.
    fn uses(&self, x: Operand) -> bool {
        self.0.iter().any(|&(_, y)| y == x)
    }

    /// `1 X`.
    fn of(x: Operand) -> Self {
        Form(vec![(1.0, x)])
    }

    /// `sum_k a_k X_k` for `r x r` operands.
    fn small<'a>(&self, operand: impl Fn(Operand) -> &'a DMatrix<f64>) -> DMatrix<f64> {
        let (a, x) = self.0[0];
        let first = operand(x) * a;
        self.0[1..]
            .iter()
            .fold(first, |sum, &(a, x)| sum + operand(x) * a)
    }

    /// `sum_k a_k X_k` for tall operands, in a new matrix.
    fn tall<'a, E: Real, B: TallOps<E>>(
        &self,
        ops: &B,
        operand: impl Fn(Operand) -> &'a B::Mat,
    ) -> Result<B::Mat, Error>
    where
        B::Mat: 'a,
    {
        let (a, x) = self.0[0];
        // The first two terms in one pass, any others added after.
        let first = match self.0.get(1) {
            Some(&(b, y)) => ops.lincomb(E::of_f64(a), operand(x), E::of_f64(b), operand(y))?,
            None => ops.lincomb(E::of_f64(a), operand(x), E::zero(), operand(x))?,
        };
        self.0.iter().skip(2).try_fold(first, |sum, &(a, x)| {
            ops.axpy(E::of_f64(a), operand(x), sum)
        })
    }
}

/// How the rule turns a gradient into a direction at this step: the moment it keeps (a
/// form of the gradient and the old moment) and the direction (a form of the gradient and
/// the kept moment), the same for `P`, `Q` and `M`; Adam's new `v`, `v_max`; and, with
/// one second moment per singular direction, the new ones and the scalings `n_j` that
/// precondition the direction.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    moment: Option<Form>,
    direction: Form,
    v: f64,
    v_max: f64,
    per_direction: Option<PerDirection>,
}

/// The second moments of the singular directions after this step, their maxima, and the
/// scalings `n_j = 1 / (sqrt(v_hat_j) + eps)`.
#[derive(Debug, Clone, PartialEq)]
struct PerDirection {
    v: Vec<f64>,
    v_max: Vec<f64>,
    scalings: Vec<f64>,
}

impl Plan {
    /// The plan of `rule` after the moments `old`; `tangent2` is `||P_T(G)||^2` per
    /// tangent dimension, and `split` the core's singular frame with that norm's split
    /// among its directions where the rule keeps one second moment per direction (Adam's
    /// second moments follow them).
    fn of<M>(
        rule: AdapterRule,
        old: &AdapterMoments<M>,
        tangent2: f64,
        split: Option<&(Frame, Vec<f64>)>,
    ) -> Self {
        let g = Form::of(Operand::Gradient);
        let kept = Form::of(Operand::Moment);
        let carried = old.step > 0 && old.p.is_some() && old.q.is_some() && old.m.is_some();
        let old_moment = carried.then(|| Form::of(Operand::OldMoment));
        match rule {
            AdapterRule::Sgd(sgd) => {
                let c = SgdStep::<f64>::new(&sgd, 1.0);
                let moment = c
                    .momentum
                    .map(|(mu, keep)| SgdStep::velocity(mu, keep, old_moment, g.clone()));
                let direction = c.update(g, moment.as_ref().map(|_| kept));
                Plan {
                    moment,
                    direction,
                    v: 0.0,
                    v_max: 0.0,
                    per_direction: None,
                }
            }
            AdapterRule::Adam(adam, average, _) => {
                let t = old.step.saturating_add(1);
                let c = AdamStep::<f64>::new(&adam, 1.0, t);
                let b2 = adam.betas[1];
                let correction = average.correction(b2, t);
                // v <- average(v, x), v_max <- max(v_max, v), and sqrt(v_hat) + eps.
                let second = |old_v: f64, old_max: f64, x: f64| {
                    let v = average.average(b2, old_v, x, t);
                    let v_max = v.max(old_max);
                    let used = if adam.amsgrad { v_max } else { v };
                    (v, v_max, (used * correction).sqrt() + adam.eps)
                };
                let moment = Some(c.first(old_moment.unwrap_or_default(), g));
                match split {
                    None => {
                        let (v, v_max, denominator) = second(old.v, old.v_max, tangent2);
                        Plan {
                            moment,
                            direction: kept * c.update(1.0, denominator),
                            v,
                            v_max,
                            per_direction: None,
                        }
                    }
                    Some((frame, x)) => {
                        // A checkpoint of one moment per adapter starts every direction
                        // from it.
                        let olds = |held: &[f64], one: f64| {
                            frame.read(held).unwrap_or_else(|| vec![one; x.len()])
                        };
                        let (old_v, old_max) = (
                            olds(&old.v_directions, old.v),
                            olds(&old.v_directions_max, old.v_max),
                        );
                        let (mut v, mut v_max, mut scalings) = (vec![], vec![], vec![]);
                        for j in 0..x.len() {
                            let (a, b, denominator) = second(old_v[j], old_max[j], x[j]);
                            v.push(a);
                            v_max.push(b);
                            scalings.push(1.0 / denominator);
                        }
                        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
                        Plan {
                            moment,
                            direction: kept * c.update(1.0, 1.0),
                            v: mean(&v),
                            v_max: mean(&v_max),
                            per_direction: Some(PerDirection { v, v_max, scalings }),
                        }
                    }
                }
            }
        }
    }
}

/// The matrix an operand stands for, among the gradient, the old and the kept moment.
fn operand<'a, M>(x: Operand, g: Option<&'a M>, old: Option<&'a M>, kept: Option<&'a M>) -> &'a M {
    match x {
        Operand::Gradient => g.expect("a gradient term has its gradient"),
        Operand::OldMoment => old.expect("a carried moment"),
        Operand::Moment => kept.expect("a kept moment"),
    }
}

/// A tall direction `D`: its form over the gradient and the kept moment, and those two
/// (the gradient only where the form uses it: otherwise its buffer goes back at once).
pub(super) struct TallDirection<M> {
    form: Form,
    gradient: Option<M>,
    /// The moment this step keeps.
    pub(super) moment: Option<M>,
    /// A preconditioner on the right (one second moment per singular direction):
    /// `D = form N`.
    right: Option<DMatrix<f64>>,
}

impl<M> TallDirection<M> {
    /// `X W + alpha D` in a new matrix, the first term in the same pass as the product
    /// (with a preconditioner, both products in one pass).
    pub(super) fn after<E: Real, B: TallOps<E, Mat = M>>(
        &self,
        ops: &B,
        x: &M,
        w: &DMatrix<f64>,
        alpha: f64,
    ) -> Result<M, Error> {
        let term = |t| operand(t, self.gradient.as_ref(), None, self.moment.as_ref());
        if let Some(n) = &self.right {
            let (a, first) = self.form.0[0];
            let c = ops.mul_small_pair((x, w), (term(first), &(n * (alpha * a))))?;
            return self.form.0[1..].iter().try_fold(c, |c, &(a, t)| {
                ops.mul_small_add(term(t), &(n * (alpha * a)), c)
            });
        }
        let (a, first) = self.form.0[0];
        let c = ops.mul_small_plus(x, w, E::of_f64(alpha * a), term(first))?;
        self.form.0[1..]
            .iter()
            .try_fold(c, |c, &(a, t)| ops.axpy(E::of_f64(alpha * a), term(t), c))
    }
}

/// The directions of one step: `D_P`, `D_Q` (tall) and `D_M` (`r x r`).
pub(super) struct Directions<M> {
    pub(super) p: TallDirection<M>,
    pub(super) q: TallDirection<M>,
    pub(super) m: DMatrix<f64>,
}

/// A step's directions and the moments it keeps.
pub(super) type Planned<M> = (Directions<M>, AdapterMoments<M>);

/// The directions of a step from the gradients `P`, `M`, `Q` and the squared norms
/// `[||P||^2, ||Q||^2]`, and the moments it keeps (not yet carried to the new bases;
/// `step` not yet counted). `split`: the core's singular frame and the energies of its
/// directions, where the rule keeps one second moment per direction.
pub(super) fn directions<E: Real, B: TallOps<E>>(
    ops: &B,
    rule: AdapterRule,
    (p, m, q): (B::Mat, DMatrix<f64>, B::Mat),
    [p2, q2]: [f64; 2],
    old: &AdapterMoments<B::Mat>,
    split: Option<&(Frame, Vec<f64>)>,
) -> Result<Planned<B::Mat>, Error> {
    // ||P_T(G)||^2 = ||P||^2 + ||Q||^2 - ||M||^2 over (o + i) r - r^2 dimensions.
    let ((o, r), (i, _)) = (ops.dims(&p), ops.dims(&q));
    let tangent_dim = ((o + i) * r - r * r).max(1) as f64;
    let tangent2 = (p2 + q2 - m.norm_squared()).max(0.0) / tangent_dim;
    let plan = Plan::of(rule, old, tangent2, split);
    // With one second moment per direction: the preconditioner, and the new moments held
    // free of the frame; otherwise any held ones pass through unchanged (a rule changed
    // between steps: they are kept, and turn with the bases).
    let (preconditioner, v_directions, v_directions_max) =
        match split.zip(plan.per_direction.as_ref()) {
            Some(((frame, _), d)) => (
                Some(frame.preconditioner(&d.scalings)),
                frame.hold(&d.v),
                frame.hold(&d.v_max),
            ),
            None => (None, old.v_directions.clone(), old.v_directions_max.clone()),
        };
    let tall = |g: B::Mat,
                old: Option<&B::Mat>,
                right: Option<DMatrix<f64>>|
     -> Result<TallDirection<B::Mat>, Error> {
        let moment = match &plan.moment {
            Some(f) => Some(f.tall(ops, |x| operand(x, Some(&g), old, None))?),
            None => None,
        };
        Ok(TallDirection {
            form: plan.direction.clone(),
            gradient: plan.direction.uses(Operand::Gradient).then_some(g),
            moment,
            right,
        })
    };
    let mm =
        (plan.moment.as_ref()).map(|f| f.small(|x| operand(x, Some(&m), old.m.as_ref(), None)));
    let mut dm = plan
        .direction
        .small(|x| operand(x, Some(&m), None, mm.as_ref()));
    if let Some(pre) = &preconditioner {
        dm = &pre.core_left * dm * &pre.core_right;
    }
    let next = AdapterMoments {
        m: mm,
        v: plan.v,
        v_max: plan.v_max,
        v_directions,
        v_directions_max,
        ..AdapterMoments::default()
    };
    let (right_p, right_q) = match preconditioner {
        Some(pre) => (Some(pre.p), Some(pre.q)),
        None => (None, None),
    };
    let dirs = Directions {
        p: tall(p, old.p.as_ref(), right_p)?,
        q: tall(q, old.q.as_ref(), right_q)?,
        m: dm,
    };
    Ok((dirs, next))
}
