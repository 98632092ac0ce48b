//! Agreement in f64 (1e-10) between retractions and with dense references built here:
//! Qr = CholeskyQr2 = the dense Q factor (on both of Qr's algorithms); Polar = NewtonSchulz (>= 4 iterations); Cayley = its dense n x n
//! definition; Exp = the dense geodesic formula and a numerical integration of the
//! geodesic equation.

mod common;

use common::*;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::stiefel::{orthogonality_error, project_tangent, random_point, retract, Retraction};

const TOL: f64 = 1e-10;

/// A point and a tangent step of Frobenius norm `size`.
fn case(dev: &Cpu, n: usize, r: usize, seed: u64, size: f64) -> (Mat<f64>, Mat<f64>) {
    let x: Mat<f64> = random_point(dev, (n, r), seed).unwrap();
    let g = tensor::<f64>(dev, &gaussian(n, r, seed + 100));
    let v = host(&project_tangent(&x, &g).unwrap());
    (x, tensor(dev, &(&v * (size / v.norm()))))
}

const SHAPES: [(usize, usize); 6] = [(5, 1), (8, 3), (40, 7), (64, 16), (300, 32), (12, 12)];

#[test]
fn qr_agrees_with_cholesky_qr2() {
    let dev = Cpu::default();
    for (k, &(n, r)) in SHAPES.iter().enumerate() {
        let (x, xi) = case(&dev, n, r, k as u64, 1.0);
        let a = retract(&x, &xi, Retraction::Qr).unwrap();
        let b = retract(&x, &xi, Retraction::CholeskyQr2).unwrap();
        assert!(dist(&a, &b) < TOL, "({n}, {r}): {:e}", dist(&a, &b));
    }
}

/// A step `xi = sigma w z^T` (`w` a unit vector orthogonal to `X`, `z` a unit vector), so
/// that `X + xi` has singular values `1` and `sqrt(1 + sigma^2)`.
fn rank_one_step(x: &DMatrix<f64>, sigma: f64, seed: u64) -> DMatrix<f64> {
    let (n, r) = x.shape();
    let w = gaussian(n, 1, seed);
    let w = &w - x * (x.transpose() * &w);
    let z = gaussian(r, 1, seed + 1);
    (&w / w.norm()) * (&z / z.norm()).transpose() * sigma
}

/// The Q factor with `diag(R) >= 0` by nalgebra's dense Householder QR.
fn dense_qf(y: &DMatrix<f64>) -> DMatrix<f64> {
    let qr = y.clone().qr();
    let (mut q, r) = (qr.q(), qr.r());
    for k in 0..r.nrows() {
        if r[(k, k)] < 0.0 {
            q.column_mut(k).neg_mut();
        }
    }
    q
}

/// Qr takes one Cholesky-QR pass where `X + xi` is well conditioned and Householder QR
/// elsewhere: steps on both sides of the switch (`kappa(X + xi)^2 = 1 + sigma^2` from 1.01
/// to 10^4) give the dense Q factor.
#[test]
fn qr_is_the_dense_q_factor_on_both_sides_of_the_cholesky_switch() {
    let dev = Cpu::default();
    for (k, &(n, r)) in SHAPES.iter().enumerate() {
        for (j, &sigma) in [0.1, 1.0, 1.7, 1.8, 3.0, 100.0].iter().enumerate() {
            let x: Mat<f64> = random_point(&dev, (n, r), 40 + k as u64).unwrap();
            let xi = rank_one_step(&host(&x), sigma, 60 + (k * 10 + j) as u64);
            let q = retract(&x, &tensor(&dev, &xi), Retraction::Qr).unwrap();
            let d = (host(&q) - dense_qf(&(host(&x) + &xi))).norm();
            assert!(d < TOL, "({n}, {r}), sigma {sigma}: {d:e}");
        }
    }
}

/// In f32, one Cholesky-QR pass would lose orthogonality like `eps kappa(X + xi)^2`
/// (about 1e-3 at `sigma = 100`); Qr must fall back to Householder QR there.
#[test]
fn qr_stays_orthonormal_for_ill_conditioned_steps_in_f32() {
    let dev = Cpu::default();
    for (k, &(n, r)) in [(300, 2), (300, 16), (4096, 16)].iter().enumerate() {
        let bound = 10.0 * f32::EPSILON as f64 * (r as f64).sqrt();
        for (j, &sigma) in [1.0, 10.0, 100.0].iter().enumerate() {
            let x: Mat<f32> = random_point(&dev, (n, r), 80 + k as u64).unwrap();
            let xi = rank_one_step(&host(&x), sigma, 90 + (k * 10 + j) as u64);
            let q = retract(&x, &tensor(&dev, &xi), Retraction::Qr).unwrap();
            let err = orthogonality_error(&q);
            assert!(
                err <= bound,
                "({n}, {r}), sigma {sigma}: {err:e} > {bound:e}"
            );
        }
    }
}

#[test]
fn polar_agrees_with_newton_schulz() {
    let dev = Cpu::default();
    for (k, &(n, r)) in SHAPES.iter().enumerate() {
        let (x, xi) = case(&dev, n, r, 10 + k as u64, 0.1);
        let a = retract(&x, &xi, Retraction::Polar).unwrap();
        for iters in [4, 6] {
            let b = retract(&x, &xi, Retraction::NewtonSchulz { iters }).unwrap();
            assert!(
                dist(&a, &b) < TOL,
                "({n}, {r}) iters {iters}: {:e}",
                dist(&a, &b)
            );
        }
    }
}

/// Polar factor of a dense matrix by its SVD: `U V^T`.
fn dense_polar(y: &DMatrix<f64>) -> DMatrix<f64> {
    let svd = y.clone().svd(true, true);
    svd.u.unwrap() * svd.v_t.unwrap()
}

#[test]
fn polar_is_the_svd_polar_factor() {
    let dev = Cpu::default();
    for (k, &(n, r)) in SHAPES.iter().enumerate() {
        let (x, xi) = case(&dev, n, r, 20 + k as u64, 0.7);
        let a = host(&retract(&x, &xi, Retraction::Polar).unwrap());
        let b = dense_polar(&(host(&x) + host(&xi)));
        assert!((&a - &b).norm() < TOL, "({n}, {r}): {:e}", (a - b).norm());
    }
}

#[test]
fn cayley_agrees_with_its_dense_definition() {
    let dev = Cpu::default();
    for (k, &(n, r)) in [(5usize, 1usize), (8, 3), (10, 4), (12, 12)]
        .iter()
        .enumerate()
    {
        let (x, xi) = case(&dev, n, r, 30 + k as u64, 0.8);
        let (xh, xih) = (host(&x), host(&xi));
        let id = DMatrix::<f64>::identity(n, n);
        // W = P xi X^T - X (P xi)^T,  P = I - X X^T / 2
        let p = &id - &xh * xh.transpose() * 0.5;
        let pxi = &p * &xih;
        let w = &pxi * xh.transpose() - &xh * pxi.transpose();
        let dense = (&id - &w * 0.5).try_inverse().unwrap() * (&id + &w * 0.5) * &xh;
        let got = host(&retract(&x, &xi, Retraction::Cayley).unwrap());
        assert!(
            (&got - &dense).norm() < TOL,
            "({n}, {r}): {:e}",
            (got - dense).norm()
        );
    }
}

/// The Euclidean-metric geodesic X'' = -X (X'^T X') integrated by classical RK4.
fn integrate_geodesic(x: &DMatrix<f64>, v: &DMatrix<f64>, steps: usize) -> DMatrix<f64> {
    let h = 1.0 / steps as f64;
    let accel = |x: &DMatrix<f64>, v: &DMatrix<f64>| -(x * (v.transpose() * v));
    let (mut x, mut v) = (x.clone(), v.clone());
    for _ in 0..steps {
        let (k1x, k1v) = (v.clone(), accel(&x, &v));
        let (x2, v2) = (&x + &k1x * (h / 2.0), &v + &k1v * (h / 2.0));
        let (k2x, k2v) = (v2.clone(), accel(&x2, &v2));
        let (x3, v3) = (&x + &k2x * (h / 2.0), &v + &k2v * (h / 2.0));
        let (k3x, k3v) = (v3.clone(), accel(&x3, &v3));
        let (x4, v4) = (&x + &k3x * h, &v + &k3v * h);
        let (k4x, k4v) = (v4.clone(), accel(&x4, &v4));
        x += (k1x + &k2x * 2.0 + &k3x * 2.0 + k4x) * (h / 6.0);
        v += (k1v + &k2v * 2.0 + &k3v * 2.0 + k4v) * (h / 6.0);
    }
    x
}

#[test]
fn exp_agrees_with_dense_geodesic() {
    let dev = Cpu::default();
    for (k, &(n, r)) in [(5usize, 1usize), (8, 3), (10, 4), (6, 6)]
        .iter()
        .enumerate()
    {
        let (x, xi) = case(&dev, n, r, 40 + k as u64, 0.9);
        let (xh, xih) = (host(&x), host(&xi));
        // Dense: [X xi] expm([[A, -S], [I, A]]) [expm(-A); 0], all n x 2r / 2r x 2r.
        let a = xh.transpose() * &xih;
        let s = xih.transpose() * &xih;
        let mut m = DMatrix::<f64>::zeros(2 * r, 2 * r);
        m.view_mut((0, 0), (r, r)).copy_from(&a);
        m.view_mut((0, r), (r, r)).copy_from(&(-&s));
        m.view_mut((r, 0), (r, r)).fill_with_identity();
        m.view_mut((r, r), (r, r)).copy_from(&a);
        let mut right = DMatrix::<f64>::zeros(2 * r, r);
        right.view_mut((0, 0), (r, r)).copy_from(&(-&a).exp());
        let mut xx = DMatrix::<f64>::zeros(n, 2 * r);
        xx.view_mut((0, 0), (n, r)).copy_from(&xh);
        xx.view_mut((0, r), (n, r)).copy_from(&xih);
        let dense = xx * m.exp() * right;
        let got = host(&retract(&x, &xi, Retraction::Exp).unwrap());
        assert!(
            (&got - &dense).norm() < TOL,
            "({n}, {r}): {:e}",
            (&got - &dense).norm()
        );
        // Independent: integrate the geodesic equation (RK4, error ~ h^4).
        let ode = integrate_geodesic(&xh, &xih, 2000);
        assert!(
            (&got - &ode).norm() < TOL,
            "({n}, {r}) vs ODE: {:e}",
            (got - ode).norm()
        );
    }
}

/// With the device's allocation cache on, results are allocated through the device
/// (`kernels::device_cache`) and hold the same bits as without it, padded shapes included;
/// a dropped result's buffer is the next result's (it went back to the cache and came out
/// again, where a buffer of the crate's own would have stayed in the cache for good).
#[test]
fn results_are_the_same_with_the_device_cache_on() {
    let plain = Cpu::default();
    let cached = Cpu::default();
    cached.enable_cache();
    for (k, &(n, r)) in SHAPES.iter().enumerate() {
        let (x, xi) = case(&plain, n, r, k as u64, 0.5);
        let (xc, xic) = (x.to_device(&cached), xi.to_device(&cached));
        for kind in Retraction::all(5) {
            let a = retract(&x, &xi, kind).unwrap().as_vec();
            let b = retract(&xc, &xic, kind).unwrap().as_vec();
            assert_eq!(a, b, "{} ({n}, {r})", kind.name());
        }
        let p = project_tangent(&x, &xi).unwrap().as_vec();
        assert_eq!(
            p,
            project_tangent(&xc, &xic).unwrap().as_vec(),
            "({n}, {r})"
        );
        let first_element = |t: &Mat<f64>| &t[[0, 0]] as *const f64;
        let at = first_element(&retract(&xc, &xic, Retraction::Qr).unwrap());
        let again = retract(&xc, &xic, Retraction::Qr).unwrap();
        assert_eq!(
            first_element(&again),
            at,
            "({n}, {r}): reused from the cache"
        );
    }
}

/// `retract` forms `X + xi` in the step's host copy ([`Retraction::apply`] in a third
/// buffer): the same bits for every retraction, f32 and f64, both of Qr's algorithms.
#[test]
fn retract_on_tensors_gives_the_bits_of_apply() {
    use sds_lora::kernels::{HostOps, TallOps};
    let dev = Cpu::default();
    let ops = HostOps::new(&dev);
    for (k, &(n, r)) in SHAPES.iter().enumerate() {
        for size in [0.3, 3.0] {
            let (x, xi) = case(&dev, n, r, 40 + k as u64, size);
            let (x32, xi32): (Mat<f32>, Mat<f32>) = (x.clone().to_dtype(), xi.clone().to_dtype());
            for kind in Retraction::all(5) {
                let tensors = retract(&x, &xi, kind);
                let mats = kind.apply(&ops, &ops.load(&x).unwrap(), &ops.load(&xi).unwrap());
                match (tensors, mats) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.as_vec(), ops.store(b, (n, r)).unwrap().as_vec())
                    }
                    (a, b) => assert_eq!(a.err(), b.err(), "{kind:?} ({n}, {r})"),
                }
                let a = retract(&x32, &xi32, kind).map(|t| t.as_vec());
                let b = kind
                    .apply(&ops, &ops.load(&x32).unwrap(), &ops.load(&xi32).unwrap())
                    .map(|m| ops.store(m, (n, r)).unwrap().as_vec());
                assert_eq!(a, b, "{kind:?} ({n}, {r}) f32");
            }
        }
    }
}
