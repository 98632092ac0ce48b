//! Does convergence depend on how an adapter's product is split between its factors, on
//! the target's spectrum, or on the start? (arXiv 2606.16454's claim: LoRA's rate degrades
//! with the factors' condition number, SDS-LoRA's does not.) f64, full batch,
//! deterministic.
//!
//! Problem: least squares `y = T x` on a fixed Gaussian batch `X` (256 x 1024), adapters of
//! rank 8 on a 256 x 256 layer. The target `T` has rank 8 (so that rank-8 adapters can
//! reach it) with half its singular directions shared with `dW0` and half rotated away.
//! Two starts (field `"start"`):
//! - `warm`: every method starts from the same `dW0 = B0 A0` (singular values spread over
//!   10x), the factors split unevenly, `B0 = P D^(1/2) M`, `A0 = M^-1 D^(1/2) Q^T`, `M`
//!   diagonal with alternating entries `exp(+-lambda)` chosen so that
//!   `cond(B0) ~ cond(A0) ~ kappa_f` (exact equality is impossible below sqrt(10), where
//!   the balanced split is used; the measured values are printed);
//! - `zero`: how adapters are initialised: `dW = 0`. LoRA and the dual branch take
//!   `B = 0` and `A = A0` (condition number `kappa_f`; the dual branch's `Q_A` spans `A0`'s
//!   rows, `Q_B` is random); SDS layers take random bases and a zero core.
//!
//! Methods: LoRA; LoRA with the Riemannian preconditioner of Zhang and Pilanci (2024); the
//! paper's dual-branch layer (`SdsDualBranch`, bases refreshed every 100 steps);
//! **SDS-LoRA**: the crate's default (`SdsLinear` with a full core, `SdsSgd`/`SdsAdam` with
//! the basis-update step); and three ablations, all with the per-tensor Riemannian step:
//! diagonal core (`SdsDiagLinear`), full core, and full core with coupled gradients.
//! Gradients are the layers' backward formulas evaluated in factored form (`O(n r^2)` a
//! step, never forming the `256 x 256` gradient), fed to the real optimizers.
//!
//! Each method takes its best learning rate from a fixed grid; a run ends at the tolerance,
//! on divergence, or when its lowest error has not fallen by 1% in 500 steps. Tables: steps to
//! `||dW - T||_F / ||T||_F <= 1e-6` with gradient descent (`gd`), with Adam (`adam`), and
//! over the target's own condition number `kappa_t` at `kappa_f = 1` with gradient descent
//! (`gd_target`), each for both starts; diagnostics (effective rank of the factor gradients,
//! alignment of the change of `dW` the first step made with the full gradient); JSON
//! lines; an SVG.
//!
//! `cargo run --release --example condition_number [-- --budget 3000]`

#[path = "common/lowrank.rs"]
mod lowrank;
#[path = "common/plot.rs"]
mod plot;

use dfdx::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use dfdx::prelude::*;
use lowrank::{
    cond, host, row_major, sds_from, sds_gradients, sds_grads, Mat, Problem, SdsLayer, N, RANK,
    SAMPLES,
};
use sds_lora::diagnostics::{alignment, effective_rank};
use sds_lora::nn::{builders, CoreKind, DiagonalCore, FullCore, GradientMode, LoraLinear, Phase};
use sds_lora::nn::{Adapter, SdsDualBranch};
use sds_lora::optim::{AdapterStep, ParamGroups, SdsAdam, SdsAdamConfig, SdsSgd, SdsSgdConfig};

const TOL: f64 = 1e-6;
const REFRESH_EVERY: usize = 100;
const KAPPAS: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
/// A run whose lowest error has not fallen by 1% over this many steps has stalled and
/// ends (a slow but steady run is not cut).
const STALL_STEPS: usize = 500;
const GD_GRID: [f64; 10] = [0.01, 0.03, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 3.0];
const ADAM_GRID: [f64; 7] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1];

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Lora,
    LoraPrecond,
    DualBranch,
    SdsLora,
    DiagonalPerTensor,
    FullPerTensor,
    CoupledPerTensor,
}

impl Method {
    const ALL: [Method; 7] = [
        Method::Lora,
        Method::LoraPrecond,
        Method::DualBranch,
        Method::SdsLora,
        Method::DiagonalPerTensor,
        Method::FullPerTensor,
        Method::CoupledPerTensor,
    ];
    fn name(self) -> &'static str {
        match self {
            Method::Lora => "LoRA",
            Method::LoraPrecond => "LoRA + Riemannian precond.",
            Method::DualBranch => "dual-branch (paper)",
            Method::SdsLora => "SDS-LoRA",
            Method::DiagonalPerTensor => "ablation: diagonal core, per-tensor step",
            Method::FullPerTensor => "ablation: full core, per-tensor step",
            Method::CoupledPerTensor => "ablation: full core, coupled, per-tensor step",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Rule {
    Gd,
    Adam,
}

#[derive(Clone, Copy, PartialEq)]
enum Start {
    Warm,
    Zero,
}

impl Start {
    fn name(self) -> &'static str {
        match self {
            Start::Warm => "warm",
            Start::Zero => "zero",
        }
    }
}

/// One run's outcome.
struct Outcome {
    /// Steps to the tolerance, if reached.
    steps: Option<usize>,
    /// Relative error after each step.
    curve: Vec<f64>,
    /// Effective ranks of the two factor gradients and the alignment of the step with `-G`,
    /// at step 0.
    diagnostics: (f64, f64, f64),
}

impl Outcome {
    fn lowest_error(&self) -> f64 {
        self.curve.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

type Lora = LoraLinear<N, N, RANK, f64, Cpu>;
type Dual = SdsDualBranch<N, N, RANK, f64, Cpu>;

/// The model of one method, holding its factors.
enum Model {
    Lora(Lora),
    Full(SdsLayer<FullCore>),
    Diagonal(SdsLayer<DiagonalCore>),
    Dual(Dual),
}

/// An optimizer bound to its model's type: one step, false if it refused the step.
type Stepper<M> = Box<dyn FnMut(&mut M, &Gradients<f64, Cpu>) -> bool>;

fn stepper<M, O: Optimizer<M, Cpu, f64> + 'static>(mut opt: O) -> Stepper<M> {
    Box::new(move |m, g| opt.update(m, g).is_ok())
}

/// Writes `m` (row-major) as `t`'s gradient.
fn set_grad<S: Shape>(grads: &mut Gradients<f64, Cpu>, t: &Tensor<S, f64, Cpu>, m: &Mat) {
    grads
        .get_or_alloc_mut(t)
        .unwrap()
        .copy_from_slice(&row_major(m));
}

impl Model {
    fn delta_weight(&self) -> Mat {
        match self {
            Model::Lora(l) => host(&l.lora_b) * host(&l.lora_a) * l.scale(),
            Model::Full(l) => host(&l.delta_weight().unwrap()),
            Model::Diagonal(l) => host(&l.delta_weight().unwrap()),
            Model::Dual(l) => l.delta_weight(),
        }
    }
}

/// The settings of one run.
#[derive(Clone, Copy)]
struct Setup {
    method: Method,
    rule: Rule,
    start: Start,
    lr: f64,
    kappa_f: f64,
    budget: usize,
}

/// An SDS layer of kind `K` for `setup`, with its optimizer (every group at `lr`).
fn sds_model<K: CoreKind<RANK>>(
    dev: &Cpu,
    setup: Setup,
    factors: (&Mat, &Mat),
) -> (SdsLayer<K>, Stepper<SdsLayer<K>>) {
    let mut l = match setup.start {
        Start::Warm => sds_from::<K>(dev, factors),
        Start::Zero => dev.build_module::<builders::SdsLinear<N, N, RANK, K>, f64>(),
    };
    if setup.method == Method::CoupledPerTensor {
        l.gradient_mode = GradientMode::Coupled;
    }
    let groups = ParamGroups::uniform(setup.lr);
    let step = match setup.method {
        Method::SdsLora => AdapterStep::BasisUpdate,
        _ => AdapterStep::PerTensor,
    };
    let opt = match setup.rule {
        Rule::Gd => {
            let mut cfg = SdsSgdConfig {
                groups,
                ..Default::default()
            };
            cfg.stiefel.adapter_step = step;
            stepper(SdsSgd::new(&l, cfg).unwrap())
        }
        Rule::Adam => {
            let mut cfg = SdsAdamConfig {
                groups,
                ..Default::default()
            };
            cfg.stiefel.adapter_step = step;
            stepper(SdsAdam::new(&l, cfg).unwrap())
        }
    };
    (l, opt)
}

/// dfdx's plain gradient descent or Adam at `lr`.
fn dfdx_opt<M: dfdx::nn::tensor_collection::TensorCollection<f64, Cpu> + 'static>(
    m: &M,
    rule: Rule,
    lr: f64,
) -> Stepper<M> {
    match rule {
        Rule::Gd => stepper(Sgd::new(
            m,
            SgdConfig {
                lr,
                ..Default::default()
            },
        )),
        Rule::Adam => stepper(Adam::new(
            m,
            AdamConfig {
                lr,
                ..Default::default()
            },
        )),
    }
}

/// The effective ranks of the two factor gradients, at the first step only.
fn ranks_at_start(step: usize, first: &Mat, second: &Mat) -> (f64, f64) {
    match step {
        0 => (effective_rank(first), effective_rank(second)),
        _ => (0.0, 0.0),
    }
}

fn run(problem: &Problem, setup: Setup) -> Outcome {
    let dev = Cpu::seed_from_u64(5);
    let (b0, a0) = problem.factors(setup.kappa_f);
    let zero_b = Mat::zeros(N, RANK);
    let b_start = match setup.start {
        Start::Warm => &b0,
        Start::Zero => &zero_b,
    };
    let mut lora_opt = None;
    let mut dual_opt = None;
    let mut full_opt = None;
    let mut diagonal_opt = None;
    let mut model = match setup.method {
        Method::Lora | Method::LoraPrecond => {
            let mut l = dev.build_module::<builders::LoraLinear<N, N, RANK>, f64>();
            l.lora_b.copy_from(&row_major(b_start));
            l.lora_a.copy_from(&row_major(&a0));
            lora_opt = Some(dfdx_opt(&l, setup.rule, setup.lr));
            Model::Lora(l)
        }
        Method::DualBranch => {
            let mut l = dev.build_module::<builders::SdsDualBranch<N, N, RANK>, f64>();
            match setup.start {
                Start::Warm => {
                    l.lora_b.copy_from(&row_major(&b0));
                    l.lora_a.copy_from(&row_major(&a0));
                    l.reparameterize().expect("warm-up phase");
                }
                Start::Zero => {
                    // dW = 0 through zero factors and constant bases: Q_A spans A0's rows.
                    let qa = a0.transpose().qr().q();
                    let qb = lowrank::gaussian(N, RANK, &mut rand::SeedableRng::seed_from_u64(9))
                        .qr()
                        .q();
                    l.q_a.copy_from(&row_major(&qa));
                    l.q_b.copy_from(&row_major(&qb));
                    l.lora_a.copy_from(&row_major(&Mat::zeros(RANK, N)));
                    l.lora_b.copy_from(&row_major(&zero_b));
                    l.phase = Phase::Dual;
                }
            }
            dual_opt = Some(dfdx_opt(&l, setup.rule, setup.lr));
            Model::Dual(l)
        }
        Method::DiagonalPerTensor => {
            let (l, opt) = sds_model::<DiagonalCore>(&dev, setup, (&b0, &a0));
            diagonal_opt = Some(opt);
            Model::Diagonal(l)
        }
        Method::SdsLora | Method::FullPerTensor | Method::CoupledPerTensor => {
            let (l, opt) = sds_model::<FullCore>(&dev, setup, (&b0, &a0));
            full_opt = Some(opt);
            Model::Full(l)
        }
    };
    let mut curve = Vec::new();
    let mut diagnostics = (0.0, 0.0, 0.0);
    let mut steps = None;
    for step in 0..setup.budget {
        let before = (step == 0).then(|| {
            let dw = model.delta_weight();
            (problem.full_gradient(&dw), dw)
        });
        // dW = left right^T and the factor gradients (the layers' backward formulas).
        let (ok, ranks) = match &mut model {
            Model::Lora(l) => {
                let c = l.scale();
                let (b, a) = (host(&l.lora_b), host(&l.lora_a));
                let lr_pair = (&b, &a.transpose());
                let mut db = problem.g_times(lr_pair, &a.transpose()) * c; // c G A^T
                let mut da = problem.t_times_g(lr_pair, &b) * c; // c B^T G
                if setup.method == Method::LoraPrecond {
                    // Zhang and Pilanci: grad_B (A A^T + delta I)^-1, (B^T B + delta I)^-1 grad_A.
                    let damp = |g: &Mat| {
                        let delta = 1e-8 * g.trace().abs().max(1e-30);
                        (g + Mat::identity(RANK, RANK) * delta)
                            .try_inverse()
                            .expect("damped Gram")
                    };
                    db *= damp(&(&a * a.transpose()));
                    da = damp(&(b.transpose() * &b)) * da;
                }
                let ranks = ranks_at_start(step, &db, &da);
                let mut grads = l.alloc_grads();
                set_grad(&mut grads, &l.lora_b, &db);
                set_grad(&mut grads, &l.lora_a, &da);
                (lora_opt.as_mut().unwrap()(l, &grads), ranks)
            }
            Model::Dual(l) => {
                if step > 0 && step % REFRESH_EVERY == 0 {
                    l.refresh().expect("dual phase");
                }
                let k = l.scale();
                let (a, b, qa, qb) = (host(&l.lora_a), host(&l.lora_b), host(&l.q_a), host(&l.q_b));
                // dW = k (Q_B A + B Q_A^T) = [Q_B, B] [A^T, Q_A]^T k
                let mut left = Mat::zeros(N, 2 * RANK);
                left.columns_mut(0, RANK).copy_from(&(&qb * k));
                left.columns_mut(RANK, RANK).copy_from(&(&b * k));
                let mut right = Mat::zeros(N, 2 * RANK);
                right.columns_mut(0, RANK).copy_from(&a.transpose());
                right.columns_mut(RANK, RANK).copy_from(&qa);
                let pair = (&left, &right);
                let da = problem.t_times_g(pair, &qb) * k; // k Q_B^T G
                let db = problem.g_times(pair, &qa) * k; // k G Q_A
                let ranks = ranks_at_start(step, &db, &da);
                let mut grads = l.alloc_grads();
                set_grad(&mut grads, &l.lora_a, &da);
                set_grad(&mut grads, &l.lora_b, &db);
                (dual_opt.as_mut().unwrap()(l, &grads), ranks)
            }
            Model::Full(l) => {
                let g = sds_gradients(problem, l);
                let ranks = ranks_at_start(step, &g.0, &g.2);
                (full_opt.as_mut().unwrap()(l, &sds_grads(l, &g)), ranks)
            }
            Model::Diagonal(l) => {
                let g = sds_gradients(problem, l);
                let ranks = ranks_at_start(step, &g.0, &g.2);
                (diagonal_opt.as_mut().unwrap()(l, &sds_grads(l, &g)), ranks)
            }
        };
        let dw = model.delta_weight();
        if let Some((g, dw0)) = before {
            // The change of dW that this step made.
            diagnostics = (ranks.0, ranks.1, alignment(&g, &(&dw - dw0)));
        }
        let err = problem.rel_error(&dw);
        curve.push(err);
        if !ok || !err.is_finite() || err > 1e3 {
            break;
        }
        if err <= TOL {
            steps = Some(step + 1);
            break;
        }
        if step >= STALL_STEPS {
            let lowest = |c: &[f64]| c.iter().copied().fold(f64::INFINITY, f64::min);
            if lowest(&curve) > 0.99 * lowest(&curve[..=step - STALL_STEPS]) {
                break;
            }
        }
    }
    Outcome {
        steps,
        curve,
        diagnostics,
    }
}

/// The best run over a learning-rate grid: fewest steps, or if none reaches the tolerance,
/// the lowest error reached.
fn best(problem: &Problem, setup: Setup) -> (f64, Outcome) {
    let grid: &[f64] = match setup.rule {
        Rule::Gd => &GD_GRID,
        Rule::Adam => &ADAM_GRID,
    };
    // Grid points are independent runs: two at a time, one per core.
    let mut outcomes: Vec<(f64, Outcome)> = Vec::new();
    for pair in grid.chunks(2) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = pair
                .iter()
                .map(|&lr| scope.spawn(move || (lr, run(problem, Setup { lr, ..setup }))))
                .collect();
            outcomes.extend(handles.into_iter().map(|h| h.join().expect("run")));
        });
    }
    let key = |o: &Outcome| (o.steps.unwrap_or(usize::MAX), o.lowest_error());
    outcomes
        .into_iter()
        .min_by(|(_, a), (_, b)| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        })
        .expect("non-empty grid")
}

fn cell(o: &Outcome) -> String {
    match o.steps {
        Some(s) => s.to_string(),
        None => format!("e={:.1e}", o.lowest_error()),
    }
}

fn steps_json(o: &Outcome) -> String {
    o.steps
        .map(|s| s.to_string())
        .unwrap_or_else(|| "null".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let budget: usize = args
        .iter()
        .position(|a| a == "--budget")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--budget: a number"))
        .unwrap_or(3000);
    let start_time = std::time::Instant::now();
    let problem = Problem::new(10.0);
    println!(
        "256 x 256 layer, rank 8, {SAMPLES} samples; ||E|| / ||dW0|| = {:.2}, rank(E) = {}; tolerance {TOL:e}; budget {budget} steps; `e=` the lowest error where the tolerance is not reached\n",
        (&problem.t - problem.dw0()).norm() / problem.dw0().norm(),
        sds_lora::diagnostics::singular_values(&(&problem.t - problem.dw0())).iter().filter(|&&s| s > 1e-10).count()
    );
    println!("| kappa_f (target) | cond(B0) | cond(A0) |\n|---|---|---|");
    for &k in &KAPPAS {
        let (b0, a0) = problem.factors(k);
        println!("| {k} | {:.1} | {:.1} |", cond(&b0), cond(&a0));
    }
    let mut json = Vec::new();
    let mut svg_curves = Vec::new();
    for rule in [Rule::Gd, Rule::Adam] {
        let (table, title) = match rule {
            Rule::Gd => ("gd", "gradient descent (no momentum)"),
            Rule::Adam => ("adam", "Adam"),
        };
        for start in [Start::Warm, Start::Zero] {
            println!(
                "\nSteps to relative error {TOL:e}, {title}, {} start, best learning rate per cell:\n",
                start.name()
            );
            println!("| method | kappa_f = 1 | 10 | 100 | 1000 | lr (per kappa_f) |\n|---|---|---|---|---|---|");
            let mut diag_rows = Vec::new();
            for method in Method::ALL {
                let mut cells = Vec::new();
                let mut lrs = Vec::new();
                for &kappa_f in &KAPPAS {
                    let setup = Setup {
                        method,
                        rule,
                        start,
                        lr: 0.0,
                        kappa_f,
                        budget,
                    };
                    let (lr, o) = best(&problem, setup);
                    json.push(format!(
                        r#"{{"table":"{table}","start":"{}","method":"{}","kappa_f":{kappa_f},"lr":{lr},"steps":{},"final_rel_error":{:e},"lowest_rel_error":{:e},"eff_rank_grad_1":{:.3},"eff_rank_grad_2":{:.3},"alignment":{:.4}}}"#,
                        start.name(),
                        method.name(),
                        steps_json(&o),
                        o.curve.last().copied().unwrap_or(f64::NAN),
                        o.lowest_error(),
                        o.diagnostics.0,
                        o.diagnostics.1,
                        o.diagnostics.2
                    ));
                    cells.push(cell(&o));
                    lrs.push(format!("{lr}"));
                    if kappa_f == 1000.0 {
                        diag_rows.push(format!(
                            "| {} | {:.2} | {:.2} | {:.3} |",
                            method.name(),
                            o.diagnostics.0,
                            o.diagnostics.1,
                            o.diagnostics.2
                        ));
                        if rule == Rule::Gd && start == Start::Warm {
                            svg_curves.push((method.name().to_string(), o.curve));
                        }
                    }
                }
                println!(
                    "| {} | {} | {} |",
                    method.name(),
                    cells.join(" | "),
                    lrs.join(", ")
                );
            }
            println!("\nAt kappa_f = 1000, first step ({title}, {} start): effective rank of the two factor gradients (U/B, V/A) and alignment cos(-G, the change of dW the step made):\n", start.name());
            println!(
                "| method | eff. rank grad 1 | eff. rank grad 2 | alignment |\n|---|---|---|---|"
            );
            for r in diag_rows {
                println!("{r}");
            }
        }
    }
    let targets: Vec<Problem> = KAPPAS.iter().map(|&k| Problem::new(k)).collect();
    for start in [Start::Warm, Start::Zero] {
        println!(
            "\nSteps to {TOL:e} against the target's own condition number (spectrum of T), kappa_f = 1, gradient descent, {} start:\n",
            start.name()
        );
        println!("| method | kappa_t = 1 | 10 | 100 | 1000 |\n|---|---|---|---|---|");
        for method in Method::ALL {
            let cells: Vec<String> = targets
                .iter()
                .zip(KAPPAS)
                .map(|(p, kappa_t)| {
                    let setup = Setup {
                        method,
                        rule: Rule::Gd,
                        start,
                        lr: 0.0,
                        kappa_f: 1.0,
                        budget,
                    };
                    let (lr, o) = best(p, setup);
                    json.push(format!(
                        r#"{{"table":"gd_target","start":"{}","method":"{}","kappa_t":{kappa_t},"lr":{lr},"steps":{},"lowest_rel_error":{:e}}}"#,
                        start.name(),
                        method.name(),
                        steps_json(&o),
                        o.lowest_error()
                    ));
                    cell(&o)
                })
                .collect();
            println!("| {} | {} |", method.name(), cells.join(" | "));
        }
    }
    println!();
    for line in &json {
        println!("{line}");
    }
    let path = std::env::temp_dir().join("sds_lora_condition_number.svg");
    let caption = "Gradient descent, warm start, kappa_f = 1000: relative error ||dW - T|| / ||T||";
    match plot::loss_curves(&path, caption, "relative error", (1e-7, 10.0), &svg_curves) {
        Ok(()) => println!("\nloss curves (GD, kappa_f = 1000): {}", path.display()),
        Err(e) => eprintln!("could not write the plot: {e}"),
    }
    println!("total time {:.0} s", start_time.elapsed().as_secs_f64());
}
