//! Fixed inputs with numbers derived by hand (projection) and by dense nalgebra
//! computations written here (retractions of xi = -0.5 P(G)).
//!
//! X = 0.5 [[1,1],[1,-1],[1,1],[1,-1]],  G = 0.1 [[1,2],[3,4],[5,6],[7,8]].
//! By hand: X^T G = [[0.8, 1.0], [-0.2, -0.2]], sym = [[0.8, 0.4], [0.4, -0.2]],
//! X sym = [[0.6, 0.1], [0.2, 0.3], [0.6, 0.1], [0.2, 0.3]], so
//! P(G) = G - X sym = [[-0.5, 0.1], [0.1, 0.1], [-0.1, 0.5], [0.5, 0.5]]
//! (and X^T P(G) = [[0, 0.6], [-0.6, 0]], skew as it must be).

mod common;

use common::*;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::stiefel::{project_tangent, retract, transport, Retraction};

fn x0() -> DMatrix<f64> {
    DMatrix::from_row_slice(4, 2, &[1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0]) * 0.5
}

fn g0() -> DMatrix<f64> {
    DMatrix::from_row_slice(4, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) * 0.1
}

fn by_hand_projection() -> DMatrix<f64> {
    DMatrix::from_row_slice(4, 2, &[-0.5, 0.1, 0.1, 0.1, -0.1, 0.5, 0.5, 0.5])
}

fn step() -> DMatrix<f64> {
    by_hand_projection() * -0.5
}

fn retracted(kind: Retraction) -> DMatrix<f64> {
    let dev = Cpu::default();
    let x: Mat<f64> = tensor(&dev, &x0());
    let xi: Mat<f64> = tensor(&dev, &step());
    host(&retract(&x, &xi, kind).unwrap())
}

#[test]
fn projection_matches_hand_calculation() {
    let dev = Cpu::default();
    let x: Mat<f64> = tensor(&dev, &x0());
    let g: Mat<f64> = tensor(&dev, &g0());
    let p = host(&project_tangent(&x, &g).unwrap());
    assert!((&p - by_hand_projection()).norm() < 1e-15, "{p}");
    let t = host(&transport(&x, &g).unwrap());
    assert!((&t - by_hand_projection()).norm() < 1e-15);
    let p32 = project_tangent(&tensor::<f32>(&dev, &x0()), &tensor::<f32>(&dev, &g0())).unwrap();
    assert!((host(&p32) - by_hand_projection()).norm() < 1e-6);
}

#[test]
fn qr_and_cholesky_qr2_match_dense_qr() {
    let y = x0() + step();
    let qr = y.clone().qr();
    let (mut q, r) = (qr.q(), qr.r());
    for j in 0..2 {
        if r[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    for kind in [Retraction::Qr, Retraction::CholeskyQr2] {
        let got = retracted(kind);
        assert!((&got - &q).norm() < 1e-14, "{kind:?}: {got} vs {q}");
    }
}

#[test]
fn polar_and_newton_schulz_match_dense_svd() {
    let y = x0() + step();
    let svd = y.svd(true, true);
    let polar = svd.u.unwrap() * svd.v_t.unwrap();
    assert!((retracted(Retraction::Polar) - &polar).norm() < 1e-14);
    // ||P(G)/2||_2 = 0.3606 here: the distance starts at 0.13 and 6 steps reach rounding.
    let ns = retracted(Retraction::NewtonSchulz { iters: 6 });
    assert!((ns - &polar).norm() < 1e-14);
    // With one iteration the result is the first Newton-Schulz iterate, computed densely.
    let y = x0() + step();
    let one = &y * (DMatrix::identity(2, 2) * 3.0 - y.transpose() * &y) * 0.5;
    assert!((retracted(Retraction::NewtonSchulz { iters: 1 }) - one).norm() < 1e-15);
}

#[test]
fn cayley_matches_dense_cayley_transform() {
    let (x, xi) = (x0(), step());
    let id = DMatrix::<f64>::identity(4, 4);
    let p = &id - &x * x.transpose() * 0.5;
    let w = &p * &xi * x.transpose() - &x * (&p * &xi).transpose();
    let dense = (&id - &w * 0.5).try_inverse().unwrap() * (&id + &w * 0.5) * &x;
    assert!((retracted(Retraction::Cayley) - dense).norm() < 1e-14);
}

#[test]
fn exp_matches_dense_geodesic() {
    // A = X^T xi = [[0, -0.3], [0.3, 0]] and S = xi^T xi, from the hand values.
    let (x, xi) = (x0(), step());
    let a = x.transpose() * &xi;
    assert!((&a - DMatrix::from_row_slice(2, 2, &[0.0, -0.3, 0.3, 0.0])).norm() < 1e-15);
    let s = xi.transpose() * &xi;
    let mut m = DMatrix::<f64>::zeros(4, 4);
    m.view_mut((0, 0), (2, 2)).copy_from(&a);
    m.view_mut((0, 2), (2, 2)).copy_from(&(-s));
    m.view_mut((2, 0), (2, 2)).fill_with_identity();
    m.view_mut((2, 2), (2, 2)).copy_from(&a);
    let mut xx = DMatrix::<f64>::zeros(4, 4);
    xx.view_mut((0, 0), (4, 2)).copy_from(&x);
    xx.view_mut((0, 2), (4, 2)).copy_from(&xi);
    let mut right = DMatrix::<f64>::zeros(4, 2);
    right.view_mut((0, 0), (2, 2)).copy_from(&(-a).exp());
    let dense = xx * m.exp() * right;
    assert!((retracted(Retraction::Exp) - dense).norm() < 1e-14);
}
