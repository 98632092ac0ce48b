//! The low-rank least-squares problem of the `condition_number` and `optimizer_ablation`
//! examples: a 256 x 256 layer, rank-8 adapters, `y = T x` on a fixed Gaussian batch, and
//! the full fine-tuning gradient `G = (dW - T) Sigma` applied in factored form.
#![allow(dead_code)] // shared by several examples; each uses part of it

use dfdx::prelude::*;
use nalgebra::{DMatrix, DVector};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use sds_lora::nn::{CoreKind, CoreRef};

pub const N: usize = 256;
pub const RANK: usize = 8;
pub const SAMPLES: usize = 1024;

pub type Mat = DMatrix<f64>;

pub fn gaussian(rows: usize, cols: usize, rng: &mut StdRng) -> Mat {
    Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
}

pub fn diag(v: &[f64]) -> Mat {
    Mat::from_diagonal(&DVector::from_column_slice(v))
}

pub fn cond(m: &Mat) -> f64 {
    let s = sds_lora::diagnostics::singular_values(m);
    s[0] / s[s.len() - 1]
}

/// The fixed data of one problem.
pub struct Problem {
    /// `Sigma = X X^T / samples`.
    pub sigma: Mat,
    /// `T = t_left t_right^T`.
    pub t_left: Mat,
    pub t_right: Mat,
    pub t: Mat,
    /// `dW0 = P D Q^T`.
    pub p: Mat,
    pub d: Vec<f64>,
    pub q: Mat,
}

impl Problem {
    /// `kappa_t`: condition number of the target's spectrum.
    pub fn new(kappa_t: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(1);
        let x = gaussian(N, SAMPLES, &mut rng);
        let sigma = &x * x.transpose() / SAMPLES as f64;
        let basis = |rng: &mut StdRng| gaussian(N, 2 * RANK, rng).qr().q();
        let (pp, qq) = (basis(&mut rng), basis(&mut rng));
        let (p, q) = (
            pp.columns(0, RANK).into_owned(),
            qq.columns(0, RANK).into_owned(),
        );
        let spread = |k: f64| -> Vec<f64> {
            (0..RANK)
                .map(|i| k.powf(-(i as f64) / (RANK - 1) as f64))
                .collect()
        };
        let d = spread(10.0);
        // T: half the directions shared with dW0, half rotated by 60 degrees into new ones.
        let (c, s) = (0.5f64, 0.75f64.sqrt());
        let rotate = |b: &Mat, full: &Mat| {
            Mat::from_fn(N, RANK, |i, j| {
                if j < RANK / 2 {
                    b[(i, j)]
                } else {
                    c * b[(i, j)] + s * full[(i, j + RANK)]
                }
            })
        };
        let (pt, qt) = (rotate(&p, &pp), rotate(&q, &qq));
        let dt: Vec<f64> = spread(kappa_t).iter().map(|v| 1.5 * v).collect();
        let t_left = pt * diag(&dt);
        let t = &t_left * qt.transpose();
        Self {
            sigma,
            t_left,
            t_right: qt,
            t,
            p,
            d,
            q,
        }
    }

    pub fn dw0(&self) -> Mat {
        &self.p * diag(&self.d) * self.q.transpose()
    }

    /// `(B0, A0)` with `cond(B0) ~ cond(A0) ~ kappa_f`.
    pub fn factors(&self, kappa_f: f64) -> (Mat, Mat) {
        // log cond(B0) = 2 lambda + ln(10) / 2 for alternating m = exp(+-lambda).
        let lambda = ((kappa_f.ln() - 10f64.ln() / 2.0) / 2.0).max(0.0);
        let m: Vec<f64> = (0..RANK)
            .map(|i| {
                if i % 2 == 0 {
                    lambda.exp()
                } else {
                    (-lambda).exp()
                }
            })
            .collect();
        let sqrt_d: Vec<f64> = self.d.iter().map(|v| v.sqrt()).collect();
        let b0 = &self.p * diag(&sqrt_d) * diag(&m);
        let inv_m: Vec<f64> = m.iter().map(|v| 1.0 / v).collect();
        let a0 = diag(&inv_m) * diag(&sqrt_d) * self.q.transpose();
        (b0, a0)
    }

    /// `G X` for `dW = left right^T`, `G = (dW - T) Sigma`, without forming `G`.
    pub fn g_times(&self, (l, r): (&Mat, &Mat), x: &Mat) -> Mat {
        let sx = &self.sigma * x;
        l * (r.transpose() * &sx) - &self.t_left * (self.t_right.transpose() * &sx)
    }

    /// `Y^T G`.
    pub fn t_times_g(&self, (l, r): (&Mat, &Mat), y: &Mat) -> Mat {
        ((y.transpose() * l) * r.transpose()
            - (y.transpose() * &self.t_left) * self.t_right.transpose())
            * &self.sigma
    }

    pub fn full_gradient(&self, dw: &Mat) -> Mat {
        (dw - &self.t) * &self.sigma
    }

    pub fn rel_error(&self, dw: &Mat) -> f64 {
        (dw - &self.t).norm() / self.t.norm()
    }
}

pub fn host<const A: usize, const B: usize>(t: &Tensor<Rank2<A, B>, f64, Cpu>) -> Mat {
    Mat::from_row_slice(A, B, &t.as_vec())
}

pub fn row_major(m: &Mat) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

/// An `SdsLinear` of this problem's shape with a core of kind `K`.
pub type SdsLayer<K> = sds_lora::nn::SdsLinear<N, N, RANK, f64, Cpu, K>;

/// The gradients an `SdsLinear` hands `(U, S, V)` for this problem (the layer's backward
/// formulas with `Gy^T x = G`): decoupled `(c G V, c U^T G V, c G^T U)` or coupled
/// `(c G V S^T, c U^T G V, c G^T U S)`; the core's as its tensor holds it (row-major
/// `[r, r]`, or the diagonal for a diagonal core).
pub fn sds_gradients<K: CoreKind<RANK>>(
    problem: &Problem,
    l: &SdsLayer<K>,
) -> (Mat, Vec<f64>, Mat) {
    let c = l.scale();
    let (u, v) = (host(&l.basis_out), host(&l.basis_in));
    let s = l.core_matrix();
    let left = &u * &s * c;
    let pair = (&left, &v);
    let gv = problem.g_times(pair, &v);
    let gtu = problem.t_times_g(pair, &u).transpose();
    let ds = u.transpose() * &gv * c;
    let ds = match K::view(&l.core) {
        CoreRef::Full(_) => row_major(&ds),
        CoreRef::Diagonal(_) => ds.diagonal().as_slice().to_vec(),
    };
    let (du, dv) = match l.gradient_mode {
        sds_lora::nn::GradientMode::Decoupled => (&gv * c, &gtu * c),
        sds_lora::nn::GradientMode::Coupled => (&gv * s.transpose() * c, &gtu * &s * c),
    };
    (du, ds, dv)
}

/// Writes `(dU, dS, dV)` as the layer's gradients.
pub fn sds_grads<K: CoreKind<RANK>>(
    l: &SdsLayer<K>,
    (du, ds, dv): &(Mat, Vec<f64>, Mat),
) -> Gradients<f64, Cpu> {
    let mut grads = l.alloc_grads();
    grads
        .get_or_alloc_mut(&l.basis_out)
        .unwrap()
        .copy_from_slice(&row_major(du));
    grads
        .get_or_alloc_mut(&l.basis_in)
        .unwrap()
        .copy_from_slice(&row_major(dv));
    grads.get_or_alloc_mut(&l.core).unwrap().copy_from_slice(ds);
    grads
}

/// An `SdsLinear` holding the exact factorisation of `(B0, A0)`.
pub fn sds_from<K: CoreKind<RANK>>(dev: &Cpu, (b0, a0): (&Mat, &Mat)) -> SdsLayer<K> {
    let mut l = dev.build_module::<sds_lora::nn::builders::SdsLinear<N, N, RANK, K>, f64>();
    let bt: Tensor<Rank2<N, RANK>, f64, Cpu> = dev.tensor_from_vec(row_major(b0), (Const, Const));
    let at: Tensor<Rank2<RANK, N>, f64, Cpu> = dev.tensor_from_vec(row_major(a0), (Const, Const));
    l.set_from_lora(&bt, &at, 1.0).expect("a finite LoRA pair");
    l
}
