//! What an optimizer checks before it trusts its inputs: its settings (at construction
//! and at every step, since `cfg` is public), the Stiefel tensors it is given (orthonormal
//! when it is built), and every new value (finite before anything is written).

use super::basis_update::{AdapterRule, AdapterSecondMoment};
use super::config::StiefelConfig;
use super::groups::{Group, ParamGroups};
use super::rules::{AdamRule, Momentum, SgdRule, WeightDecay};
use super::walk::{read_f64, HostValue, Value};
use crate::kernels::{ComposedBackend, Flat, Real, StiefelDevice};
use crate::stiefel::Retraction;
use crate::Error;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// An [`Error::Invalid`] naming the setting `what`.
fn invalid(what: &str, value: impl std::fmt::Display, rule: &str) -> Error {
    Error::Invalid(format!("{what} is {value}; it must be {rule}"))
}

/// Fails unless `x` is finite and `>= 0`.
fn non_negative(what: &str, x: f64) -> Result<(), Error> {
    match x.is_finite() && x >= 0.0 {
        true => Ok(()),
        false => Err(invalid(what, x, "finite and >= 0")),
    }
}

/// Fails unless `x` is in `[0, 1)`.
fn unit_interval(what: &str, x: f64) -> Result<(), Error> {
    match (0.0..1.0).contains(&x) {
        true => Ok(()),
        false => Err(invalid(what, x, "in [0, 1)")),
    }
}

impl WeightDecay {
    /// Fails unless the decay is finite and `>= 0`.
    pub fn validate(&self, what: &str) -> Result<(), Error> {
        match *self {
            WeightDecay::L2(wd) | WeightDecay::Decoupled(wd) => non_negative(what, wd),
        }
    }
}

impl ParamGroups {
    /// Fails unless every learning rate and weight decay is finite and `>= 0`.
    ///
    /// ```
    /// use sds_lora::optim::ParamGroups;
    ///
    /// assert!(ParamGroups::uniform(1e-3).validate().is_ok());
    /// assert!(ParamGroups::uniform(f64::NAN).validate().is_err());
    /// assert!(ParamGroups::uniform(-1e-3).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        non_negative("groups.bases_lr", self.bases_lr)?;
        for (name, g) in [("core", self.core), ("others", self.others)] {
            non_negative(&format!("groups.{name}.lr"), g.lr)?;
            if let Some(wd) = g.weight_decay {
                wd.validate(&format!("groups.{name}.weight_decay"))?;
            }
        }
        Ok(())
    }
}

impl AdamRule {
    /// Fails unless both betas are in `[0, 1)` and `eps` is finite and `> 0`.
    pub fn validate(&self) -> Result<(), Error> {
        unit_interval("rule.betas[0]", self.betas[0])?;
        unit_interval("rule.betas[1]", self.betas[1])?;
        match self.eps.is_finite() && self.eps > 0.0 {
            true => Ok(()),
            false => Err(invalid("rule.eps", self.eps, "finite and > 0")),
        }
    }
}

impl AdapterSecondMoment {
    /// Fails unless an increasing decay's exponent is in `(0, 1]`.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Self::IncreasingDecay { exponent } if !(exponent > 0.0 && exponent <= 1.0) => Err(
                invalid("adapter_second_moment.exponent", exponent, "in (0, 1]"),
            ),
            _ => Ok(()),
        }
    }
}

impl SgdRule {
    /// Fails unless the momentum is in `[0, 1)` and the dampening in `[0, 1]`.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(Momentum::Classic(mu) | Momentum::Nesterov(mu)) = self.momentum {
            unit_interval("rule.momentum", mu)?;
        }
        match (0.0..=1.0).contains(&self.dampening) {
            true => Ok(()),
            false => Err(invalid("rule.dampening", self.dampening, "in [0, 1]")),
        }
    }
}

impl AdapterRule {
    /// The rule's own checks.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            AdapterRule::Sgd(rule) => rule.validate(),
            AdapterRule::Adam(rule, average, _) => {
                rule.validate()?;
                average.validate()
            }
        }
    }
}

impl StiefelConfig {
    /// Fails on a re-orthonormalisation period of 0 and on Newton-Schulz with no
    /// iteration.
    pub fn validate(&self) -> Result<(), Error> {
        if self.reorthonormalize_every == Some(0) {
            return Err(invalid(
                "stiefel.reorthonormalize_every",
                "Some(0)",
                "None or at least 1",
            ));
        }
        if let Retraction::NewtonSchulz { iters: 0 } = self.retraction {
            return Err(invalid("stiefel.retraction's iters", 0, "at least 1"));
        }
        Ok(())
    }
}

/// The largest `||X^T X - I||_F` accepted for a Stiefel tensor of rank `r` when an
/// optimizer is built: `sqrt(eps r)`, far above what rounding leaves after any number of
/// steps and far below what a tensor set by hand shows.
fn orthonormality_tolerance<E: Real>(r: usize) -> f64 {
    (E::EPSILON.to_f64() * r as f64).sqrt()
}

/// Fails with [`Error::NotOrthonormal`] on the first Stiefel tensor of `layout` whose
/// columns are not orthonormal (within [`orthonormality_tolerance`]).
pub(crate) fn check_orthonormal<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    model: &M,
    layout: &BTreeMap<String, (Vec<usize>, Group)>,
) -> Result<(), Error> {
    let is_stiefel = |path: &str| matches!(layout.get(path), Some((_, Group::Stiefel)));
    for (path, value) in read_f64(model, is_stiefel) {
        let HostValue::Tensor(dims, values) = value else {
            continue;
        };
        let (n, r) = (dims[0], dims[1]);
        let x = nalgebra::DMatrix::from_row_slice(n, r, &values);
        let error = (x.transpose() * &x - nalgebra::DMatrix::identity(r, r)).norm();
        // NaN fails too.
        if error.is_nan() || error > orthonormality_tolerance::<E>(r) {
            return Err(Error::NotOrthonormal { path, error });
        }
    }
    Ok(())
}

/// The paths of `tensors` (flat device tensors) that hold NaN or an infinity, checked on
/// the device by `ops` in one transfer for all of them.
pub(crate) fn non_finite_on_device<'a, E: Real, D: StiefelDevice<E>>(
    ops: &impl ComposedBackend<E, D>,
    tensors: impl Iterator<Item = (&'a String, &'a Flat<E, D>)>,
) -> Result<Vec<String>, Error> {
    let (paths, rows): (Vec<&String>, Vec<_>) = tensors
        .map(|(path, t)| {
            let rows = t.clone().try_reshape_like(&(1, t.shape().0));
            rows.map(|rows| (path, rows)).map_err(Error::device)
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let finite = ops.all_finite_each(&rows.iter().collect::<Vec<_>>())?;
    Ok(paths
        .into_iter()
        .zip(finite)
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| p.clone())
        .collect())
}

/// The paths of the new values that hold NaN or an infinity (a step that overflowed):
/// host values checked on the host, device values by `ops` on the device (the composed
/// path, the only one with device values, passes it).
pub(crate) fn non_finite_values<E: Real, D: StiefelDevice<E>>(
    values: &BTreeMap<String, Value<E, D>>,
    ops: Option<&D::Composed>,
) -> Result<Vec<String>, Error> {
    let mut bad: Vec<String> = values
        .iter()
        .filter(|(_, v)| matches!(v, Value::Host(v) if !E::all_finite(v)))
        .map(|(p, _)| p.clone())
        .collect();
    let on_device = values.iter().filter_map(|(p, v)| match v {
        Value::Device(t) => Some((p, t)),
        Value::Host(_) => None,
    });
    if let Some(ops) = ops {
        bad.extend(non_finite_on_device(ops, on_device)?);
    }
    Ok(bad)
}
