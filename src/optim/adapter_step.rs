//! The optimizer's side of the basis-update step: finding each adapter's triple
//! (`basis_out`, `core`, `basis_in`) by path, and running [`basis_update()`] on it with the
//! state kept per tensor, on the host path and on the composed path.
//!
//! State layout (so that checkpoints keep their per-tensor form): `basis_out`'s
//! [`RuleState::first`] holds `m_P` (padded rows, as every Stiefel moment), `basis_in`'s
//! holds `m_Q`, `core`'s holds `m_M` (row-major) and its `second_scalar` and
//! `second_scalar_max` the adapter's second moment `v` and `v_max`.

use super::basis_update::{
    basis_update, AdapterGrad, AdapterMoments, AdapterPoint, AdapterRule, AdapterStepSizes,
};
use super::groups::{Group, BASIS_IN_NAME, BASIS_OUT_NAME, CORE_NAME};
use super::rules::{RuleState, TensorRuleState};
use super::walk::{Entry, TensorEntry};
use crate::kernels::{ComposedBackend, Flat, HostBackend, Real, RowPieces};
use crate::Error;
use dfdx::shapes::HasShape;
use dfdx::tensor_ops::{Device, ReshapeTo};
use nalgebra::DMatrix;
use std::collections::BTreeMap;

/// How adapters (a `basis_out`, `core`, `basis_in` triple under one path) are stepped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AdapterStep {
    /// The basis-update (K/L) step on the triple jointly ([`super::basis_update`](mod@super::basis_update)): the
    /// default.
    #[default]
    BasisUpdate,
    /// Each tensor by itself: the bases by the Riemannian composition (project, rule,
    /// retract, transport), the core by the Euclidean rule. An ablation: its convergence
    /// depends on the target's spectrum (`shared/notes/sds-step.md`).
    PerTensor,
}

/// The dotted paths of one adapter's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdapterPaths {
    /// `U`.
    pub out: String,
    /// `S`.
    pub core: String,
    /// `V`.
    pub inn: String,
}

impl AdapterPaths {
    /// The three paths, in the order `[out, core, in]`.
    pub fn all(&self) -> [&String; 3] {
        [&self.out, &self.core, &self.inn]
    }
}

/// Every adapter of a model's layout: a trainable `P.core` of shape `[r, r]` beside Stiefel
/// tensors `P.basis_out: [o, r]` and `P.basis_in: [i, r]`.
pub(crate) fn find_adapters(layout: &BTreeMap<String, (Vec<usize>, Group)>) -> Vec<AdapterPaths> {
    let sibling = |prefix: Option<&str>, name: &str| match prefix {
        Some(p) => format!("{p}.{name}"),
        None => name.to_string(),
    };
    let basis_of_rank = |path: &str, r: usize| matches!(layout.get(path), Some((dims, Group::Stiefel)) if dims.len() == 2 && dims[1] == r);
    layout
        .iter()
        .filter_map(|(path, (dims, group))| {
            let (prefix, name) = match path.rsplit_once('.') {
                Some((p, n)) => (Some(p), n),
                None => (None, path.as_str()),
            };
            let r = match dims.as_slice() {
                [a, b] if a == b && name == CORE_NAME && *group == Group::Core => *a,
                _ => return None,
            };
            let paths = AdapterPaths {
                out: sibling(prefix, BASIS_OUT_NAME),
                core: path.clone(),
                inn: sibling(prefix, BASIS_IN_NAME),
            };
            (basis_of_rank(&paths.out, r) && basis_of_rank(&paths.inn, r)).then_some(paths)
        })
        .collect()
}

/// Names the adapter's tensors in a [`Error::NonFinite`] from [`basis_update()`].
fn named(error: Error, paths: &AdapterPaths) -> Error {
    match error {
        Error::NonFinite { what } => Error::NonFinite {
            what: format!(
                "{what} (adapter {}, {}, {})",
                paths.out, paths.core, paths.inn
            ),
        },
        e => e,
    }
}

/// New values (compact, row-major) and rule states of `[out, core, in]`.
type TripleStepped<E> = ([Vec<E>; 3], [RuleState<E>; 3]);

/// A failed adapter step: the error and the adapter's paths.
pub(crate) type Refused = (Error, Vec<String>);

/// New values (compact, row-major) and rule states, by path.
pub(crate) type HostStepped<E> = Vec<(String, Vec<E>, RuleState<E>)>;

/// New values by path, and which entries they were.
pub(crate) type DeviceStepped<E, D> = (Vec<(String, Flat<E, D>)>, Vec<bool>);

/// Takes every adapter whose three tensors are all in `entries` out of it and steps it on
/// the host: the new values (compact, row-major) and rule states, by path. `stored` (the
/// optimizer's states) comes back as it was: an adapter's states are lent to its step,
/// which reads their moments in place.
pub(crate) fn host_adapter_steps<E: Real, B: HostBackend<E>>(
    ops: &B,
    adapters: &[AdapterPaths],
    entries: &mut BTreeMap<String, (Group, Entry<E>)>,
    stored: &mut BTreeMap<String, RuleState<E>>,
    rule: AdapterRule,
    sizes: AdapterStepSizes,
) -> Result<HostStepped<E>, Refused> {
    let mut out = Vec::new();
    for paths in adapters {
        let all = paths.all();
        if !all.iter().all(|p| entries.contains_key(*p)) {
            continue;
        }
        let triple = all.map(|p| entries.remove(p).expect("present").1);
        let had = all.map(|p| stored.contains_key(p));
        let mut lent = all.map(|p| stored.remove(p).unwrap_or_default());
        let stepped = host_adapter_step(ops, paths, triple, lent.each_mut(), rule, sizes);
        for ((path, state), had) in all.iter().zip(lent).zip(had) {
            if had {
                stored.insert((*path).clone(), state);
            }
        }
        let (values, states) =
            stepped.map_err(|e| (e, all.iter().map(|p| p.to_string()).collect()))?;
        for ((path, value), state) in all.into_iter().zip(values).zip(states) {
            out.push((path.clone(), value, state));
        }
    }
    Ok(out)
}

/// Steps every adapter whose three tensors are all in `entries` on the device: the new
/// values by path, and which entries they were. `states[i]` (copies of the stored states)
/// belongs to `entries[i]` and is updated in place.
pub(crate) fn composed_adapter_steps<E: Real, D: Device<E>>(
    ops: &impl ComposedBackend<E, D>,
    adapters: &[AdapterPaths],
    entries: &[(Group, String, TensorEntry<E, D>)],
    states: &mut [TensorRuleState<E, D>],
    rule: AdapterRule,
    sizes: AdapterStepSizes,
) -> Result<DeviceStepped<E, D>, Refused> {
    let index: BTreeMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(k, (_, p, _))| (p.as_str(), k))
        .collect();
    let mut in_adapter = vec![false; entries.len()];
    let mut out = Vec::new();
    for paths in adapters {
        let all = paths.all();
        let Some(at) = all
            .iter()
            .map(|p| index.get(p.as_str()).copied())
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        let at = [at[0], at[1], at[2]];
        let triple = at.map(|k| &entries[k].2);
        let triple_states = states.get_disjoint_mut(at).expect("three distinct tensors");
        let new = composed_adapter_step(ops, paths, triple, triple_states, rule, sizes)
            .map_err(|e| (e, all.iter().map(|p| p.to_string()).collect()))?;
        out.extend(all.into_iter().cloned().zip(new));
        at.iter().for_each(|&k| in_adapter[k] = true);
    }
    Ok((out, in_adapter))
}

/// One adapter's step on the host: the new values (compact, row-major) and rule states of
/// `[out, core, in]`. `old` comes back as it was: the bases' moments are moved into the
/// step's matrices, read there, and moved back (no copy).
fn host_adapter_step<E: Real, B: HostBackend<E>>(
    ops: &B,
    paths: &AdapterPaths,
    [out, core, inn]: [Entry<E>; 3],
    old: [&mut RuleState<E>; 3],
    rule: AdapterRule,
    sizes: AdapterStepSizes,
) -> Result<TripleStepped<E>, Error> {
    let ((o, r), i) = ((out.dims[0], out.dims[1]), inn.dims[0]);
    let [s_out, s_core, s_in] = old;
    let moment = |n: usize, s: &mut RuleState<E>| {
        (!s.first.is_empty()).then(|| B::Mat::from_padded(n, r, std::mem::take(&mut s.first)))
    };
    let mut moments = AdapterMoments {
        step: s_core.step,
        p: moment(o, s_out),
        m: (!s_core.first.is_empty()).then(|| E::from_row_major(r, r, &s_core.first)),
        q: moment(i, s_in),
        v: s_core.second_scalar,
        v_max: s_core.second_scalar_max,
        v_directions: s_core.second_directions.clone(),
        v_directions_max: s_core.second_directions_max.clone(),
    };
    let x = AdapterPoint {
        u: B::Mat::from_compact(o, r, out.param),
        s: E::from_row_major(r, r, &core.param),
        v: B::Mat::from_compact(i, r, inn.param),
    };
    let g = AdapterGrad {
        p: B::Mat::from_compact(o, r, out.grad),
        m: E::from_row_major(r, r, &core.grad),
        q: B::Mat::from_compact(i, r, inn.grad),
    };
    E::recycle(core.param);
    E::recycle(core.grad);
    let stepped = basis_update(ops, x, g, &moments, rule, sizes);
    for (s, m) in [
        (&mut *s_out, moments.p.take()),
        (&mut *s_in, moments.q.take()),
    ] {
        s.first = m.map(RowPieces::into_padded).unwrap_or_default();
    }
    let (x1, next) = stepped.map_err(|e| named(e, paths))?;
    let state = |old: &RuleState<E>, first: Vec<E>| {
        let mut s = old.successor();
        s.first = first;
        s.keep_unused(old)
    };
    let mut core_state = state(
        s_core,
        next.m.as_ref().map(E::row_major).unwrap_or_default(),
    );
    core_state.second_scalar = next.v;
    core_state.second_scalar_max = next.v_max;
    core_state.second_directions = next.v_directions;
    core_state.second_directions_max = next.v_directions_max;
    let states = [
        state(
            s_out,
            next.p.map(RowPieces::into_padded).unwrap_or_default(),
        ),
        core_state,
        state(s_in, next.q.map(RowPieces::into_padded).unwrap_or_default()),
    ];
    let values = [
        x1.u.into_compact(),
        E::row_major(&x1.s),
        x1.v.into_compact(),
    ];
    Ok((values, states))
}

/// One adapter's step on the device, composed from dfdx ops: the new values of
/// `[out, core, in]` as flat tensors; `states` (copies of the stored ones) are updated in
/// place. The `r x r` tensors and the scalars travel to the host in one transfer per shape
/// and back in one.
fn composed_adapter_step<E: Real, D: Device<E>>(
    ops: &impl ComposedBackend<E, D>,
    paths: &AdapterPaths,
    [out, core, inn]: [&TensorEntry<E, D>; 3],
    [s_out, s_core, s_in]: [&mut TensorRuleState<E, D>; 3],
    rule: AdapterRule,
    sizes: AdapterStepSizes,
) -> Result<[Flat<E, D>; 3], Error> {
    let ((o, r), i) = ((out.dims[0], out.dims[1]), inn.dims[0]);
    let mat = |t: &Flat<E, D>, shape: (usize, usize)| {
        t.clone().try_reshape_like(&shape).map_err(Error::device)
    };
    let flat = |t: crate::kernels::TallTensor<usize, usize, E, D>| {
        let (n, c) = *t.shape();
        t.try_reshape_like(&(n * c,)).map_err(Error::device)
    };
    let scalar = |t: &Option<dfdx::tensor::Tensor<dfdx::shapes::Rank0, E, D>>| {
        t.as_ref()
            .map(|t| t.clone().try_reshape_like(&(1usize, 1usize)))
            .transpose()
            .map_err(Error::device)
    };
    // S, M, m_M, v, v_max to the host.
    let mut small_mats = vec![mat(&core.param, (r, r))?, mat(&core.grad, (r, r))?];
    let first_m = s_core.first.as_ref().map(|m| mat(m, (r, r))).transpose()?;
    let scalars = [
        scalar(&s_core.second_scalar)?,
        scalar(&s_core.second_scalar_max)?,
    ];
    let has = (
        first_m.is_some(),
        scalars[0].is_some(),
        scalars[1].is_some(),
    );
    small_mats.extend(first_m);
    small_mats.extend(scalars.into_iter().flatten());
    let mut host = ops.download(small_mats)?.into_iter();
    let mut next_small = |rows: usize| {
        let data = host.next().expect("one download per matrix");
        E::from_row_major(rows, rows, &data)
    };
    let (s, m) = (next_small(r), next_small(r));
    let m_m = has.0.then(|| next_small(r));
    let v = if has.1 { next_small(1)[(0, 0)] } else { 0.0 };
    let v_max = if has.2 { next_small(1)[(0, 0)] } else { 0.0 };

    let moments = AdapterMoments {
        step: s_core.step,
        p: s_out.first.as_ref().map(|m| mat(m, (o, r))).transpose()?,
        m: m_m,
        q: s_in.first.as_ref().map(|m| mat(m, (i, r))).transpose()?,
        v,
        v_max,
        v_directions: s_core.second_directions.clone(),
        v_directions_max: s_core.second_directions_max.clone(),
    };
    let x = AdapterPoint {
        u: mat(&out.param, (o, r))?,
        s,
        v: mat(&inn.param, (i, r))?,
    };
    let g = AdapterGrad {
        p: mat(&out.grad, (o, r))?,
        m,
        q: mat(&inn.grad, (i, r))?,
    };
    let (x1, next) = basis_update(ops, x, g, &moments, rule, sizes).map_err(|e| named(e, paths))?;

    // S1, m_M, v, v_max back to the device in one transfer.
    let one = |x: f64| DMatrix::from_element(1, 1, x);
    let mut up = vec![x1.s.clone(), one(next.v), one(next.v_max)];
    up.extend(next.m.clone());
    let refs: Vec<&DMatrix<f64>> = up.iter().collect();
    let mut device = ops.upload_small(&refs)?.into_iter();
    let mut take = || device.next().expect("one upload per matrix");
    let s1 = flat(take())?;
    let rank0 = |t: crate::kernels::TallTensor<usize, usize, E, D>| {
        t.try_reshape_like(&()).map_err(Error::device)
    };
    s_core.second_scalar = Some(rank0(take())?);
    s_core.second_scalar_max = Some(rank0(take())?);
    s_core.first = next.m.is_some().then(|| flat(take())).transpose()?;
    s_core.second_directions = next.v_directions;
    s_core.second_directions_max = next.v_directions_max;
    s_out.first = next.p.map(flat).transpose()?;
    s_in.first = next.q.map(flat).transpose()?;
    for s in [s_out, s_core, s_in] {
        s.step = s.step.saturating_add(1);
    }
    Ok([flat(x1.u)?, s1, flat(x1.v)?])
}
