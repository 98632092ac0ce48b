//! Parameter groups: which tensors are Stiefel bases, adapter cores or plain Euclidean,
//! and the learning rate and weight decay of each group.

use super::rules::WeightDecay;
use crate::Error;
use serde::{Deserialize, Serialize};

/// Learning rate and weight decay of a Euclidean group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Learning rate.
    pub lr: f64,
    /// Weight decay, if any.
    pub weight_decay: Option<WeightDecay>,
}

/// The three groups' settings. Bases take no weight decay (it would pull them off the
/// manifold); their step size is `bases_lr`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParamGroups {
    /// Learning rate of the Stiefel bases.
    pub bases_lr: f64,
    /// The adapter cores (`core`, or `scales` for a diagonal core).
    pub core: GroupConfig,
    /// Every other trainable tensor.
    pub others: GroupConfig,
}

impl Default for ParamGroups {
    /// [`ParamGroups::uniform`] at `1e-3`, the learning rate of dfdx's `AdamConfig`.
    fn default() -> Self {
        Self::uniform(1e-3)
    }
}

impl ParamGroups {
    /// All groups with learning rate `lr` and no weight decay.
    pub fn uniform(lr: f64) -> Self {
        let g = GroupConfig {
            lr,
            weight_decay: None,
        };
        Self {
            bases_lr: lr,
            core: g,
            others: g,
        }
    }

    /// The settings of a group: the bases' learning rate without weight decay for
    /// [`Group::Stiefel`].
    pub fn of(&self, group: Group) -> GroupConfig {
        match group {
            Group::Stiefel => GroupConfig {
                lr: self.bases_lr,
                weight_decay: None,
            },
            Group::Core => self.core,
            Group::Euclidean => self.others,
        }
    }
}

/// The group a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// A point of St(n, r), updated by the Riemannian composition.
    Stiefel,
    /// An adapter core (full or diagonal): with the core group's settings; Euclidean,
    /// or part of its adapter's basis-update step.
    Core,
    /// Any other trainable tensor: Euclidean, with the others' settings.
    Euclidean,
}

/// The name (last component of a tensor's dotted path) of an adapter's output basis `U`.
pub const BASIS_OUT_NAME: &str = "basis_out";
/// The name of an adapter's input basis `V`.
pub const BASIS_IN_NAME: &str = "basis_in";
/// The names of the bases: Stiefel points.
pub const BASIS_NAMES: [&str; 2] = [BASIS_OUT_NAME, BASIS_IN_NAME];
/// The name of an adapter's full core `S: [r, r]`.
pub const CORE_NAME: &str = "core";
/// The name of an adapter's diagonal core `s: [r]` (the ablation).
pub const SCALES_NAME: &str = "scales";

/// Classifies tensors by their dotted path: `*.basis_out` and `*.basis_in` (and whatever
/// the user's predicate accepts) are Stiefel points, `*.core` and `*.scales` adapter cores,
/// the rest is Euclidean.
pub struct Classifier {
    extra_stiefel: Option<PathPredicate>,
}

/// A user's test on a tensor's dotted path.
type PathPredicate = Box<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("extra_stiefel", &self.extra_stiefel.is_some())
            .finish()
    }
}

impl Classifier {
    /// The naming contract only.
    pub fn by_name() -> Self {
        Self {
            extra_stiefel: None,
        }
    }

    /// The naming contract plus `pred` for further Stiefel tensors.
    pub fn with_stiefel(pred: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self {
            extra_stiefel: Some(Box::new(pred)),
        }
    }

    /// The group of the tensor at `path`.
    pub fn group(&self, path: &str) -> Group {
        let name = path.rsplit('.').next().unwrap_or(path);
        if BASIS_NAMES.contains(&name) || self.extra_stiefel.as_ref().is_some_and(|p| p(path)) {
            Group::Stiefel
        } else if name == CORE_NAME || name == SCALES_NAME {
            Group::Core
        } else {
            Group::Euclidean
        }
    }

    /// The group of the tensor at `path` with dimensions `dims`; a Stiefel tensor must be
    /// a tall matrix.
    pub fn checked_group(&self, path: &str, dims: &[usize]) -> Result<Group, Error> {
        let group = self.group(path);
        if group == Group::Stiefel {
            match dims {
                [n, r] if r <= n => {}
                [n, r] => return Err(Error::NotTall { rows: *n, cols: *r }),
                _ => {
                    return Err(Error::NotAMatrix {
                        path: path.to_string(),
                        dims: dims.to_vec(),
                    })
                }
            }
        }
        Ok(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_path() {
        let c = Classifier::with_stiefel(|p| p.ends_with("ortho"));
        assert_eq!(c.group("0.basis_out"), Group::Stiefel);
        assert_eq!(c.group("layers.1.basis_in"), Group::Stiefel);
        assert_eq!(c.group("2.scales"), Group::Core);
        assert_eq!(c.group("2.core"), Group::Core);
        assert_eq!(c.group("2.weight"), Group::Euclidean);
        assert_eq!(c.group("my.ortho"), Group::Stiefel);
        assert_eq!(Classifier::by_name().group("my.ortho"), Group::Euclidean);
        assert_eq!(
            c.checked_group("0.basis_in", &[3, 5]),
            Err(Error::NotTall { rows: 3, cols: 5 })
        );
        assert!(matches!(
            c.checked_group("0.basis_in", &[7]),
            Err(Error::NotAMatrix { .. })
        ));
    }
}
