//! Property tests of the Stiefel geometry (proptest, 256 cases each, f64 and f32):
//! projection, and for every retraction R(X, 0) = X, staying on the manifold, first order,
//! and (Polar) equivariance under right rotations.

mod common;

use common::*;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use proptest::prelude::*;
use sds_lora::kernels::Real;
use sds_lora::stiefel::{
    is_tangent, orthogonality_error, project_tangent, random_point, retract, Retraction,
};

const NS_ITERS: usize = 8;

fn shapes() -> impl Strategy<Value = (usize, usize, u64)> {
    (1usize..=32).prop_flat_map(|r| (r..=300usize, Just(r), any::<u64>()))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// A point and a unit-Frobenius-norm tangent vector at it (zero where the tangent space
/// is, as for St(1, 1), where the projection leaves only rounding: a point off the
/// manifold by a few `eps` leaves about `eps ||G||`, which is not a direction).
fn point_and_direction<E: Real>(dev: &Cpu, n: usize, r: usize, seed: u64) -> (Mat<E>, Mat<E>)
where
    Cpu: Device<E>,
{
    let x: Mat<E> = random_point(dev, (n, r), seed).unwrap();
    let g = gaussian(n, r, seed ^ 0x9e37_79b9);
    let v = host(&project_tangent(&x, &tensor::<E>(dev, &g)).unwrap());
    let rounding = 100.0 * E::EPSILON.to_f64() * g.norm();
    let scale = if v.norm() > rounding {
        1.0 / v.norm()
    } else {
        0.0
    };
    (x, tensor(dev, &(&v * scale)))
}

fn projection_properties<E: Real>(n: usize, r: usize, seed: u64) -> Result<(), TestCaseError>
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let tol = 50.0 * E::EPSILON.to_f64() * (r as f64).sqrt();
    let x: Mat<E> = random_point(&dev, (n, r), seed).unwrap();
    let g = tensor::<E>(&dev, &gaussian(n, r, seed.wrapping_add(1)));
    let gn = host(&g).norm();
    let p = project_tangent(&x, &g).unwrap();
    let pp = project_tangent(&x, &p).unwrap();
    prop_assert!(
        dist(&pp, &p) <= tol * gn,
        "not idempotent: {}",
        dist(&pp, &p) / gn
    );
    prop_assert!(is_tangent(&x, &p, tol * gn), "output not tangent");

    let a = gaussian(r, r, seed.wrapping_add(2));
    let (sym, skew) = ((&a + a.transpose()) * 0.5, (&a - a.transpose()) * 0.5);
    let xh = host(&x);
    let x_sym = tensor::<E>(&dev, &(&xh * &sym));
    let x_skew = tensor::<E>(&dev, &(&xh * &skew));
    let p_sym = host(&project_tangent(&x, &x_sym).unwrap());
    prop_assert!(
        p_sym.norm() <= tol * (1.0 + sym.norm()),
        "X Sym not sent to 0: {}",
        p_sym.norm()
    );
    let p_skew = project_tangent(&x, &x_skew).unwrap();
    prop_assert!(
        dist(&p_skew, &x_skew) <= tol * (1.0 + skew.norm()),
        "X Skew changed"
    );
    Ok(())
}

fn retraction_properties<E: Real>(
    n: usize,
    r: usize,
    seed: u64,
    t: [f64; 2],
) -> Result<(), TestCaseError>
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let eps = E::EPSILON.to_f64();
    let (x, dir) = point_and_direction::<E>(&dev, n, r, seed);
    let zero: Mat<E> = dev.zeros_like(&(n, r));
    let moderate = dir.clone() * E::of_f64(0.5);
    for kind in Retraction::all(NS_ITERS) {
        let at_zero = retract(&x, &zero, kind).unwrap();
        prop_assert!(
            dist(&at_zero, &x) <= 20.0 * eps * (r as f64).sqrt(),
            "{kind:?}: R(X, 0) != X"
        );

        let y = retract(&x, &moderate, kind).unwrap();
        let err = orthogonality_error(&y);
        prop_assert!(
            err <= 10.0 * eps * (r as f64).sqrt(),
            "{kind:?}: off the manifold by {err:e}"
        );

        // ||R(X, t xi) - X - t xi|| <= C t^2 at both t, and it falls like t^2.
        let errs: Vec<f64> = t
            .iter()
            .map(|&ti| {
                let step = dir.clone() * E::of_f64(ti);
                let y = host(&retract(&x, &step, kind).unwrap());
                (y - host(&x) - host(&step)).norm()
            })
            .collect();
        for (e, ti) in errs.iter().zip(t) {
            prop_assert!(
                *e <= 2.0 * ti * ti,
                "{kind:?}: not first order at t={ti}: {e:e}"
            );
        }
        let noise = 100.0 * eps * (r as f64).sqrt();
        if errs[1] > noise {
            let expected = (t[0] / t[1]).powi(2);
            prop_assert!(
                errs[0] / errs[1] > 0.6 * expected,
                "{kind:?}: error ratio {}",
                errs[0] / errs[1]
            );
        }
    }
    // Polar commutes with right rotations: R(X O, xi O) = R(X, xi) O.
    let o = orthogonal(r, seed.wrapping_add(3));
    let xo = tensor::<E>(&dev, &(host(&x) * &o));
    let xio = tensor::<E>(&dev, &(host(&moderate) * &o));
    let lhs = host(&retract(&xo, &xio, Retraction::Polar).unwrap());
    let rhs = host(&retract(&x, &moderate, Retraction::Polar).unwrap()) * &o;
    let gap = (lhs - rhs).norm();
    prop_assert!(
        gap <= 100.0 * eps * (r as f64).sqrt(),
        "Polar not equivariant: {gap:e}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn projection_f64((n, r, seed) in shapes()) {
        projection_properties::<f64>(n, r, seed)?;
    }

    #[test]
    fn projection_f32((n, r, seed) in shapes()) {
        projection_properties::<f32>(n, r, seed)?;
    }

    #[test]
    fn retractions_f64((n, r, seed) in shapes()) {
        retraction_properties::<f64>(n, r, seed, [1e-2, 1e-3])?;
    }

    #[test]
    fn retractions_f32((n, r, seed) in shapes()) {
        retraction_properties::<f32>(n, r, seed, [1e-1, 3e-2])?;
    }
}

#[test]
fn identity_matrix_is_a_point() {
    let dev = Cpu::default();
    let x: Mat<f64> = tensor(&dev, &DMatrix::identity(5, 3));
    assert_eq!(orthogonality_error(&x), 0.0);
}
