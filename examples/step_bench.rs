//! Times one optimizer step on one n x r Stiefel tensor (Cpu, f32) and prints JSON lines
//! `{"opt","retraction","n","r","threads","median_us"}`, with dfdx's own Adam step on the
//! same tensor (`"opt":"dfdx_adam"`) measured in the same run, in alternating batches of
//! about 2 ms ([`timing::paired_median_ns`]).
//!
//! ```text
//! cargo run --release --example step_bench -- --rows 4096 --rank 16 --steps 200 \
//!     --opt adam --retraction qr --second-moment elementwise
//! ```
//!
//! Shapes: rows in {1024, 4096, 16384}, rank in {4, 16, 64} (dfdx modules need constant
//! shapes). `--retraction` takes `qr`, `cholesky_qr2`, `polar`, `newton_schulz`,
//! `cayley`, `exp`; `--opt` takes `adam` or `sgd`.
//!
//! `--adapter` times one whole adapter instead (two `rows x rank` bases and a core): the
//! default basis-update step on a full core (`"opt":"sds_adam_basis_update"`) against the
//! per-tensor step on a diagonal core (`"opt":"sds_adam_per_tensor_diag"`, the crate's
//! step before the basis update), alternated in the same run, with the same settings.

#[path = "common/basis.rs"]
mod basis;
#[path = "common/timing.rs"]
mod timing;

use basis::{AdapterFactors, Basis};
use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::nn::{CoreKind, DiagonalCore, FullCore};
use sds_lora::optim::{
    Momentum, ParamGroups, SdsAdam, SdsAdamConfig, SdsSgd, SdsSgdConfig, SecondMoment,
    StiefelConfig,
};
use sds_lora::stiefel::{random_point, Retraction};
use timing::paired_median_ns;

struct Args {
    rows: usize,
    rank: usize,
    steps: usize,
    opt: String,
    retraction: Retraction,
    second_moment: SecondMoment,
    adapter: bool,
}

fn parse() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str, default: &str| -> String {
        match args.iter().position(|a| a == flag) {
            Some(i) => args
                .get(i + 1)
                .cloned()
                .unwrap_or_else(|| panic!("{flag} needs a value")),
            None => default.to_string(),
        }
    };
    let num = |flag: &str, default: &str| -> usize {
        get(flag, default)
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: not a number"))
    };
    let retraction = get("--retraction", "qr");
    Args {
        rows: num("--rows", "4096"),
        rank: num("--rank", "16"),
        steps: num("--steps", "200"),
        opt: get("--opt", "adam"),
        retraction: Retraction::from_name(&retraction, 5)
            .unwrap_or_else(|| panic!("--retraction: unknown {retraction}")),
        second_moment: match get("--second-moment", "elementwise").as_str() {
            "elementwise" => SecondMoment::Elementwise,
            "matrix" => SecondMoment::Matrix,
            other => panic!("--second-moment: elementwise or matrix, not {other}"),
        },
        adapter: args.iter().any(|a| a == "--adapter"),
    }
}

fn run<const N: usize, const R: usize>(a: &Args) {
    let dev = Cpu::default();
    let x: Tensor<Rank2<N, R>, f32, Cpu> = random_point(&dev, (Const, Const), 1).unwrap();
    let mut model = Basis { basis_out: x };
    let mut grads = model.alloc_grads();
    let g: Tensor<Rank2<N, R>, f32, Cpu> = dev.sample_normal();
    let scale = 1.0 / ((N * R) as f32).sqrt();
    let g_data: Vec<f32> = g.as_vec().iter().map(|v| v * scale).collect();
    grads
        .get_or_alloc_mut(&model.basis_out)
        .unwrap()
        .copy_from_slice(&g_data);
    let stiefel = StiefelConfig {
        retraction: a.retraction,
        ..StiefelConfig::default()
    };
    // dfdx's Adam on a copy of the model with the same gradients (its own tensor ids).
    let mut theirs_model = Basis {
        basis_out: model.basis_out.clone() * 1.0,
    };
    let mut theirs_grads = theirs_model.alloc_grads();
    theirs_grads
        .get_or_alloc_mut(&theirs_model.basis_out)
        .unwrap()
        .copy_from_slice(&g_data);
    let mut adam = Adam::new(&theirs_model, AdamConfig::default());
    let dfdx_step = || adam.update(&mut theirs_model, &theirs_grads).unwrap();
    // Batches of about 2 ms: `steps` steps make `samples` batches of about 10 steps.
    let samples = a.steps.div_ceil(10);
    let (ours, theirs) = match a.opt.as_str() {
        "adam" => {
            let cfg = SdsAdamConfig {
                groups: ParamGroups::uniform(1e-3),
                second_moment: a.second_moment,
                stiefel,
                ..Default::default()
            };
            let mut opt = SdsAdam::new(&model, cfg).unwrap();
            paired_median_ns(
                samples,
                || opt.update(&mut model, &grads).unwrap(),
                dfdx_step,
            )
        }
        "sgd" => {
            let mut cfg = SdsSgdConfig {
                groups: ParamGroups::uniform(1e-2),
                stiefel,
                ..Default::default()
            };
            cfg.rule.momentum = Some(Momentum::Classic(0.9));
            let mut opt = SdsSgd::new(&model, cfg).unwrap();
            paired_median_ns(
                samples,
                || opt.update(&mut model, &grads).unwrap(),
                dfdx_step,
            )
        }
        other => panic!("--opt: adam or sgd, not {other}"),
    };
    let (ours, theirs) = (ours / 1e3, theirs / 1e3);
    let threads = threads();
    let opt_name = match (a.opt.as_str(), a.second_moment) {
        ("adam", SecondMoment::Matrix) => "sds_adam_matrix",
        ("adam", _) => "sds_adam",
        _ => "sds_sgd_momentum",
    };
    let line = |opt: &str, retraction: &str, us: f64| {
        println!(
            r#"{{"opt":"{opt}","retraction":"{retraction}","n":{N},"r":{R},"threads":{threads},"median_us":{us:.1}}}"#
        )
    };
    line(opt_name, a.retraction.name(), ours);
    line("dfdx_adam", "none", theirs);
    eprintln!("ratio {opt_name}/dfdx_adam = {:.2}", ours / theirs);
}

/// An adapter with two `[N, R]` bases and a core of kind `K` holding `diag(s)`, with fixed
/// random gradients.
fn adapter<const N: usize, const R: usize, K: CoreKind<R>>(
    dev: &Cpu,
) -> (AdapterFactors<N, R, K, f32, Cpu>, Gradients<f32, Cpu>) {
    let s: Vec<f64> = (0..R).map(|k| 1.0 / (1.0 + k as f64)).collect();
    let core = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(s));
    let mut model = AdapterFactors {
        basis_out: random_point(dev, (Const, Const), 1).unwrap(),
        core: dev.zeros(),
        basis_in: random_point(dev, (Const, Const), 2).unwrap(),
    };
    model.core.copy_from(&K::data_of::<f32>(&core).unwrap());
    let mut grads = model.alloc_grads();
    let scale = 1.0 / ((N * R) as f32).sqrt();
    let fill = |len: usize, seed: u64| -> Vec<f32> {
        let g: Tensor<(usize,), f32, Cpu> = Cpu::seed_from_u64(seed).sample_normal_like(&(len,));
        g.as_vec().iter().map(|v| v * scale).collect()
    };
    let (gu, gv) = (fill(N * R, 3), fill(N * R, 4));
    let gs = fill(model.core.as_vec().len(), 5);
    grads
        .get_or_alloc_mut(&model.basis_out)
        .unwrap()
        .copy_from_slice(&gu);
    grads
        .get_or_alloc_mut(&model.basis_in)
        .unwrap()
        .copy_from_slice(&gv);
    grads
        .get_or_alloc_mut(&model.core)
        .unwrap()
        .copy_from_slice(&gs);
    (model, grads)
}

/// `--adapter`: the basis-update step on a full core against the per-tensor step on a
/// diagonal core, SdsAdam, alternated.
fn run_adapter<const N: usize, const R: usize>(a: &Args) {
    let dev = Cpu::default();
    let (mut full, full_grads) = adapter::<N, R, FullCore>(&dev);
    let (mut diag, diag_grads) = adapter::<N, R, DiagonalCore>(&dev);
    let cfg = SdsAdamConfig {
        groups: ParamGroups::uniform(1e-3),
        second_moment: a.second_moment,
        stiefel: StiefelConfig {
            retraction: a.retraction,
            ..StiefelConfig::default()
        },
        ..Default::default()
    };
    let mut basis_update = SdsAdam::new(&full, cfg).unwrap();
    let mut per_tensor = SdsAdam::new(&diag, cfg).unwrap();
    let (new, old) = paired_median_ns(
        a.steps.div_ceil(10),
        || basis_update.update(&mut full, &full_grads).unwrap(),
        || per_tensor.update(&mut diag, &diag_grads).unwrap(),
    );
    for (opt, us) in [
        ("sds_adam_basis_update", new / 1e3),
        ("sds_adam_per_tensor_diag", old / 1e3),
    ] {
        println!(
            r#"{{"opt":"{opt}","retraction":"{}","n":{N},"r":{R},"threads":{},"median_us":{us:.1}}}"#,
            a.retraction.name(),
            threads()
        );
    }
    eprintln!("ratio basis_update/per_tensor_diag = {:.2}", new / old);
}

/// The thread count the step may use.
fn threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "1".into())
    })
}

fn main() {
    let a = parse();
    macro_rules! shapes {
        ($(($n:literal, $r:literal)),*) => {
            match (a.rows, a.rank) {
                $(($n, $r) if a.adapter => run_adapter::<$n, $r>(&a),)*
                $(($n, $r) => run::<$n, $r>(&a),)*
                (n, r) => panic!("unsupported shape {n} x {r}: rows in 1024, 4096, 16384; rank in 4, 16, 64"),
            }
        };
    }
    shapes!(
        (1024, 4),
        (1024, 16),
        (1024, 64),
        (4096, 4),
        (4096, 16),
        (4096, 64),
        (16384, 4),
        (16384, 16),
        (16384, 64)
    );
}
