//! The optimizer shared by [`SdsAdam`](super::SdsAdam) and [`SdsSgd`](super::SdsSgd):
//! parameter groups, the Riemannian composition for Stiefel tensors, transactional steps.

mod composed_step;
mod host_step;
mod refusal;

use super::adapter_step::{find_adapters, AdapterPaths, AdapterStep};
use super::basis_update::AdapterStepSizes;
use super::config::SdsConfig;
use super::groups::{Classifier, Group};
use super::riemannian::Geometry;
use super::rules::TensorRuleState;
use super::state::OptimizerState;
use super::validate::{check_orthonormal, non_finite_values};
use super::walk::{self, Value};
use crate::kernels::{ComposedBackend, HostBackend, Real, StiefelDevice};
use crate::Error;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::optim::{Optimizer, OptimizerUpdateError, UnusedTensors};
use dfdx::tensor::Gradients;
use refusal::Refusal;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// A Riemannian optimizer for dfdx modules. Each adapter (a `basis_out`, `core`,
/// `basis_in` triple under one path, as [`SdsLinear`](crate::nn::SdsLinear) names them)
/// takes the basis-update step on the triple jointly ([`super::basis_update`](mod@super::basis_update)); other
/// Stiefel tensors (`basis_out`/`basis_in` of a diagonal-core layer, tensors a user
/// predicate marks) move on their manifold by the per-tensor Riemannian step; everything
/// else trainable follows the Euclidean rule with its group's settings; frozen tensors are
/// untouched. Use it through the aliases [`SdsAdam`](super::SdsAdam) and
/// [`SdsSgd`](super::SdsSgd).
///
/// A step is transactional: parameters and gradients are read first, every new value is
/// computed, and only then written back in place (tensor ids unchanged). Any error (a
/// missing or non-finite gradient, a failed retraction) leaves parameters and state
/// exactly as they were.
///
/// Two paths compute a step, with the same formulas. The host path copies each tensor and
/// its gradient to the host and works there with fused loops (the default on `Cpu`). The
/// composed path works on the model's device with dfdx ops, moments kept on the device,
/// and batches the retractions' host round trips over all Stiefel tensors (the default on
/// `Cuda`; [`Sds::use_composed_ops`] selects it anywhere).
#[derive(Debug)]
pub struct Sds<M, E: Real, D: StiefelDevice<E>, C> {
    /// Hyperparameters; change learning rates here for a schedule.
    pub cfg: C,
    state: OptimizerState<E>,
    device_state: BTreeMap<String, TensorRuleState<E, D>>,
    composed: Option<D::Composed>,
    layout: BTreeMap<String, (Vec<usize>, Group)>,
    adapters: Vec<AdapterPaths>,
    ops: E::Host,
    last_error: Option<Error>,
    marker: PhantomData<fn() -> M>,
}

impl<M: TensorCollection<E, D>, E: Real, D: StiefelDevice<E>, C: SdsConfig> Sds<M, E, D, C> {
    /// An optimizer for `model`, classifying tensors by the naming contract. Errors if a
    /// tensor named as a basis is not a tall matrix ([`Error::NotAMatrix`]) or does not
    /// have orthonormal columns ([`Error::NotOrthonormal`]; see
    /// [`orthonormalize`](crate::stiefel::orthonormalize)), or if `cfg` holds a setting out
    /// of range ([`SdsConfig::validate`]).
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
        cfg.validate()?;
        let mut layout = BTreeMap::new();
        for t in walk::trainable(model) {
            let group = classifier.checked_group(&t.path, &t.dims)?;
            layout.insert(t.path, (t.dims, group));
        }
        check_orthonormal(model, &layout)?;
        Ok(Self {
            cfg,
            state: OptimizerState::default(),
            device_state: BTreeMap::new(),
            composed: walk::device(model).and_then(|dev| dev.composed_steps()),
            adapters: find_adapters(&layout),
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

    /// The state (moments, step counts) to save; on the composed path it is copied from
    /// the device.
    pub fn state(&self) -> OptimizerState<E> {
        if self.composed.is_none() {
            return self.state.clone().with_shapes(&self.layout);
        }
        let tensors = self
            .device_state
            .iter()
            .map(|(path, s)| (path.clone(), s.to_host(self.stiefel_shape(path))))
            .collect();
        OptimizerState {
            steps: self.state.steps,
            tensors,
            shapes: BTreeMap::new(),
        }
        .with_shapes(&self.layout)
    }

    /// Restores a saved state; errors if it does not fit this optimizer's model.
    pub fn set_state(&mut self, state: OptimizerState<E>) -> Result<(), Error> {
        state.check(&self.layout)?;
        match &self.composed {
            None => self.state = state,
            Some(ops) => {
                let mut device_state = BTreeMap::new();
                for (path, s) in &state.tensors {
                    let s = TensorRuleState::from_host(s, self.stiefel_shape(path), ops.device())?;
                    device_state.insert(path.clone(), s);
                }
                self.device_state = device_state;
                self.state = OptimizerState {
                    steps: state.steps,
                    ..OptimizerState::default()
                };
            }
        }
        Ok(())
    }

    /// Runs the following steps on the composed path with `ops` (dfdx ops on the model's
    /// device; the moments move there). On `Cuda` this path is the default; on `Cpu` the
    /// host path is faster, and this is how the composed path is tested without a GPU.
    /// `ops` is the device's composed backend ([`StiefelDevice::Composed`]: a
    /// [`ComposedOps`](crate::kernels::ComposedOps) on `Cpu` and `Cuda`), which counts its
    /// host transfers.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use sds_lora::kernels::ComposedOps;
    /// use sds_lora::nn::builders;
    /// use sds_lora::optim::{SdsAdam, SdsAdamConfig};
    ///
    /// let dev = Cpu::default();
    /// let mut model = dev.build_module::<builders::SdsLinear<16, 8, 2>, f32>();
    /// let mut opt = SdsAdam::new(&model, SdsAdamConfig::default()).unwrap();
    /// assert!(opt.composed_ops().is_none()); // on Cpu, the host path by default
    /// let ops = ComposedOps::new(&dev);
    /// opt.use_composed_ops(ops.clone()).unwrap();
    /// let x: Tensor<Rank2<4, 16>, f32, _> = dev.sample_normal();
    /// let grads = model.forward(x.trace(model.alloc_grads())).square().mean().backward();
    /// opt.update(&mut model, &grads).unwrap();
    /// // The basis-update step's r x r work crossed to the host and back.
    /// let transfers = ops.transfers();
    /// assert!(transfers.to_host > 0 && transfers.to_device > 0);
    /// ```
    pub fn use_composed_ops(&mut self, ops: D::Composed) -> Result<(), Error> {
        let state = self.state();
        self.composed = Some(ops);
        self.set_state(state)
    }

    /// The composed backend, when steps run on the composed path.
    pub fn composed_ops(&self) -> Option<&D::Composed> {
        self.composed.as_ref()
    }

    /// `Some((n, r))` for a Stiefel tensor.
    fn stiefel_shape(&self, path: &str) -> Option<(usize, usize)> {
        match self.layout.get(path) {
            Some((dims, Group::Stiefel)) => Some((dims[0], dims[1])),
            _ => None,
        }
    }

    /// The adapters that take the basis-update step (none under
    /// [`AdapterStep::PerTensor`]).
    fn active_adapters(&self) -> &[AdapterPaths] {
        match self.cfg.stiefel().adapter_step {
            AdapterStep::BasisUpdate => &self.adapters,
            AdapterStep::PerTensor => &[],
        }
    }

    /// The step sizes of the basis-update step: the bases' and the core group's.
    fn adapter_sizes(&self) -> AdapterStepSizes {
        let groups = self.cfg.groups();
        AdapterStepSizes {
            bases: groups.bases_lr,
            core: groups.core.lr,
            core_weight_decay: groups.core.weight_decay,
        }
    }

    /// The group of a gathered tensor.
    fn group(&self, path: &str) -> Result<Group, Refusal> {
        self.layout
            .get(path)
            .map(|(_, g)| *g)
            .ok_or_else(|| Refusal {
                error: Error::StateMismatch(format!(
                    "{path} was not trainable when the optimizer was built"
                )),
                tensors: vec![path.to_string()],
            })
    }

    /// Refuses a step whose new values hold NaN or an infinity (an overflow).
    fn refuse_non_finite(
        &self,
        values: &BTreeMap<String, Value<E, D>>,
        ops: Option<&D::Composed>,
    ) -> Result<(), Refusal> {
        let bad = non_finite_values(values, ops).map_err(|error| Refusal {
            error,
            tensors: values.keys().cloned().collect(),
        })?;
        match bad.is_empty() {
            true => Ok(()),
            false => Err(Refusal {
                error: Error::NonFinite {
                    what: format!("the new value of {} (the step overflows)", bad.join(", ")),
                },
                tensors: bad,
            }),
        }
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
        self.cfg.validate().map_err(|error| Refusal {
            error,
            tensors: self.layout.keys().cloned().collect(),
        })?;
        let steps = self.state.steps.saturating_add(1);
        let reorthonormalize = self
            .cfg
            .stiefel()
            .reorthonormalize_every
            .is_some_and(|k| k > 0 && steps.is_multiple_of(k));
        let geometry = Geometry {
            retraction: self.cfg.stiefel().retraction,
            reorthonormalize,
        };
        let values = match self.composed.clone() {
            Some(ops) => {
                let entries = self.grouped(walk::gather(module, grads))?;
                let (values, states) = self.composed_step(&ops, entries, geometry)?;
                self.refuse_non_finite(&values, Some(&ops))?;
                walk::commit(module, &values).map_err(|e| Refusal::device(e, &values))?;
                self.device_state.extend(states);
                values
            }
            None => {
                // The step's passes go over the same pieces of rows: worth two threads.
                // The stored states are lent to the step (which reads moments in place)
                // and come back whatever it returns, a panic included.
                let mut stored = std::mem::take(&mut self.state.tensors);
                let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.ops.splitting(|| {
                        let entries = self.grouped(walk::gather_to_host(module, grads))?;
                        self.host_step(entries, &mut stored, geometry)
                    })
                }));
                self.state.tensors = stored;
                let (values, states) =
                    stepped.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                self.refuse_non_finite(&values, None)?;
                walk::commit(module, &values).map_err(|e| Refusal::device(e, &values))?;
                for (path, state) in states {
                    if let Some(old) = self.state.tensors.insert(path, state) {
                        old.recycle();
                    }
                }
                values
            }
        };
        for value in values.into_values() {
            if let Value::Host(v) = value {
                E::recycle(v);
            }
        }
        self.state.steps = steps;
        Ok(())
    }

    /// The gathered tensors with their groups; refused where a gradient is missing.
    fn grouped<T>(&self, gathered: walk::Gathered<T>) -> Result<Vec<(Group, String, T)>, Refusal> {
        if !gathered.unused.is_empty() {
            let tensors = gathered.unused;
            return Err(Refusal {
                error: Error::UnusedParams(tensors.clone()),
                tensors,
            });
        }
        gathered
            .entries
            .into_iter()
            .map(|(path, entry)| Ok((self.group(&path)?, path, entry)))
            .collect()
    }
}

impl<M: TensorCollection<E, D>, E: Real, D: StiefelDevice<E>, C: SdsConfig> Optimizer<M, D, E>
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
