//! Walking a dfdx module's trainable tensors by dotted path: their shapes, their data and
//! gradients (read), and writing new data back in place.

use crate::kernels::{scratch, slices, Real};
use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
    ViewTensorRef,
};
use dfdx::optim::UnusedTensors;
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::{Gradients, Tensor, UniqueId};
use dfdx::tensor_ops::Device;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `v` over `module`'s tensors, each with its dotted path.
pub(crate) fn walk_ref<M, E, D, V>(module: &M, v: &mut V)
where
    M: TensorCollection<E, D>,
    E: Dtype,
    D: Device<E>,
    V: TensorVisitor<E, D, Viewer = (ViewTensorRef, ViewTensorName)>,
{
    // Our visitors make no device calls that can fail: nothing to report.
    let _ = M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: v,
    });
}

/// Runs `v` over `module`'s tensors mutably, each with its dotted path.
pub(crate) fn walk_mut<M, E, D, V>(module: &mut M, v: &mut V)
where
    M: TensorCollection<E, D>,
    E: Dtype,
    D: Device<E>,
    V: TensorVisitor<E, D, Viewer = (ViewTensorMut, ViewTensorName)>,
{
    let _ = M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: v,
    });
}

/// A trainable tensor of a module: its dotted path, dimensions and id.
#[derive(Debug, Clone)]
pub struct Trainable {
    /// Dotted path.
    pub path: String,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// dfdx's id (for its `UnusedParams`, which names tensors by id).
    pub id: UniqueId,
}

/// A module's trainable tensors (frozen ones skipped).
pub fn trainable<M: TensorCollection<E, D>, E: Real, D: Device<E>>(module: &M) -> Vec<Trainable> {
    struct Collect(Vec<Trainable>);
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Collect {
        type Viewer = (ViewTensorRef, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
        fn visit<S: Shape>(
            &mut self,
            opts: TensorOptions<S, E, D>,
            (t, path): (&Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            if opts.do_gradient_update {
                // dfdx exposes a tensor's id only through UnusedTensors::add.
                let mut u = UnusedTensors::default();
                u.add(t);
                let dims = t.shape().concrete().into_iter().collect();
                self.0.push(Trainable {
                    path,
                    dims,
                    id: u.ids[0],
                });
            }
            Ok(None)
        }
    }
    let mut v = Collect(Vec::new());
    walk_ref(module, &mut v);
    v.0
}

/// One trainable tensor read to the host.
#[derive(Debug)]
pub struct Entry<E> {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Parameter data, row-major.
    pub param: Vec<E>,
    /// Gradient data, row-major.
    pub grad: Vec<E>,
}

/// What a read pass found.
#[derive(Debug)]
pub struct Gathered<E> {
    /// Tensors with a gradient, by path.
    pub entries: BTreeMap<String, Entry<E>>,
    /// Paths of trainable tensors without a gradient.
    pub unused: Vec<String>,
}

/// Reads every trainable tensor and its gradient to the host. A missing gradient is
/// recorded, not fatal.
///
/// dfdx 0.13 offers no non-panicking gradient lookup outside the crate
/// (`Gradients::get` unwraps), so a missing gradient is detected by catching that
/// lookup's panic; its message still reaches stderr. Gradients from
/// `model.alloc_grads()` are never missing.
pub fn gather<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    module: &M,
    grads: &Gradients<E, D>,
) -> Gathered<E> {
    struct Gather<'a, E: Real, D: Device<E>> {
        grads: &'a Gradients<E, D>,
        out: Gathered<E>,
    }
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Gather<'_, E, D> {
        type Viewer = (ViewTensorRef, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
        fn visit<S: Shape>(
            &mut self,
            opts: TensorOptions<S, E, D>,
            (t, path): (&Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            if !opts.do_gradient_update {
                return Ok(None);
            }
            let grads = self.grads;
            match catch_unwind(AssertUnwindSafe(|| grads.get(t))) {
                Err(_) => self.out.unused.push(path),
                Ok(g) => {
                    let len = t.shape().num_elements();
                    let mut param = scratch::overwritten(len);
                    let mut grad = scratch::overwritten(len);
                    t.copy_into(&mut param);
                    g.copy_into(&mut grad);
                    let dims = t.shape().concrete().into_iter().collect();
                    self.out.entries.insert(path, Entry { dims, param, grad });
                }
            }
            Ok(None)
        }
    }
    let mut v = Gather {
        grads,
        out: Gathered {
            entries: BTreeMap::new(),
            unused: Vec::new(),
        },
    };
    walk_ref(module, &mut v);
    v.out
}

/// Paths whose gradient holds NaN or an infinity.
pub fn non_finite<E: Real>(g: &Gathered<E>) -> Vec<String> {
    g.entries
        .iter()
        .filter(|(_, e)| !slices::all_finite(&e.grad))
        .map(|(p, _)| p.clone())
        .collect()
}

/// Writes `values[path]` into each tensor in place (ids unchanged).
pub fn commit<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    module: &mut M,
    values: &BTreeMap<String, Vec<E>>,
) {
    struct Commit<'a, E> {
        values: &'a BTreeMap<String, Vec<E>>,
    }
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Commit<'_, E> {
        type Viewer = (ViewTensorMut, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, E, D>,
            (t, path): (&mut Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            if let Some(v) = self.values.get(&path) {
                t.copy_from(v);
            }
            Ok(None)
        }
    }
    walk_mut(module, &mut Commit { values });
}
