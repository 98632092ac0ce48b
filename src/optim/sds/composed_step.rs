//! The composed path's step: every new value and rule state computed on the model's
//! device with dfdx ops, the retractions' host round trips batched over all Stiefel
//! tensors.

use super::refusal::{Outcome, Refusal};
use super::Sds;
use crate::kernels::{Flat, Real, StiefelDevice};
use crate::optim::adapter_step::composed_adapter_steps;
use crate::optim::config::SdsConfig;
use crate::optim::groups::Group;
use crate::optim::riemannian::{stiefel_steps_composed, DeviceStiefel, Geometry};
use crate::optim::rules::{TensorRule, TensorRuleState};
use crate::optim::validate::non_finite_on_device;
use crate::optim::walk::{TensorEntry, Value};
use crate::Error;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::shapes::HasShape;
use dfdx::tensor_ops::{ReshapeTo, TrySub};
use std::collections::BTreeMap;

impl<M: TensorCollection<E, D>, E: Real, D: StiefelDevice<E>, C: SdsConfig> Sds<M, E, D, C> {
    /// New values and rule states of every tensor, computed on the device with dfdx ops.
    pub(super) fn composed_step(
        &self,
        ops: &D::Composed,
        entries: Vec<(Group, String, TensorEntry<E, D>)>,
        geometry: Geometry,
    ) -> Result<Outcome<E, D, TensorRuleState<E, D>>, Refusal> {
        let all = |error: Error| Refusal {
            error,
            tensors: entries.iter().map(|(_, p, _)| p.clone()).collect(),
        };
        let grads = entries.iter().map(|(_, p, e)| (p, &e.grad));
        let bad = non_finite_on_device(ops, grads).map_err(all)?;
        if !bad.is_empty() {
            return Err(Refusal::non_finite(bad));
        }
        let groups = *self.cfg.groups();
        // Copies of the states (sharing storage until written): the stored ones change
        // only when the whole step succeeds. `states[i]` belongs to `entries[i]`.
        let mut states: Vec<TensorRuleState<E, D>> = entries
            .iter()
            .map(|(_, p, _)| self.device_state.get(p).cloned().unwrap_or_default())
            .collect();
        let mut values = BTreeMap::new();
        let (stepped, in_adapter) = composed_adapter_steps(
            ops,
            self.active_adapters(),
            &entries,
            &mut states,
            self.cfg.adapter_rule(),
            self.adapter_sizes(),
        )
        .map_err(|(error, tensors)| Refusal { error, tensors })?;
        for (path, value) in stepped {
            values.insert(path, Value::Device(value));
        }
        let mut stiefel_paths = Vec::new();
        let mut batch = Vec::new();
        let rest = entries.iter().zip(states.iter_mut()).zip(&in_adapter);
        for (((group, path, entry), state), _) in rest.filter(|(_, &taken)| !taken) {
            let TensorEntry { dims, param, grad } = entry;
            if *group == Group::Stiefel {
                let shape = (dims[0], dims[1]);
                let as_mat = |t: &Flat<E, D>| t.clone().try_reshape_like(&shape);
                let (x, egrad) = (as_mat(param), as_mat(grad));
                let (x, egrad) = x
                    .and_then(|x| egrad.map(|g| (x, g)))
                    .map_err(|e| all(Error::device(e)))?;
                stiefel_paths.push(path.clone());
                batch.push(DeviceStiefel { x, egrad, state });
                continue;
            }
            let g = groups.of(*group);
            let new = self
                .cfg
                .euclidean_rule()
                .update_tensor(g.lr, g.weight_decay, state, Some(param), grad.clone())
                .and_then(|u| param.clone().try_sub(u).map_err(Error::device))
                .map_err(|error| Refusal {
                    error,
                    tensors: vec![path.clone()],
                })?;
            values.insert(path.clone(), Value::Device(new));
        }
        let lr = groups.bases_lr;
        let stiefel_rule = self.cfg.stiefel_rule();
        let rule =
            |s: &mut TensorRuleState<E, D>, g| stiefel_rule.update_tensor(lr, None, s, None, g);
        let x_new =
            stiefel_steps_composed(ops, batch, rule, geometry).map_err(|error| Refusal {
                error,
                tensors: stiefel_paths.clone(),
            })?;
        for (path, x) in stiefel_paths.into_iter().zip(x_new) {
            let (n, r) = *x.shape();
            let flat = x
                .try_reshape_like(&(n * r,))
                .map_err(|e| all(Error::device(e)))?;
            values.insert(path, Value::Device(flat));
        }
        let paths = entries.into_iter().map(|(_, p, _)| p);
        Ok((values, paths.zip(states).collect()))
    }
}
