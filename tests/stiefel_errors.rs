//! Failures return clear errors and leave the inputs untouched; the composed dfdx-op
//! backend (the CUDA path) computes what the CPU fast path computes.

mod common;

use common::*;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::kernels::{ComposedOps, Real, StiefelDevice, TallOps};
use sds_lora::stiefel::retractions::Sums;
use sds_lora::stiefel::{project_mat, random_point, retract, transport_mat, Retraction};
use sds_lora::Error;

fn point(dev: &Cpu, n: usize, r: usize) -> Mat<f64> {
    random_point(dev, (n, r), 3).unwrap()
}

#[test]
fn newton_schulz_outside_its_region_is_refused() {
    let dev = Cpu::default();
    let x = point(&dev, 10, 2);
    let big = x.clone() * 1.0; // Y = 2X: Y^T Y - I = 3I
    let before = x.as_vec();
    match retract(&x, &big, Retraction::NewtonSchulz { iters: 5 }) {
        Err(Error::NotConvergent { distance }) => assert!((distance - 3.0).abs() < 1e-12),
        other => panic!("expected NotConvergent, got {other:?}"),
    }
    assert_eq!(x.as_vec(), before, "input untouched");
    // Polar and Qr handle the same step.
    assert!(retract(&x, &big, Retraction::Polar).is_ok());
}

#[test]
fn rank_deficient_step_fails_cholesky_and_polar_but_not_qr() {
    let dev = Cpu::default();
    let x = point(&dev, 6, 2);
    let minus_x = x.clone() * -1.0; // X + xi = 0
    assert_eq!(
        retract(&x, &minus_x, Retraction::CholeskyQr2).unwrap_err(),
        Error::NotPositiveDefinite {
            what: "Cholesky-QR2"
        }
    );
    assert!(matches!(
        retract(&x, &minus_x, Retraction::Polar),
        Err(Error::NotPositiveDefinite { .. })
    ));
    // Householder QR of 0 is defined (R = 0 counts as positive): Q = [I; 0].
    let q = host(&retract(&x, &minus_x, Retraction::Qr).unwrap());
    assert_eq!(q, DMatrix::identity(6, 2));
}

#[test]
fn non_finite_inputs_are_refused() {
    let dev = Cpu::default();
    let x = point(&dev, 5, 2);
    let mut bad = dev.zeros_like(&(5, 2));
    let mut v = vec![0.0; 10];
    v[7] = f64::NAN;
    bad.copy_from(&v);
    for kind in Retraction::all(4) {
        assert_eq!(
            retract(&x, &bad, kind).unwrap_err(),
            Error::NonFinite {
                what: "tangent step".into()
            }
        );
        assert_eq!(
            retract(&bad, &x, kind).unwrap_err(),
            Error::NonFinite {
                what: "point".into()
            }
        );
    }
    // Sums formed by the caller: a non-finite one is refused by every sum retraction, and
    // a finite one in the same batch does not hide it.
    let ops = sds_lora::kernels::HostOps::new(&dev);
    for kind in Retraction::all(4).into_iter().filter_map(|k| k.sum_form()) {
        let sums = vec![ops.load(&x).unwrap(), ops.load(&bad).unwrap()];
        match Sums::new(&ops, sums).and_then(|s| kind.apply_batch(&ops, s)) {
            Err(Error::NonFinite { what }) => assert!(what.contains("X + xi"), "{what}"),
            other => panic!("{kind:?}: expected NonFinite, got {other:?}"),
        }
    }
}

#[test]
fn wide_and_mismatched_shapes_are_refused() {
    let dev = Cpu::default();
    let wide: Mat<f64> = dev.zeros_like(&(2, 3));
    assert_eq!(
        retract(&wide, &wide, Retraction::Qr).unwrap_err(),
        Error::NotTall { rows: 2, cols: 3 }
    );
    assert!(matches!(
        random_point::<f64, _, _, _>(&dev, (2, 3), 0),
        Err(Error::NotTall { rows: 2, cols: 3 })
    ));
    let a = point(&dev, 5, 2);
    let b = point(&dev, 6, 2);
    assert!(matches!(
        retract(&a, &b, Retraction::Qr),
        Err(Error::ShapeMismatch { .. })
    ));
    let msg = Error::NotTall { rows: 2, cols: 3 }.to_string();
    assert!(msg.contains("[2, 3]"), "{msg}");
}

/// The composed dfdx-op backend against the fused host backend, op by op.
fn composed_matches_host<E: Real>(tol: f64)
where
    Cpu: Device<E> + StiefelDevice<E>,
{
    let dev = Cpu::default();
    let host_ops = StiefelDevice::<E>::tall_ops(&dev);
    let composed = ComposedOps::new(&dev);
    let x: Mat<E> = random_point(&dev, (50, 6), 9).unwrap();
    let g = tensor::<E>(&dev, &(gaussian(50, 6, 10) * 0.02));
    let (xh, gh) = (host_ops.load(&x).unwrap(), host_ops.load(&g).unwrap());
    let (xc, gc) = (composed.load(&x).unwrap(), composed.load(&g).unwrap());
    let p_h = project_mat(&host_ops, &xh, gh.clone()).unwrap();
    let p_c = project_mat(&composed, &xc, gc.clone()).unwrap();
    let p_h_t = host_ops.store(p_h.clone(), (50, 6)).unwrap();
    let p_c_t = composed.store(p_c.clone(), (50, 6)).unwrap();
    assert!(dist(&p_h_t, &p_c_t) < tol);
    let t_c = transport_mat(&composed, &xc, gc.clone()).unwrap();
    assert!(dist(&p_h_t, &composed.store(t_c, (50, 6)).unwrap()) < tol);
    for kind in Retraction::all(6) {
        let a = kind.apply(&host_ops, &xh, &p_h).unwrap();
        let b = kind.apply(&composed, &xc, &p_c).unwrap();
        let (a, b) = (
            host_ops.store(a, (50, 6)).unwrap(),
            composed.store(b, (50, 6)).unwrap(),
        );
        assert!(dist(&a, &b) < tol, "{kind:?}: {:e}", dist(&a, &b));
    }
    // `B + alpha A` in B's storage, on both backends and against `lincomb`.
    let alpha = E::of_f64(-0.75);
    let axpy_h = host_ops.axpy(alpha, &xh, gh.clone()).unwrap();
    let lincomb_h = host_ops.lincomb(alpha, &xh, E::one(), &gh).unwrap();
    let axpy_c = composed.axpy(alpha, &xc, gc.clone()).unwrap();
    let axpy_h = host_ops.store(axpy_h, (50, 6)).unwrap();
    assert_eq!(
        axpy_h.as_vec(),
        host_ops.store(lincomb_h, (50, 6)).unwrap().as_vec()
    );
    assert!(dist(&axpy_h, &composed.store(axpy_c, (50, 6)).unwrap()) < tol);
    let expected: Vec<E> = x
        .as_vec()
        .iter()
        .zip(g.as_vec())
        .map(|(&a, b)| b + alpha * a)
        .collect();
    assert_eq!(axpy_h.as_vec(), expected);
    // In-place stores keep the tensor id and write the data.
    let mut dst = x.clone() * E::of_f64(1.0);
    composed.store_into(&gc, &mut dst).unwrap();
    assert_eq!(dst.as_vec(), g.as_vec());
    assert!(composed.all_finite(&gc).unwrap());
    let mut nan = g.clone();
    nan.copy_from(&[E::of_f64(f64::NAN); 300]);
    assert!(!composed.all_finite(&composed.load(&nan).unwrap()).unwrap());
}

#[test]
fn composed_backend_matches_host_backend() {
    composed_matches_host::<f64>(1e-12);
    composed_matches_host::<f32>(1e-5);
}
