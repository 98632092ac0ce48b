//! The Riemannian composition: one optimizer step on a Stiefel point.

use super::rules::{ElementwiseRule, RuleState, StateRange, TensorRuleState};
use crate::kernels::{
    ComposedBackend, Flat, HostBackend, PieceOfRows, Real, RowPieces, TallOps, TallTensor,
};
use crate::stiefel::retractions::{non_finite_input, Sums};
use crate::stiefel::{project_mat, transport_mat, Retraction};
use crate::Error;
use dfdx::shapes::HasShape;
use dfdx::tensor_ops::{Device, ReshapeTo, TryMul};
use nalgebra::DMatrix;

/// How the step re-enters the manifold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// The retraction.
    pub retraction: Retraction,
    /// Re-orthonormalise the new point by Householder QR after retracting (to remove
    /// drift that the retraction itself does not correct, as with `Cayley` or `Exp`).
    pub reorthonormalize: bool,
}

/// One step on `X` in St(n, r) from the Euclidean gradient `E` (design.md, "One
/// optimizer step"):
///
/// 1. `g = P_X(E) = E - X S_1`, `S_1 = sym(X^T E)` (Riemannian gradient, Euclidean
///    metric);
/// 2. `u = rule(g)`: the Euclidean rule on `g`, learning rate included, which writes the
///    new moments;
/// 3. `xi = -P_X(u) = X S_2 - u`, `S_2 = sym(X^T u)` (an elementwise rule such as Adam
///    leaves the tangent space);
/// 4. `X+ = R_X(xi)`, then optionally `X+ <- qf(X+)`;
/// 5. the first moment is carried to the new point: `m <- P_{X+}(m)`.
///
/// All of it in `E`'s storage (which holds `g`, then `u`, then the sum or the step) and
/// `X`'s (which receives `X+` where the retraction allows), with `r x r` work between the
/// products. The rule runs on the same pieces of rows as the products, on up to two
/// threads ([`RowPieces`]). For the retractions that depend on
/// `Y = X + xi = X (I + S_2) - u` alone ([`Retraction::sum_form`]), `Y` is formed with
/// `Y^T Y`; where the retraction is `Y T` for a small `T` of `Y^T Y`
/// ([`SumRetraction::gram_factor`](crate::stiefel::SumRetraction::gram_factor): `Qr` with
/// well-conditioned `Y`, `Polar`), step 5
/// needs no product with `X+`: `X+^T m = T^T Y^T m`, and
/// `m <- m - X+ sym(T^T Y^T m)`. `Cayley` and `Exp` get `xi = X S_2 - u`.
///
/// Errors (a non-finite gradient, value or sum, a failed factorisation) come before
/// anything is returned;
/// `state` is read only, and the new state is returned with `X+`.
pub fn stiefel_step<E: Real, B: HostBackend<E>, R: ElementwiseRule>(
    ops: &B,
    x: B::Mat,
    egrad: B::Mat,
    rule: R,
    lr: f64,
    state: &RuleState<E>,
    geometry: Geometry,
) -> Result<(B::Mat, RuleState<E>), Error> {
    let (n, r) = x.shape();
    Error::check_shape((n, r), egrad.shape())?;
    // Each piece of rows gives its part of every Gram product ([`RowPieces::sum_grams`]).
    let lens = x.piece_lens();
    let parts = || vec![Vec::new(); lens.len()];

    // Steps 1 and 2, and X^T u: `E`'s storage ends holding `u`.
    let xte = ops.gram_kept(&x, &egrad)?;
    check_finite(ops, &x, &egrad, &xte)?;
    // Steps 1 and 3 are the projection (`stiefel::project_mat`) fused with other work.
    let minus_s1 = -ops.sym_kept(xte)?;
    let mut xtu = parts();
    let rule_then_gram = |(range, part): (StateRange<'_, E>, &mut Vec<E>),
                          mut piece: <B::Mat as RowPieces<E>>::Rows<'_>| {
        rule.apply(lr, state, range, piece.rows_mut());
        *part = piece.gram_of(&x);
    };
    let (u, mut next) = if rule.needs_grad_norm() {
        // The rule's constants need ||g||_F^2: all of g first.
        let mut g = ops.mul_small_add(&x, &minus_s1, egrad)?;
        let mut next = rule.next_state(state, g.padded().len(), E::squared_norm(g.padded()));
        let extras = next.ranges(&lens).into_iter().zip(xtu.iter_mut());
        let jobs: Vec<_> = extras.zip(g.pieces_mut()).collect();
        ops.run_pieces(jobs, |(extra, piece)| rule_then_gram(extra, piece));
        (g, next)
    } else {
        let mut next = rule.next_state(state, egrad.padded().len(), 0.0);
        let extras = next.ranges(&lens).into_iter().zip(xtu.iter_mut()).collect();
        let u = x.mul_small_axpy_then(&minus_s1, E::one(), egrad, extras, rule_then_gram);
        (u, next)
    };
    let s2 = ops.sym_kept(B::Mat::sum_grams(xtu, r, r))?;
    let mut m = (!next.first.is_empty())
        .then(|| B::Mat::from_padded(n, r, std::mem::take(&mut next.first)));

    // Steps 3 and 4 (and 5, where the retraction's factor allows).
    let mut transported = false;
    let mut x_new = match geometry.retraction.sum_form() {
        Some(sum) => {
            // Y = X (I + S_2) - u in u's storage, with Y^T Y and (for the transport by the
            // factor) Y^T m.
            let by_factor = sum.has_gram_factor() && !geometry.reorthonormalize;
            let want_ytm = by_factor && m.is_some();
            let k = &s2 + DMatrix::<f64>::identity(r, r);
            let (mut yty, mut ytm) = (parts(), parts());
            let extras = yty.iter_mut().zip(ytm.iter_mut()).collect();
            let y = x.mul_small_axpy_then(&k, -E::one(), u, extras, |(yy, ym), piece| {
                *yy = piece.self_gram();
                if let (true, Some(m)) = (want_ytm, &m) {
                    *ym = piece.gram(m);
                }
            });
            let sums = Sums::with_grams(vec![y], vec![B::Mat::sum_grams(yty, r, r)])?;
            let factor = match by_factor {
                true => sum.gram_factor(&sums.grams()[0])?,
                false => None,
            };
            match (factor, m.as_mut()) {
                (Some(t), Some(m)) => {
                    // X+ = Y T in X's storage; m <- m - X+ sym(X+^T m), X+^T m = T^T Y^T m.
                    let xtm = t.transpose() * B::Mat::sum_grams(ytm, r, r);
                    let minus_sym = -ops.sym_kept(xtm)?;
                    let m_pieces = m.pieces_mut().into_iter().map(|p| p.into_rows()).collect();
                    let y = sums.into_sums().remove(0);
                    transported = true;
                    y.mul_small_axpy_then(&t, E::zero(), x, m_pieces, |m_rows, piece| {
                        piece.mul_small_add_to(&minus_sym, m_rows)
                    })
                }
                (Some(t), None) => {
                    ops.mul_small_axpy(&sums.into_sums().remove(0), &t, E::zero(), x)?
                }
                (None, _) => sum.apply_batch(ops, sums)?.remove(0),
            }
        }
        None => {
            let xi = ops.mul_small_axpy(&x, &s2, -E::one(), u)?;
            geometry.retraction.apply(ops, &x, &xi)?
        }
    };
    if geometry.reorthonormalize {
        x_new = ops.qr_q(x_new)?;
    }
    if let Some(m) = m {
        next.first = match transported {
            true => m,
            false => transport_mat(ops, &x_new, m)?,
        }
        .into_padded();
    }
    Ok((x_new, next))
}

/// Fails with [`Error::NonFinite`] where `X^T E` is not finite, naming what is not: a NaN
/// or an infinity in `E` (or `X`) makes a whole column (or row) of `X^T E` non-finite, so
/// the inputs themselves are scanned only then.
fn check_finite<E: Real, B: TallOps<E>>(
    ops: &B,
    x: &B::Mat,
    egrad: &B::Mat,
    xte: &DMatrix<f64>,
) -> Result<(), Error> {
    if xte.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    let named = [(egrad, "the gradient"), (x, "the value")];
    let overflow =
        "X^T E, the product of value and gradient (finite entries too large: it overflows)";
    Err(non_finite_input(ops, &named, overflow)?)
}

/// One Stiefel tensor of a composed (device) step: the point, its Euclidean gradient and
/// its rule state, as `[n, r]` device tensors.
pub struct DeviceStiefel<'a, E: Real, D: Device<E>> {
    /// The point `X`.
    pub x: TallTensor<usize, usize, E, D>,
    /// The Euclidean gradient `E`.
    pub egrad: TallTensor<usize, usize, E, D>,
    /// The rule state (moments compact, `n r` values).
    pub state: &'a mut TensorRuleState<E, D>,
}

/// [`stiefel_step`] for a batch of Stiefel tensors on a device, composed from dfdx ops:
/// steps 1-3 per tensor on the device (projections keep their `r x r` products there),
/// step 4 for the whole batch ([`Retraction::apply_batch`]: its host round trips are made
/// once for all the tensors), then step 5 per tensor on the device. `rule` returns `u`.
pub fn stiefel_steps_composed<E: Real, D: Device<E>>(
    ops: &impl ComposedBackend<E, D>,
    batch: Vec<DeviceStiefel<'_, E, D>>,
    rule: impl Fn(&mut TensorRuleState<E, D>, Flat<E, D>) -> Result<Flat<E, D>, Error>,
    geometry: Geometry,
) -> Result<Vec<TallTensor<usize, usize, E, D>>, Error> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let reshape =
        |t: Flat<E, D>, shape: (usize, usize)| t.try_reshape_like(&shape).map_err(Error::device);
    let flat = |t: TallTensor<usize, usize, E, D>| {
        let (n, r) = *t.shape();
        t.try_reshape_like(&(n * r,)).map_err(Error::device)
    };
    let mut xis = Vec::with_capacity(batch.len());
    let mut states = Vec::with_capacity(batch.len());
    let mut xs = Vec::with_capacity(batch.len());
    for item in batch {
        let shape = *item.x.shape();
        let g = project_mat(ops, &item.x, item.egrad)?;
        let u = reshape(rule(item.state, flat(g)?)?, shape)?;
        let xi = project_mat(ops, &item.x, u)?
            .try_mul(-E::one())
            .map_err(Error::device)?;
        xis.push(xi);
        states.push(item.state);
        xs.push(item.x);
    }
    let pairs: Vec<_> = xs.iter().zip(&xis).collect();
    let mut x_new = geometry.retraction.apply_batch(ops, &pairs)?;
    if geometry.reorthonormalize {
        x_new = ops.qr_qs(x_new)?;
    }
    for (state, x) in states.into_iter().zip(&x_new) {
        if let Some(m) = state.first.take() {
            state.first = Some(flat(project_mat(ops, x, reshape(m, *x.shape())?)?)?);
        }
    }
    Ok(x_new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::rules::AdamUpdate;
    use crate::optim::{AdamRule, SecondMoment};
    use crate::stiefel::random_point;
    use dfdx::prelude::*;

    /// Two steps of `stiefel_step` on a `[4096, 16]` basis, with the pieces shared between
    /// threads or all run on this one.
    fn two_steps<E: Real>(
        split: bool,
        rule: impl ElementwiseRule,
        retraction: Retraction,
    ) -> (Vec<E>, RuleState<E>)
    where
        Cpu: Device<E>,
    {
        let dev = Cpu::default();
        let ops = E::host_ops();
        let x: Tensor<(usize, usize), E, Cpu> = random_point(&dev, (4096, 16), 9).unwrap();
        let g: Vec<E> = (0..4096 * 16)
            .map(|i| E::of_f64(((i * 7919) % 1000) as f64 / 1000.0 - 0.5))
            .collect();
        let geometry = Geometry {
            retraction,
            reorthonormalize: false,
        };
        let mut x = RowPieces::from_compact(4096, 16, x.as_vec());
        let mut state = RuleState::default();
        for _ in 0..2 {
            let grad = RowPieces::from_compact(4096, 16, g.clone());
            let step = || stiefel_step(&ops, x, grad, rule, 1e-2, &state, geometry).unwrap();
            (x, state) = if split { ops.splitting(step) } else { step() };
        }
        (x.into_compact(), state)
    }

    #[test]
    fn the_same_bits_whichever_thread_runs_a_piece() {
        let adam = AdamUpdate {
            rule: AdamRule::default(),
            second_moment: SecondMoment::Elementwise,
        };
        for retraction in [Retraction::Qr, Retraction::Polar, Retraction::Cayley] {
            assert_eq!(
                two_steps::<f32>(true, adam, retraction),
                two_steps::<f32>(false, adam, retraction),
                "{retraction:?}"
            );
            assert_eq!(
                two_steps::<f64>(true, adam, retraction),
                two_steps::<f64>(false, adam, retraction),
                "{retraction:?}"
            );
        }
    }
}
