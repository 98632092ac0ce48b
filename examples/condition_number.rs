//! Does convergence depend on how an adapter's product is split between its factors?
//! (arXiv 2606.16454's claim: LoRA's rate degrades with the factors' condition number,
//! SDS-LoRA's does not.) f64, full batch, deterministic.
//!
//! Problem: least squares `y = T x` on a fixed Gaussian batch `X` (256 x 1024), adapters of
//! rank 8 on a 256 x 256 layer, all starting from the same `dW0 = B0 A0` (singular values
//! spread over 10x) but with the factors split unevenly, `B0 = P D^(1/2) M`,
//! `A0 = M^-1 D^(1/2) Q^T`, `M` diagonal with alternating entries `exp(+-lambda)` chosen so
//! that `cond(B0) ~ cond(A0) ~ kappa_f` (exact equality is impossible below sqrt(10), where
//! the balanced split is used; the measured values are printed). The target `T` has rank
//! 8 (so that rank-8 adapters can reach it) with half its singular directions shared with
//! `dW0` and half rotated away; `E = T - dW0` therefore has rank up to 16.
//!
//! Methods: LoRA; LoRA with the Riemannian preconditioner of Zhang and Pilanci (2024);
//! the paper's dual-branch layer (`SdsDualBranch`, reparameterised from `(B0, A0)`, bases
//! refreshed every 100 steps); SDS-Stiefel (`SdsLinear` from `(B0, A0)`, decoupled,
//! `SdsSgd`/`SdsAdam`); coupled Stiefel (the same with the coupled gradients). Gradients
//! are the layers' backward formulas evaluated in factored form (`O(n r^2)` a step, never
//! forming the `256 x 256` gradient), fed to the real optimizers.
//!
//! Each method takes its best learning rate from a fixed log grid. Tables: steps to
//! `||dW - T||_F / ||T||_F <= 1e-6` with gradient descent, with Adam, and over the target's
//! own condition number at kappa_f = 1; diagnostics (effective rank of the factor
//! gradients, alignment of the first step with the full gradient); JSON lines; an SVG.
//!
//! `cargo run --release --example condition_number [-- --budget 3000]`

#[path = "common/lowrank.rs"]
mod lowrank;
#[path = "common/plot.rs"]
mod plot;

use dfdx::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use dfdx::prelude::*;
use lowrank::{
    cond, host, row_major, sds_from, sds_gradients, sds_grads, Mat, Problem, N, RANK, SAMPLES,
};
use nalgebra::DVector;
use sds_lora::diagnostics::{alignment, effective_rank, lora_delta, sds_delta};
use sds_lora::nn::{builders, Adapter, GradientMode, LoraLinear, SdsDualBranch, SdsLinear};
use sds_lora::optim::{ParamGroups, SdsAdam, SdsAdamConfig, SdsSgd, SdsSgdConfig};

const TOL: f64 = 1e-6;
const REFRESH_EVERY: usize = 100;
const KAPPAS: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
const GD_GRID: [f64; 7] = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0];
const ADAM_GRID: [f64; 6] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2];

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Lora,
    LoraPrecond,
    DualBranch,
    SdsStiefel,
    CoupledStiefel,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::Lora,
        Method::LoraPrecond,
        Method::DualBranch,
        Method::SdsStiefel,
        Method::CoupledStiefel,
    ];
    fn name(self) -> &'static str {
        match self {
            Method::Lora => "LoRA",
            Method::LoraPrecond => "LoRA + Riemannian precond.",
            Method::DualBranch => "dual-branch (paper)",
            Method::SdsStiefel => "SDS-Stiefel",
            Method::CoupledStiefel => "coupled Stiefel",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Rule {
    Gd,
    Adam,
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

type Lora = LoraLinear<N, N, RANK, f64, Cpu>;
type Sds = SdsLinear<N, N, RANK, f64, Cpu>;
type Dual = SdsDualBranch<N, N, RANK, f64, Cpu>;

/// The model of one method, holding its factors.
enum Model {
    Lora(Lora),
    Sds(Sds),
    Dual(Dual),
}

/// Writes `m` (row-major) as `t`'s gradient.
fn set_grad<S: Shape>(grads: &mut Gradients<f64, Cpu>, t: &Tensor<S, f64, Cpu>, m: &Mat) {
    grads
        .get_or_alloc_mut(t)
        .unwrap()
        .copy_from_slice(&row_major(m));
}

/// One step with whichever of the two optimizers is set; false if it refused the step.
fn step_with<M, A: Optimizer<M, Cpu, f64>, B: Optimizer<M, Cpu, f64>>(
    first: &mut Option<A>,
    second: &mut Option<B>,
    model: &mut M,
    grads: &Gradients<f64, Cpu>,
) -> bool {
    match (first, second) {
        (Some(o), _) => o.update(model, grads).is_ok(),
        (_, Some(o)) => o.update(model, grads).is_ok(),
        _ => unreachable!("one optimizer is set"),
    }
}

impl Model {
    fn delta_weight(&self) -> Mat {
        match self {
            Model::Lora(l) => host(&l.lora_b) * host(&l.lora_a) * l.scale(),
            Model::Sds(l) => host(&l.delta_weight().unwrap()),
            Model::Dual(l) => l.delta_weight(),
        }
    }
}

/// A model's factors at one moment, for the first-order change of `dW` between two.
enum Snapshot {
    Lora {
        c: f64,
        b: Mat,
        a: Mat,
    },
    Sds {
        c: f64,
        u: Mat,
        s: DVector<f64>,
        v: Mat,
    },
    Dual {
        k: f64,
        a: Mat,
        b: Mat,
        qa: Mat,
        qb: Mat,
    },
}

impl Snapshot {
    fn of(m: &Model) -> Self {
        match m {
            Model::Lora(l) => Snapshot::Lora {
                c: l.scale(),
                b: host(&l.lora_b),
                a: host(&l.lora_a),
            },
            Model::Sds(l) => Snapshot::Sds {
                c: l.scale(),
                u: host(&l.basis_out),
                s: DVector::from_vec(l.scales.as_vec()),
                v: host(&l.basis_in),
            },
            Model::Dual(l) => Snapshot::Dual {
                k: l.scale(),
                a: host(&l.lora_a),
                b: host(&l.lora_b),
                qa: host(&l.q_a),
                qb: host(&l.q_b),
            },
        }
    }

    /// `d dW` for the factor changes from `self` to `after`, to first order.
    fn first_order_change(&self, after: &Snapshot) -> Mat {
        match (self, after) {
            (Snapshot::Lora { c, b, a }, Snapshot::Lora { b: b2, a: a2, .. }) => {
                lora_delta(*c, (b, a), (&(b2 - b), &(a2 - a)))
            }
            (
                Snapshot::Sds { c, u, s, v },
                Snapshot::Sds {
                    u: u2,
                    s: s2,
                    v: v2,
                    ..
                },
            ) => sds_delta(*c, (u, s, v), (&(u2 - u), &(s2 - s), &(v2 - v))),
            (Snapshot::Dual { k, a, b, qa, qb }, Snapshot::Dual { a: a2, b: b2, .. }) => {
                (qb * (a2 - a) + (b2 - b) * qa.transpose()) * *k
            }
            _ => unreachable!("same model"),
        }
    }
}

fn run(
    problem: &Problem,
    method: Method,
    rule: Rule,
    lr: f64,
    kappa_f: f64,
    budget: usize,
) -> Outcome {
    let dev = Cpu::seed_from_u64(5);
    let (b0, a0) = problem.factors(kappa_f);
    let mut model = match method {
        Method::Lora | Method::LoraPrecond => {
            let mut l = dev.build_module::<builders::LoraLinear<N, N, RANK>, f64>();
            l.lora_b.copy_from(&row_major(&b0));
            l.lora_a.copy_from(&row_major(&a0));
            Model::Lora(l)
        }
        Method::DualBranch => {
            let mut l = dev.build_module::<builders::SdsDualBranch<N, N, RANK>, f64>();
            l.lora_b.copy_from(&row_major(&b0));
            l.lora_a.copy_from(&row_major(&a0));
            l.reparameterize().expect("warm-up phase");
            Model::Dual(l)
        }
        Method::SdsStiefel | Method::CoupledStiefel => {
            let mut l = sds_from(&dev, (&b0, &a0));
            if method == Method::CoupledStiefel {
                l.gradient_mode = GradientMode::Coupled;
            }
            Model::Sds(l)
        }
    };
    // Every optimizer: plain gradient descent (no momentum) or Adam at `lr`, all groups.
    let mut lora_sgd = None;
    let mut lora_adam = None;
    let mut dual_sgd = None;
    let mut dual_adam = None;
    let mut sds_sgd = None;
    let mut sds_adam = None;
    match (&model, rule) {
        (Model::Lora(l), Rule::Gd) => {
            lora_sgd = Some(Sgd::new(
                l,
                SgdConfig {
                    lr,
                    ..Default::default()
                },
            ))
        }
        (Model::Lora(l), Rule::Adam) => {
            lora_adam = Some(Adam::new(
                l,
                AdamConfig {
                    lr,
                    ..Default::default()
                },
            ))
        }
        (Model::Dual(l), Rule::Gd) => {
            dual_sgd = Some(Sgd::new(
                l,
                SgdConfig {
                    lr,
                    ..Default::default()
                },
            ))
        }
        (Model::Dual(l), Rule::Adam) => {
            dual_adam = Some(Adam::new(
                l,
                AdamConfig {
                    lr,
                    ..Default::default()
                },
            ))
        }
        (Model::Sds(l), Rule::Gd) => {
            sds_sgd = Some(
                SdsSgd::new(
                    l,
                    SdsSgdConfig {
                        groups: ParamGroups::uniform(lr),
                        ..Default::default()
                    },
                )
                .unwrap(),
            )
        }
        (Model::Sds(l), Rule::Adam) => {
            sds_adam = Some(
                SdsAdam::new(
                    l,
                    SdsAdamConfig {
                        groups: ParamGroups::uniform(lr),
                        ..Default::default()
                    },
                )
                .unwrap(),
            )
        }
    }
    let mut curve = Vec::new();
    let mut diagnostics = (0.0, 0.0, 0.0);
    let mut steps = None;
    for step in 0..budget {
        let before = (step == 0).then(|| {
            (
                Snapshot::of(&model),
                problem.full_gradient(&model.delta_weight()),
            )
        });
        // dW = left right^T and the factor gradients (the layers' backward formulas).
        let ok = match &mut model {
            Model::Lora(l) => {
                let c = l.scale();
                let (b, a) = (host(&l.lora_b), host(&l.lora_a));
                let lr_pair = (&b, &a.transpose());
                let mut db = problem.g_times(lr_pair, &a.transpose()) * c; // c G A^T
                let mut da = problem.t_times_g(lr_pair, &b) * c; // c B^T G
                if method == Method::LoraPrecond {
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
                if step == 0 {
                    diagnostics.0 = effective_rank(&db);
                    diagnostics.1 = effective_rank(&da);
                }
                let mut grads = l.alloc_grads();
                set_grad(&mut grads, &l.lora_b, &db);
                set_grad(&mut grads, &l.lora_a, &da);
                step_with(&mut lora_sgd, &mut lora_adam, l, &grads)
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
                if step == 0 {
                    diagnostics.0 = effective_rank(&db);
                    diagnostics.1 = effective_rank(&da);
                }
                let mut grads = l.alloc_grads();
                set_grad(&mut grads, &l.lora_a, &da);
                set_grad(&mut grads, &l.lora_b, &db);
                step_with(&mut dual_sgd, &mut dual_adam, l, &grads)
            }
            Model::Sds(l) => {
                let (du, ds, dv) = sds_gradients(problem, l);
                if step == 0 {
                    diagnostics.0 = effective_rank(&du);
                    diagnostics.1 = effective_rank(&dv);
                }
                let grads = sds_grads(l, &(du, ds, dv));
                step_with(&mut sds_sgd, &mut sds_adam, l, &grads)
            }
        };
        if let Some((snapshot, g)) = before {
            // The first-order change of dW that this step actually made.
            diagnostics.2 = alignment(&g, &snapshot.first_order_change(&Snapshot::of(&model)));
        }
        let dw = model.delta_weight();
        let err = problem.rel_error(&dw);
        curve.push(err);
        if !ok || !err.is_finite() || err > 1e3 {
            break;
        }
        if err <= TOL {
            steps = Some(step + 1);
            break;
        }
    }
    Outcome {
        steps,
        curve,
        diagnostics,
    }
}

/// The best run over a learning-rate grid: fewest steps, or if none reaches the tolerance,
/// the lowest final error.
fn best(
    problem: &Problem,
    method: Method,
    rule: Rule,
    kappa_f: f64,
    budget: usize,
) -> (f64, Outcome) {
    let grid: &[f64] = if rule == Rule::Gd {
        &GD_GRID
    } else {
        &ADAM_GRID
    };
    // Grid points are independent runs: two at a time, one per core.
    let mut outcomes: Vec<(f64, Outcome)> = Vec::new();
    for pair in grid.chunks(2) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = pair
                .iter()
                .map(|&lr| {
                    scope.spawn(move || (lr, run(problem, method, rule, lr, kappa_f, budget)))
                })
                .collect();
            outcomes.extend(handles.into_iter().map(|h| h.join().expect("run")));
        });
    }
    let key = |o: &Outcome| {
        (
            o.steps.unwrap_or(usize::MAX),
            o.curve.last().copied().unwrap_or(f64::INFINITY),
        )
    };
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
        None => format!(
            "not reached ({:.1e})",
            o.curve.last().copied().unwrap_or(f64::NAN)
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let budget: usize = args
        .iter()
        .position(|a| a == "--budget")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--budget: a number"))
        .unwrap_or(3000);
    let start = std::time::Instant::now();
    let problem = Problem::new(10.0);
    println!(
        "256 x 256 layer, rank 8, {SAMPLES} samples; ||E|| / ||dW0|| = {:.2}, rank(E) = {}; tolerance {TOL:e}; budget {budget} steps\n",
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
        let title = if rule == Rule::Gd {
            "gradient descent (no momentum)"
        } else {
            "Adam"
        };
        println!("\nSteps to relative error {TOL:e}, {title}, best learning rate per cell:\n");
        println!("| method | kappa_f = 1 | 10 | 100 | 1000 | lr (per kappa_f) |\n|---|---|---|---|---|---|");
        let mut diag_rows = Vec::new();
        for method in Method::ALL {
            let mut cells = Vec::new();
            let mut lrs = Vec::new();
            for &k in &KAPPAS {
                let (lr, o) = best(&problem, method, rule, k, budget);
                json.push(format!(
                    r#"{{"table":"{}","method":"{}","kappa_f":{k},"lr":{lr},"steps":{},"final_rel_error":{:e},"eff_rank_grad_1":{:.3},"eff_rank_grad_2":{:.3},"alignment":{:.4}}}"#,
                    if rule == Rule::Gd { "gd" } else { "adam" },
                    method.name(),
                    o.steps.map(|s| s.to_string()).unwrap_or_else(|| "null".into()),
                    o.curve.last().copied().unwrap_or(f64::NAN),
                    o.diagnostics.0,
                    o.diagnostics.1,
                    o.diagnostics.2
                ));
                cells.push(cell(&o));
                lrs.push(format!("{lr}"));
                if k == 1000.0 {
                    diag_rows.push(format!(
                        "| {} | {:.2} | {:.2} | {:.3} |",
                        method.name(),
                        o.diagnostics.0,
                        o.diagnostics.1,
                        o.diagnostics.2
                    ));
                    if rule == Rule::Gd {
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
        println!("\nAt kappa_f = 1000, first step ({title}): effective rank of the two factor gradients (U/B, V/A) and alignment cos(-G, the change of dW the step made, to first order):\n");
        println!("| method | eff. rank grad 1 | eff. rank grad 2 | alignment |\n|---|---|---|---|");
        for r in diag_rows {
            println!("{r}");
        }
    }
    println!("\nSteps to {TOL:e} against the target's own condition number (spectrum of T), kappa_f = 1, gradient descent:\n");
    println!("| method | kappa_T = 1 | 10 | 100 | 1000 |\n|---|---|---|---|---|");
    let targets: Vec<Problem> = KAPPAS.iter().map(|&k| Problem::new(k)).collect();
    for method in Method::ALL {
        let cells: Vec<String> =
            targets
                .iter()
                .zip(KAPPAS)
                .map(|(p, kt)| {
                    let (lr, o) = best(p, method, Rule::Gd, 1.0, budget);
                    json.push(format!(
                    r#"{{"table":"gd_target","method":"{}","kappa_t":{kt},"lr":{lr},"steps":{}}}"#,
                    method.name(),
                    o.steps.map(|s| s.to_string()).unwrap_or_else(|| "null".into())
                ));
                    cell(&o)
                })
                .collect();
        println!("| {} | {} |", method.name(), cells.join(" | "));
    }
    println!();
    for line in &json {
        println!("{line}");
    }
    let path = std::env::temp_dir().join("sds_lora_condition_number.svg");
    let caption = "Gradient descent, kappa_f = 1000: relative error ||dW - T|| / ||T||";
    match plot::loss_curves(&path, caption, "relative error", (1e-7, 10.0), &svg_curves) {
        Ok(()) => println!("\nloss curves (GD, kappa_f = 1000): {}", path.display()),
        Err(e) => eprintln!("could not write the plot: {e}"),
    }
    println!("total time {:.0} s", start.elapsed().as_secs_f64());
}
