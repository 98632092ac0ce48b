//! Walking a dfdx module's trainable tensors by dotted path: their shapes, their data and
//! gradients (read), and writing new data back in place.

use crate::kernels::{gradient_of, scratch, slices, Flat, Read, Real, StiefelDevice};
use dfdx::nn::tensor_collection::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName, ViewTensorRef,
};
use dfdx::optim::UnusedTensors;
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::{Gradients, Tensor, UniqueId};
use dfdx::tensor_ops::{Device, ReshapeTo};
use num_traits::NumCast;
use std::collections::BTreeMap;

/// Runs `v` over `module`'s tensors, each with its dotted path.
fn walk_ref<M, E, D, V>(module: &M, v: &mut V)
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
fn walk_mut<M, E, D, V>(module: &mut M, v: &mut V)
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
    wanted: impl FnMut(&str) -> bool,
) -> BTreeMap<String, HostValue>
where
    M: TensorCollection<E, D>,
    E: Real,
    D: Device<E>,
{
    struct Read<F>(F, BTreeMap<String, HostValue>);
    impl<E: Real, D: Device<E>, F: FnMut(&str) -> bool> TensorVisitor<E, D> for Read<F> {
        type Viewer = (ViewTensorRef, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, E, D>,
            (t, path): (&Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            if (self.0)(&path) {
                let dims = t.shape().concrete().into_iter().collect();
                let values = t.as_vec().into_iter().map(Real::to_f64).collect();
                self.1.insert(path, HostValue::Tensor(dims, values));
            }
            Ok(None)
        }
        fn visit_scalar<N: NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            (n, path): (&N, String),
        ) -> Result<Option<N>, D::Err> {
            if let (true, Some(v)) = ((self.0)(&path), n.to_f64()) {
                self.1.insert(path, HostValue::Scalar(v));
            }
            Ok(None)
        }
    }
    let mut v = Read(wanted, BTreeMap::new());
    walk_ref(module, &mut v);
    v.1
}

/// Writes tensors (row-major `f64` values) and scalars into `module` by dotted path. The
/// caller has checked every tensor's length; a scalar its type cannot hold is skipped.
pub(crate) fn write_f64<M, E, D>(
    module: &mut M,
    tensors: &BTreeMap<String, Vec<f64>>,
    scalars: &BTreeMap<String, f64>,
) where
    M: TensorCollection<E, D>,
    E: Real,
    D: Device<E>,
{
    struct Write<'a>(&'a BTreeMap<String, Vec<f64>>, &'a BTreeMap<String, f64>);
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Write<'_> {
        type Viewer = (ViewTensorMut, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, E, D>,
            (t, path): (&mut Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            if let Some(v) = self.0.get(&path) {
                t.copy_from(&v.iter().map(|&x| E::of_f64(x)).collect::<Vec<_>>());
            }
            Ok(None)
        }
        fn visit_scalar<N: NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            (n, path): (&mut N, String),
        ) -> Result<Option<N>, D::Err> {
            if let Some(v) = self.1.get(&path).and_then(|&v| N::from(v)) {
                *n = v;
            }
            Ok(None)
        }
    }
    walk_mut(module, &mut Write(tensors, scalars));
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
    struct Views<E: Real, D: Device<E>>(Vec<(String, Vec<usize>, Flat<E, D>)>);
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Views<E, D> {
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
                let dims = t.shape().concrete().into_iter().collect();
                let flat = t.clone().try_reshape_like(&(t.shape().num_elements(),))?;
                self.0.push((path, dims, flat));
            }
            Ok(None)
        }
    }
    let mut v = Views(Vec::new());
    walk_ref(module, &mut v);
    v.0
}

/// Every trainable tensor and its gradient as flat views (contiguous tensors: no copy;
/// the gradient is the clone `Gradients::get` makes). A missing gradient is recorded, not
/// fatal ([`gradient_of`]).
pub fn gather<M: TensorCollection<E, D>, E: Real, D: Device<E>>(
    module: &M,
    grads: &Gradients<E, D>,
) -> Gathered<TensorEntry<E, D>> {
    let mut out = Gathered {
        entries: BTreeMap::new(),
        unused: Vec::new(),
    };
    for (path, dims, param) in views(module) {
        match gradient_of(grads, &param) {
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
            (scratch::overwritten(len), scratch::overwritten(len), false)
        })
        .collect();
    let reads = views
        .iter()
        .zip(bufs.iter_mut())
        .flat_map(|((_, _, t), (param, grad, found))| {
            [Read::Tensor(t, param), Read::Gradient(t, grad, found)]
        })
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
            scratch::recycle(param);
            scratch::recycle(grad);
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
        .filter(|(_, e)| !slices::all_finite(&e.grad))
        .map(|(p, _)| p.clone())
        .collect()
}

/// The device of `module`'s first tensor (`None` for a module without tensors).
pub fn device<M: TensorCollection<E, D>, E: Real, D: Device<E>>(module: &M) -> Option<D> {
    struct First<D>(Option<D>);
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for First<D> {
        type Viewer = (ViewTensorRef, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, E, D>,
            (t, _): (&Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            if self.0.is_none() {
                self.0 = Some(t.device().clone());
            }
            Ok(None)
        }
    }
    let mut v = First(None);
    walk_ref(module, &mut v);
    v.0
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
    struct Commit<'a, E: Real, D: Device<E>> {
        values: &'a BTreeMap<String, Value<E, D>>,
    }
    impl<E: Real, D: Device<E>> TensorVisitor<E, D> for Commit<'_, E, D> {
        type Viewer = (ViewTensorMut, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;
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
    }
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Commit { values },
    })
    .map(|_| ())
}
