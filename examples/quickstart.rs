//! Quick start: Riemannian gradient ascent on the Stiefel manifold.
//!
//! Finds the leading r-dimensional eigenspace of a symmetric positive definite matrix
//! `A` (n x n) by maximising `f(X) = tr(X^T A X) / 2` over `St(n, r)`: the Euclidean
//! gradient `A X` is projected onto the tangent space, a step is taken along it and
//! retracted back onto the manifold, with each of the six retractions. The optimum is
//! the sum of the r largest eigenvalues over 2; the table reports the relative gap.
//!
//! `cargo run --release --example quickstart`

use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::stiefel::{orthogonality_error, project_tangent, random_point, retract, Retraction};
use std::time::Instant;

const N: usize = 256;
const R: usize = 8;
const STEPS: usize = 300;

type Mat = Tensor<(usize, usize), f64, Cpu>;

fn main() {
    let dev = Cpu::default();
    // A = Q diag(lambda) Q^T with lambda_i = 1 / (1 + i / 4): a clear but modest gap.
    let q: Mat = random_point(&dev, (N, N), 7).unwrap();
    let qh = DMatrix::from_row_slice(N, N, &q.as_vec());
    let lambda: Vec<f64> = (0..N).map(|i| 1.0 / (1.0 + i as f64 / 4.0)).collect();
    let a =
        &qh * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(lambda.clone())) * qh.transpose();
    let a_t: Tensor<(usize, usize), f64, Cpu> =
        dev.tensor_from_vec(a.transpose().as_slice().to_vec(), (N, N));
    let optimum: f64 = lambda[..R].iter().sum::<f64>() / 2.0;
    let objective = |x: &Mat| -> f64 {
        let xh = DMatrix::from_row_slice(N, R, &x.as_vec());
        (xh.transpose() * &a * &xh).trace() / 2.0
    };

    println!("Leading {R}-dimensional eigenspace of a {N} x {N} SPD matrix, {STEPS} steps of");
    println!("Riemannian gradient ascent (step 2.0) from the same random start.\n");
    println!("| retraction | relative gap | orthogonality error | time (ms) |");
    println!("|---|---|---|---|");
    for kind in Retraction::all(5) {
        let mut x: Mat = random_point(&dev, (N, R), 1).unwrap();
        let start = Instant::now();
        for _ in 0..STEPS {
            let egrad = a_t.clone().matmul(x.clone()); // A X (A symmetric)
            let step = project_tangent(&x, &egrad).unwrap() * 2.0;
            x = retract(&x, &step, kind).unwrap();
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let gap = (optimum - objective(&x)) / optimum;
        println!(
            "| {:<13} | {gap:.2e} | {:.2e} | {ms:.1} |",
            kind.name(),
            orthogonality_error(&x)
        );
    }
}
