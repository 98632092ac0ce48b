//! The optimizer shared by [`SdsAdam`](super::SdsAdam) and [`SdsSgd`](super::SdsSgd):
//! parameter groups, the Riemannian composition for Stiefel tensors, transactional steps.

use super::groups::{Classifier, Group, ParamGroups};
use super::riemannian::{stiefel_step, Geometry};
use super::rules::{RuleState, WeightDecay};
use super::state::OptimizerState;
use super::walk;
use crate::kernels::{scratch, HostMat, Real};
use crate::stiefel::Retraction;
use crate::Error;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::optim::{Optimizer, OptimizerUpdateError, UnusedTensors};
use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Device;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// What differs between the optimizers: their rule and its settings.
pub trait SdsConfig: Clone + std::fmt::Debug {
    /// Learning rates and weight decays of the groups.
    fn groups(&self) -> &ParamGroups;
    /// Retraction and re-orthonormalisation period of the Stiefel tensors.
    fn stiefel(&self) -> &StiefelConfig;
    /// The Euclidean update: overwrites `g` with `u` (`p <- p - u`).
    fn euclidean_update<E: Real>(
        &self,
        lr: f64,
        weight_decay: Option<WeightDecay>,
        state: &mut RuleState<E>,
        p: &[E],
        g: &mut [E],
    );
    /// The rule on the Riemannian gradient of a Stiefel tensor: overwrites `g` with `u`.
    fn stiefel_update<E: Real>(&self, lr: f64, state: &mut RuleState<E>, g: &mut [E]);
}

/// Settings of the Stiefel tensors' updates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StiefelConfig {
    /// How steps return to the manifold.
    pub retraction: Retraction,
    /// Re-orthonormalise by Householder QR every this many steps (off by default).
    pub reorthonormalize_every: Option<u64>,
}

impl Default for StiefelConfig {
    fn default() -> Self {
        Self {
            retraction: Retraction::Qr,
            reorthonormalize_every: None,
        }
    }
}

/// A Riemannian optimizer for dfdx modules: Stiefel tensors (by default `*.basis_out` and
/// `*.basis_in`) move on their manifold, everything else trainable by the Euclidean rule
/// with its group's settings; frozen tensors are untouched. Use it through the aliases
/// [`SdsAdam`](super::SdsAdam) and [`SdsSgd`](super::SdsSgd).
///
/// A step is transactional: parameters and gradients are read first, every new value is
/// computed, and only then written back in place (tensor ids unchanged). Any error (a
/// missing or non-finite gradient, a failed retraction) leaves parameters and state
/// exactly as they were.
#[derive(Debug)]
pub struct Sds<M, E: Real, D, C> {
    /// Hyperparameters; change learning rates here for a schedule.
    pub cfg: C,
    state: OptimizerState<E>,
    layout: BTreeMap<String, (Vec<usize>, Group)>,
    ops: E::Host,
    last_error: Option<Error>,
    marker: PhantomData<fn() -> (M, D)>,
}

/// Why a step did not happen, with the tensors concerned (for dfdx's error type).
struct Refusal {
    error: Error,
    tensors: Vec<String>,
}

impl<M: TensorCollection<E, D>, E: Real, D: Device<E>, C: SdsConfig> Sds<M, E, D, C> {
    /// An optimizer for `model`, classifying tensors by the naming contract. Errors if a
    /// tensor named as a basis is not a tall matrix.
    pub fn new(model: &M, cfg: C) -> Result<Self, Error> {
        Self::with_classifier(model, cfg, Classifier::by_name())
    }

    /// Like [`Sds::new`], with tensors whose dotted path satisfies `stiefel` also treated as
    /// Stiefel points (an orthogonal layer of your own, say).
    pub fn new_with_stiefel(
        model: &M,
        cfg: C,
        stiefel: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        Self::with_classifier(model, cfg, Classifier::with_stiefel(stiefel))
    }

    fn with_classifier(model: &M, cfg: C, classifier: Classifier) -> Result<Self, Error> {
        let mut layout = BTreeMap::new();
        for t in walk::trainable(model) {
            let group = classifier.checked_group(&t.path, &t.dims)?;
            layout.insert(t.path, (t.dims, group));
        }
        Ok(Self {
            cfg,
            state: OptimizerState::default(),
            layout,
            ops: E::host_ops(),
            last_error: None,
            marker: PhantomData,
        })
    }

    /// The group each trainable tensor belongs to, by dotted path.
    pub fn groups(&self) -> impl Iterator<Item = (&str, Group)> {
        self.layout.iter().map(|(p, (_, g))| (p.as_str(), *g))
    }

    /// The state (moments, step counts) to save.
    pub fn state(&self) -> &OptimizerState<E> {
        &self.state
    }

    /// Restores a saved state; errors if it does not fit this optimizer's model.
    pub fn set_state(&mut self, state: OptimizerState<E>) -> Result<(), Error> {
        state.check(&self.layout)?;
        self.state = state;
        Ok(())
    }

    /// The error behind the last failed [`Optimizer::update`] (dfdx's error type can only
    /// say which tensors were not updated).
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }

    /// One step with this crate's error type. On error nothing changes.
    pub fn step(&mut self, module: &mut M, grads: &Gradients<E, D>) -> Result<(), Error> {
        self.try_step(module, grads).map_err(|r| r.error)
    }

    fn try_step(&mut self, module: &mut M, grads: &Gradients<E, D>) -> Result<(), Refusal> {
        let gathered = walk::gather(module, grads);
        if !gathered.unused.is_empty() {
            let tensors = gathered.unused.clone();
            return Err(Refusal {
                error: Error::UnusedParams(tensors.clone()),
                tensors,
            });
        }
        let bad = walk::non_finite(&gathered);
        if !bad.is_empty() {
            return Err(Refusal {
                error: Error::NonFinite {
                    what: format!("the gradient of {}", bad.join(", ")),
                },
                tensors: bad,
            });
        }
        let steps = self.state.steps + 1;
        let reorthonormalize = self
            .cfg
            .stiefel()
            .reorthonormalize_every
            .is_some_and(|k| k > 0 && steps.is_multiple_of(k));
        let geometry = Geometry {
            retraction: self.cfg.stiefel().retraction,
            reorthonormalize,
        };
        let groups = *self.cfg.groups();
        let mut values = BTreeMap::new();
        let mut states = BTreeMap::new();
        for (path, entry) in gathered.entries {
            let group = match self.layout.get(&path) {
                Some((_, g)) => *g,
                None => {
                    return Err(Refusal {
                        error: Error::StateMismatch(format!(
                            "{path} was not trainable when the optimizer was built"
                        )),
                        tensors: vec![path],
                    })
                }
            };
            // Work on a copy: the stored state changes only when the whole step succeeds.
            let mut state = self
                .state
                .tensors
                .get(&path)
                .map(pooled_copy)
                .unwrap_or_default();
            let value = match group {
                Group::Stiefel => {
                    self.stiefel(entry, &mut state, geometry)
                        .map_err(|error| Refusal {
                            error,
                            tensors: vec![path.clone()],
                        })?
                }
                Group::Scales | Group::Euclidean => {
                    let g = if group == Group::Scales {
                        groups.scales
                    } else {
                        groups.others
                    };
                    let (mut param, mut u) = (entry.param, entry.grad);
                    self.cfg
                        .euclidean_update(g.lr, g.weight_decay, &mut state, &param, &mut u);
                    param.iter_mut().zip(&u).for_each(|(p, &d)| *p -= d);
                    scratch::recycle(u);
                    param
                }
            };
            values.insert(path.clone(), value);
            states.insert(path, state);
        }
        walk::commit(module, &values);
        values.into_values().for_each(scratch::recycle);
        for (path, state) in states {
            if let Some(old) = self.state.tensors.insert(path, state) {
                recycle_state(old);
            }
        }
        self.state.steps = steps;
        Ok(())
    }

    fn stiefel(
        &self,
        entry: walk::Entry<E>,
        state: &mut RuleState<E>,
        geometry: Geometry,
    ) -> Result<Vec<E>, Error> {
        let (n, r) = (entry.dims[0], entry.dims[1]);
        let x = HostMat::new(n, r, entry.param);
        let g = HostMat::new(n, r, entry.grad);
        let lr = self.cfg.groups().bases_lr;
        let cfg = &self.cfg;
        let x_new = stiefel_step(
            &self.ops,
            &x,
            g,
            state,
            |s, g| cfg.stiefel_update(lr, s, g),
            geometry,
        )?;
        Ok(x_new.into_compact())
    }
}

/// A copy of a tensor's rule state in pooled buffers.
fn pooled_copy<E: Real>(s: &RuleState<E>) -> RuleState<E> {
    RuleState {
        step: s.step,
        first: scratch::copied(&s.first),
        second: scratch::copied(&s.second),
        second_max: scratch::copied(&s.second_max),
        second_scalar: s.second_scalar,
        second_scalar_max: s.second_scalar_max,
    }
}

/// Gives a replaced state's buffers back to the pool.
fn recycle_state<E: Real>(s: RuleState<E>) {
    scratch::recycle(s.first);
    scratch::recycle(s.second);
    scratch::recycle(s.second_max);
}

impl<M: TensorCollection<E, D>, E: Real, D: Device<E>, C: SdsConfig> Optimizer<M, D, E>
    for Sds<M, E, D, C>
{
    /// One step. dfdx's error type has room for device errors and unused parameters only:
    /// a non-finite gradient or a failed retraction is reported as
    /// [`OptimizerUpdateError::UnusedParams`] naming the tensors that could not be
    /// updated, with the full error in [`Sds::last_error`]. Nothing changes on error.
    fn update(
        &mut self,
        module: &mut M,
        gradients: &Gradients<E, D>,
    ) -> Result<(), OptimizerUpdateError<D::Err>> {
        let ids = |paths: &[String], module: &M| UnusedTensors {
            ids: walk::trainable(module)
                .into_iter()
                .filter(|t| paths.contains(&t.path))
                .map(|t| t.id)
                .collect(),
        };
        match self.try_step(module, gradients) {
            Ok(()) => {
                self.last_error = None;
                Ok(())
            }
            Err(Refusal { error, tensors }) => {
                self.last_error = Some(error);
                Err(OptimizerUpdateError::UnusedParams(ids(&tensors, module)))
            }
        }
    }
}
