//! Walking a dfdx module's trainable tensors by dotted path: their shapes, their data and
//! gradients (read), and writing new data back in place.

use crate::kernels::{Flat, Real, StiefelDevice};
use dfdx::nn::tensor_collection::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName, ViewTensorRef,
};
use dfdx::optim::UnusedTensors;
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, Tensor, UniqueId};
use dfdx::tensor_ops::{Device, ReshapeTo};
use num_traits::NumCast;
use std::collections::BTreeMap;

/// The associated types of a `TensorVisitor` that views tensors through `$viewer` and
/// keeps their element and device types (it builds no new module).
macro_rules! in_place_visitor {
    ($viewer:ty) => {
        type Viewer = $viewer;
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
    };
}

/// One tensor of a module as [`each`] hands it over.
struct Found<E: Real, D: Device<E>> {
    /// Dotted path.
    path: String,
    /// Dimensions.
    dims: Vec<usize>,
    /// Whether the optimizer updates it.
    trainable: bool,
    /// The data as a flat view (no copy where the tensor is contiguous; same id).
    flat: Flat<E, D>,
}

/// Calls `on_tensor` for every tensor of `module` and `on_scalar` for every scalar (in
/// `f64`), in the module's order: the one read-only walk the others are made of.
fn each<M, E, D>(module: &M, on_tensor: impl FnMut(Found<E, D>), on_scalar: impl FnMut(String, f64))
where
    M: TensorCollection<E, D>,
    E: Real,
    D: Device<E>,
{
    struct Each<T, S>(T, S);
    impl<E, D, T, S> TensorVisitor<E, D> for Each<T, S>
    where
        E: Real,
        D: Device<E>,
        T: FnMut(Found<E, D>),
        S: FnMut(String, f64),
    {
        in_place_visitor!((ViewTensorRef, ViewTensorName));
        fn visit<Sh: Shape>(
            &mut self,
            opts: TensorOptions<Sh, E, D>,
            (t, path): (&Tensor<Sh, E, D>, String),
        ) -> Result<Option<Tensor<Sh, E, D>>, D::Err> {
            (self.0)(Found {
                path,
                dims: t.shape().concrete().into_iter().collect(),
                trainable: opts.do_gradient_update,
                flat: t.clone().try_reshape_like(&(t.shape().num_elements(),))?,
            });
            Ok(None)
        }
        fn visit_scalar<N: NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            (n, path): (&N, String),
        ) -> Result<Option<N>, D::Err> {
            if let Some(v) = n.to_f64() {
                (self.1)(path, v);
            }
            Ok(None)
        }
    }
    // A reshape to a flat view cannot fail for the tensors dfdx modules hold.
    let _ = M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Each(on_tensor, on_scalar),
    });
}

/// A tensor or scalar of a module, copied to the host in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HostValue {
    /// A tensor: its dimensions and row-major values.
    Tensor(Vec<usize>, Vec<f64>),
    /// A scalar (an `alpha`, a scaling's code).
    Scalar(f64),
}

/// Copies to the host, in `f64`, every tensor and scalar of `module` whose dotted path
/// `wanted` accepts (trainable or not).
pub(crate) fn read_f64<M, E, D>(
    module: &M,
    wanted: impl Fn(&str) -> bool,
) -> BTreeMap<String, HostValue>
where
    M: TensorCollection<E, D>,
    E: Real,
    D: Device<E>,
{
    let found = std::cell::RefCell::new(BTreeMap::new());
    each(
        module,
        |t: Found<E, D>| {
            if wanted(&t.path) {
                let values = t.flat.as_vec().into_iter().map(Real::to_f64).collect();
                let value = HostValue::Tensor(t.dims, values);
                found.borrow_mut().insert(t.path, value);
            }
        },
        |path, v| {
            if wanted(&path) {
                found.borrow_mut().insert(path, HostValue::Scalar(v));
            }
        },
    );
    found.into_inner()
}

/// Writes tensors (row-major `f64` values) and scalars into `module` by dotted path, in
/// place. The caller has checked every tensor's length; a scalar its type cannot hold is
/// skipped.
pub(crate) fn write_f64<M, E, D>(
    module: &mut M,
    tensors: &BTreeMap<String, Vec<f64>>,
    scalars: &BTreeMap<String, f64>,
) -> Result<(), D::Err>
where
    M: TensorCollection<E, D>,
    E: Real,
    D: Device<E>,
{
    let values = tensors
        .iter()
        .map(|(p, v)| {
            (
                p.clone(),
                Value::Host(v.iter().map(|&x| E::of_f64(x)).collect()),
            )
        })
        .collect();
    write(module, &values, scalars)
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
    let mut out = Vec::new();
    let on_tensor = |t: Found<E, D>| {
        if t.trainable {
            // dfdx exposes a tensor's id only through UnusedTensors::add (a flat view
            // keeps it).
            let mut u = UnusedTensors::default();
            u.add(&t.flat);
            out.push(Trainable {
                path: t.path,
                dims: t.dims,
                id: u.ids[0],
            });
        }
    };
    each(module, on_tensor, |_, _| {});
    out
}

/// One trainable tensor with its gradient, as flat views on the device (no copy).
#[derive(Debug)]
pub struct TensorEntry<E: Real, D: Device<E>> {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Parameter data.
    pub param: Flat<E, D>,
    /// Gradient data.
    pub grad: Flat<E, D>,
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
pub struct Gathered<T> {
    /// Tensors with a gradient, by path.
    pub entries: BTreeMap<String, T>,
    /// Paths of trainable tensors without a gradient.
    pub unused: Vec<String>,
}

/// Every trainable tensor as a flat view (contiguous tensors: no copy), with its path and
/// dimensions.
fn views<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    module: &M,
) -> Vec<(String, Vec<usize>, Flat<E, D>)> {
    let mut out = Vec::new();
    let on_tensor = |t: Found<E, D>| {
        if t.trainable {
            out.push((t.path, t.dims, t.flat));
        }
    };
    each(module, on_tensor, |_, _| {});
    out
}

/// Every trainable tensor and its gradient as flat views (contiguous tensors: no copy;
/// the gradient is the clone `Gradients::get` makes). A missing gradient is recorded, not
/// fatal ([`StiefelDevice::gradient`]).
pub fn gather<M: TensorCollection<E, D>, E: Real, D: StiefelDevice<E>>(
    module: &M,
    grads: &Gradients<E, D>,
) -> Gathered<TensorEntry<E, D>> {
    let mut out = Gathered {
        entries: BTreeMap::new(),
        unused: Vec::new(),
    };
    for (path, dims, param) in views(module) {
        match D::gradient(grads, &param) {
            Some(grad) => {
                out.entries.insert(path, TensorEntry { dims, param, grad });
            }
            None => out.unused.push(path),
        }
    }
    out
}

/// Every trainable tensor and its gradient copied to the host, in pooled buffers (a
/// missing gradient is recorded, not fatal). The copies run as separate jobs
/// ([`StiefelDevice::read_to_host`]: on `Cpu`, on two threads).
pub fn gather_to_host<M: TensorCollection<E, D>, E: Real, D: StiefelDevice<E>>(
    module: &M,
    grads: &Gradients<E, D>,
) -> Gathered<Entry<E>> {
    let views = views(module);
    // Buffers from this thread's pool, filled on either thread.
    let mut bufs: Vec<(Vec<E>, Vec<E>, bool)> = views
        .iter()
        .map(|(_, _, t)| {
            let len = t.shape().0;
            (E::pooled(len), E::pooled(len), false)
        })
        .collect();
    let reads = views
        .iter()
        .zip(bufs.iter_mut())
        .map(|((_, _, t), (param, grad, found))| (t, &mut param[..], &mut grad[..], found))
        .collect();
    D::read_to_host(reads, grads);
    let mut out = Gathered {
        entries: BTreeMap::new(),
        unused: Vec::new(),
    };
    // The views go here: a view still alive at the commit would make its in-place write
    // copy the tensor first.
    for ((path, dims, _), (param, grad, found)) in views.into_iter().zip(bufs) {
        if found {
            out.entries.insert(path, Entry { dims, param, grad });
        } else {
            E::recycle(param);
            E::recycle(grad);
            out.unused.push(path);
        }
    }
    out
}

/// Paths whose gradient holds NaN or an infinity.
pub fn non_finite<'a, E: Real + 'a>(
    entries: impl Iterator<Item = (&'a String, &'a Entry<E>)>,
) -> Vec<String> {
    entries
        .filter(|(_, e)| !E::all_finite(&e.grad))
        .map(|(p, _)| p.clone())
        .collect()
}

/// The device of `module`'s first tensor (`None` for a module without tensors).
pub fn device<M: TensorCollection<E, D>, E: Real, D: Device<E>>(module: &M) -> Option<D> {
    let mut first = None;
    each(
        module,
        |t: Found<E, D>| {
            first.get_or_insert_with(|| t.flat.device().clone());
        },
        |_, _| {},
    );
    first
}

/// A tensor's new data: on the host, or on the device.
#[derive(Debug)]
pub enum Value<E: Real, D: Device<E>> {
    /// Row-major host data.
    Host(Vec<E>),
    /// A flat device tensor.
    Device(Flat<E, D>),
}

/// Writes `values[path]` into each tensor in place (ids unchanged). Fails only on a
/// device error.
pub fn commit<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    module: &mut M,
    values: &BTreeMap<String, Value<E, D>>,
) -> Result<(), D::Err> {
    write(module, values, &BTreeMap::new())
}

/// Writes `values[path]` into each tensor in place (ids unchanged) and `scalars[path]`
/// into each scalar (one its type cannot hold is skipped): the one mutating walk.
fn write<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    module: &mut M,
    values: &BTreeMap<String, Value<E, D>>,
    scalars: &BTreeMap<String, f64>,
) -> Result<(), D::Err> {
    struct Write<'a, E: Real, D: Device<E>> {
        values: &'a BTreeMap<String, Value<E, D>>,
        scalars: &'a BTreeMap<String, f64>,
    }
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Write<'_, E, D> {
        in_place_visitor!((ViewTensorMut, ViewTensorName));
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, E, D>,
            (t, path): (&mut Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            match self.values.get(&path) {
                Some(Value::Host(v)) => t.copy_from(v),
                Some(Value::Device(v)) => {
                    // t <- 0 + 1 * v on the device, in t's storage.
                    let v = v.clone().try_reshape_like(t.shape())?;
                    t.try_fill_with_zeros()?;
                    t.try_axpy(1.0, &v, 1.0)?;
                }
                None => {}
            }
            Ok(None)
        }
        fn visit_scalar<N: NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            (n, path): (&mut N, String),
        ) -> Result<Option<N>, D::Err> {
            if let Some(v) = self.scalars.get(&path).and_then(|&v| N::from(v)) {
                *n = v;
            }
            Ok(None)
        }
    }
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Write { values, scalars },
    })
    .map(|_| ())
}
