//! The host path's step: every new value and rule state computed on host copies, the
//! adapters by the basis-update step, other Stiefel tensors by the per-tensor step, the
//! rest by the Euclidean rule.

use super::refusal::Refusal;
use super::Sds;
use crate::kernels::{Real, RowPieces, StiefelDevice};
use crate::optim::adapter_step::host_adapter_steps;
use crate::optim::config::SdsConfig;
use crate::optim::groups::Group;
use crate::optim::riemannian::{stiefel_step, Geometry};
use crate::optim::rules::{ElementwiseRule, RuleState};
use crate::optim::walk::{self, Entry, Value};
use crate::Error;
use dfdx::nn::tensor_collection::TensorCollection;
use std::collections::BTreeMap;

impl<M: TensorCollection<E, D>, E: Real, D: StiefelDevice<E>, C: SdsConfig> Sds<M, E, D, C> {
    /// New values and rule states of every tensor, computed on the host. `stored` (the
    /// optimizer's states, taken out of `self` for the step) comes back as it was.
    #[allow(clippy::type_complexity)]
    pub(super) fn host_step(
        &self,
        entries: Vec<(Group, String, Entry<E>)>,
        stored: &mut BTreeMap<String, RuleState<E>>,
        geometry: Geometry,
    ) -> Result<
        (
            BTreeMap<String, Value<E, D>>,
            BTreeMap<String, RuleState<E>>,
        ),
        Refusal,
    > {
        // Stiefel gradients are checked within their step, through `X^T E`.
        let scanned = entries.iter().filter(|(g, _, _)| *g != Group::Stiefel);
        let bad = walk::non_finite(scanned.map(|(_, p, e)| (p, e)));
        if !bad.is_empty() {
            return Err(Refusal::non_finite(bad));
        }
        let groups = *self.cfg.groups();
        let mut values = BTreeMap::new();
        let mut states = BTreeMap::new();
        let fresh = RuleState::default();
        let mut entries: BTreeMap<String, (Group, Entry<E>)> =
            entries.into_iter().map(|(g, p, e)| (p, (g, e))).collect();
        let stepped = host_adapter_steps(
            &self.ops,
            self.active_adapters(),
            &mut entries,
            stored,
            self.cfg.adapter_rule(),
            self.adapter_sizes(),
        )
        .map_err(|(error, tensors)| Refusal { error, tensors })?;
        for (path, value, state) in stepped {
            values.insert(path.clone(), Value::Host(value));
            states.insert(path, state);
        }
        for (path, (group, entry)) in entries {
            // The rules return new states: the stored ones change only when the whole
            // step succeeds.
            let old = stored.get(&path).unwrap_or(&fresh);
            let (value, state) = match group {
                Group::Stiefel => self
                    .stiefel(entry, old, geometry)
                    .map_err(|error| Refusal {
                        error: match error {
                            Error::NonFinite { what } => Error::NonFinite {
                                what: format!("{what} of {path}"),
                            },
                            error => error,
                        },
                        tensors: vec![path.clone()],
                    })?,
                Group::Core | Group::Euclidean => {
                    let g = groups.of(group);
                    let (mut param, mut u) = (entry.param, entry.grad);
                    let rule = self.cfg.euclidean_rule();
                    let state = rule.update(g.lr, g.weight_decay, old, &param, &mut u);
                    param.iter_mut().zip(&u).for_each(|(p, &d)| *p -= d);
                    E::recycle(u);
                    (param, state)
                }
            };
            values.insert(path.clone(), Value::Host(value));
            states.insert(path, state);
        }
        Ok((values, states))
    }

    /// The new value and rule state of a Stiefel tensor.
    fn stiefel(
        &self,
        entry: Entry<E>,
        state: &RuleState<E>,
        geometry: Geometry,
    ) -> Result<(Vec<E>, RuleState<E>), Error> {
        let (n, r) = (entry.dims[0], entry.dims[1]);
        let x = RowPieces::from_compact(n, r, entry.param);
        let g = RowPieces::from_compact(n, r, entry.grad);
        let (x_new, state) = stiefel_step(
            &self.ops,
            x,
            g,
            self.cfg.stiefel_rule(),
            self.cfg.groups().bases_lr,
            state,
            geometry,
        )?;
        Ok((x_new.into_compact(), state))
    }
}
