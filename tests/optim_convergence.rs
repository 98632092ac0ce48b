//! Convergence to known optima with every retraction, SGD and Adam (f64): the leading
//! eigenspace of a fixed SPD matrix (maximise tr(X^T A X)) and orthogonal Procrustes
//! (minimise ||A X - B||_F with A orthogonal, solution polar(A^T B)). And orthogonality
//! after 20,000 f32 steps with Qr, with and without re-orthonormalisation.

use dfdx::optim::Optimizer;
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::optim::{ParamGroups, SdsAdam, SdsAdamConfig, SdsSgd, SdsSgdConfig, StiefelConfig};
use sds_lora::stiefel::{orthogonality_error, random_point, Retraction};

const N: usize = 20;
const R: usize = 3;

macro_rules! layer_type {
    ($e:ty) => {
        <Linear<R, N> as BuildOnDevice<Cpu, $e>>::Built
    };
}
type Layer = layer_type!(f64);

fn gaussian(rows: usize, cols: usize, seed: u64) -> DMatrix<f64> {
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = StdRng::seed_from_u64(seed);
    DMatrix::from_fn(rows, cols, |_, _| StandardNormal.sample(&mut rng))
}

fn start() -> Layer {
    let dev = Cpu::default();
    let mut layer = dev.build_module::<Linear<R, N>, f64>();
    let x: Tensor<Rank2<N, R>, f64, Cpu> = random_point(&dev, (Const, Const), 3).unwrap();
    layer.weight.copy_from(&x.as_vec());
    layer
}

fn point(layer: &Layer) -> DMatrix<f64> {
    DMatrix::from_row_slice(N, R, &layer.weight.as_vec())
}

/// Runs `steps` updates with the Euclidean gradient `egrad(X)` on the weight.
fn descend(
    opt: &mut impl Optimizer<Layer, Cpu, f64>,
    layer: &mut Layer,
    steps: usize,
    egrad: impl Fn(&DMatrix<f64>) -> DMatrix<f64>,
) {
    for _ in 0..steps {
        let g = egrad(&point(layer));
        let mut grads = layer.alloc_grads();
        grads
            .get_or_alloc_mut(&layer.weight)
            .unwrap()
            .copy_from_slice(g.transpose().as_slice());
        opt.update(layer, &grads).unwrap();
    }
}

fn stiefel(retraction: Retraction) -> StiefelConfig {
    StiefelConfig {
        retraction,
        reorthonormalize_every: None,
        ..Default::default()
    }
}

fn adam(lr: f64, retraction: Retraction) -> SdsAdamConfig {
    SdsAdamConfig {
        groups: ParamGroups::uniform(lr),
        stiefel: stiefel(retraction),
        ..Default::default()
    }
}

fn sgd(lr: f64, retraction: Retraction) -> SdsSgdConfig {
    SdsSgdConfig {
        groups: ParamGroups::uniform(lr),
        stiefel: stiefel(retraction),
        ..Default::default()
    }
}

/// A = Q diag(lambda) Q^T with lambda = 10, 9, 8, then 3 .. 1 spread: a clear gap.
fn spd() -> (DMatrix<f64>, f64) {
    let q = gaussian(N, N, 1).qr().q();
    let lambda: Vec<f64> = (0..N)
        .map(|i| {
            if i < R {
                10.0 - i as f64
            } else {
                3.0 - 2.0 * i as f64 / N as f64
            }
        })
        .collect();
    let a =
        &q * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(lambda.clone())) * q.transpose();
    (a, lambda[..R].iter().sum())
}

fn eigen_gap(x: &DMatrix<f64>, a: &DMatrix<f64>, optimum: f64) -> f64 {
    (optimum - (x.transpose() * a * x).trace()) / optimum
}

#[test]
fn leading_eigenspace_every_retraction() {
    let (a, optimum) = spd();
    // minimise -tr(X^T A X) / 2: Euclidean gradient -A X.
    let egrad = |x: &DMatrix<f64>| -(&a * x);
    for kind in Retraction::all(6) {
        let mut layer = start();
        let mut opt = SdsSgd::new_with_stiefel(&layer, sgd(0.05, kind), |p| p == "weight").unwrap();
        descend(&mut opt, &mut layer, 400, egrad);
        let gap = eigen_gap(&point(&layer), &a, optimum);
        assert!(gap <= 1e-4, "SGD {kind:?}: relative gap {gap:e}");

        let mut layer = start();
        let mut opt =
            SdsAdam::new_with_stiefel(&layer, adam(0.05, kind), |p| p == "weight").unwrap();
        for _ in 0..10 {
            descend(&mut opt, &mut layer, 100, egrad);
            opt.cfg.groups.bases_lr *= 0.5; // a schedule through the public config
        }
        let gap = eigen_gap(&point(&layer), &a, optimum);
        assert!(gap <= 1e-4, "Adam {kind:?}: relative gap {gap:e}");
    }
}

#[test]
fn orthogonal_procrustes_every_retraction() {
    let a = gaussian(N, N, 2).qr().q();
    let b = gaussian(N, R, 4);
    let b = &b / b.norm(); // scale-free solution; keeps the first steps moderate
    let svd = (a.transpose() * &b).svd(true, true);
    let solution = svd.u.unwrap() * svd.v_t.unwrap();
    // minimise ||A X - B||^2 / 2: Euclidean gradient A^T (A X - B).
    let egrad = |x: &DMatrix<f64>| a.transpose() * (&a * x - &b);
    for kind in Retraction::all(6) {
        let mut layer = start();
        let mut opt = SdsSgd::new_with_stiefel(&layer, sgd(0.2, kind), |p| p == "weight").unwrap();
        descend(&mut opt, &mut layer, 300, egrad);
        let err = (point(&layer) - &solution).norm();
        assert!(
            err <= 1e-6,
            "SGD {kind:?}: distance to the solution {err:e}"
        );

        let mut layer = start();
        let mut opt =
            SdsAdam::new_with_stiefel(&layer, adam(0.05, kind), |p| p == "weight").unwrap();
        for _ in 0..10 {
            descend(&mut opt, &mut layer, 100, egrad);
            opt.cfg.groups.bases_lr *= 0.5;
        }
        let err = (point(&layer) - &solution).norm();
        assert!(
            err <= 1e-4,
            "Adam {kind:?}: distance to the solution {err:e}"
        );
    }
}

/// 20,000 f32 SdsAdam steps with Qr on noisy gradients; the orthogonality error stays
/// below 1e-5 with and without re-orthonormalisation every 100 steps.
#[test]
fn orthogonality_over_20000_f32_steps() {
    type Layer32 = layer_type!(f32);
    let dev = Cpu::seed_from_u64(9);
    for reortho in [None, Some(100)] {
        let mut layer: Layer32 = dev.build_module::<Linear<R, N>, f32>();
        let x: Tensor<Rank2<N, R>, f32, Cpu> = random_point(&dev, (Const, Const), 3).unwrap();
        layer.weight.copy_from(&x.as_vec());
        let cfg = SdsAdamConfig {
            groups: ParamGroups::uniform(1e-2),
            stiefel: StiefelConfig {
                retraction: Retraction::Qr,
                reorthonormalize_every: reortho,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut opt = SdsAdam::new_with_stiefel(&layer, cfg, |p| p == "weight").unwrap();
        let mut worst = 0.0f64;
        for step in 0..20_000 {
            let mut grads = layer.alloc_grads();
            let g: Tensor<Rank2<N, R>, f32, Cpu> = dev.sample_normal();
            grads
                .get_or_alloc_mut(&layer.weight)
                .unwrap()
                .copy_from_slice(&g.as_vec());
            opt.update(&mut layer, &grads).unwrap();
            if step % 100 == 99 {
                worst = worst.max(orthogonality_error(&layer.weight));
            }
        }
        let last = orthogonality_error(&layer.weight);
        println!("f32, 20000 Qr steps, re-orthonormalise every {reortho:?}: final {last:.2e}, worst {worst:.2e}");
        assert!(worst <= 1e-5 && last <= 1e-5, "{reortho:?}: {worst:e}");
    }
}
