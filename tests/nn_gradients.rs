//! SdsLinear's backward pass in f64 against dense nalgebra formulas and central finite
//! differences (design.md's gradient table).

use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::nn::{builders, GradientMode, SdsDiagLinear};

const B: usize = 3;
const I: usize = 5;
const O: usize = 4;
const R: usize = 2;
type Layer = SdsDiagLinear<I, O, R, f64, Cpu>;

fn host<S: Shape>(t: &Tensor<S, f64, Cpu>, rows: usize, cols: usize) -> DMatrix<f64> {
    DMatrix::from_row_slice(rows, cols, &t.as_vec())
}

fn rowmajor(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

fn fixed(rows: usize, cols: usize, k: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |i, j| ((i * 7 + j * 3) as f64 * k + 0.3).sin())
}

/// A layer with non-zero scales and alpha = 3 (c = 1.5), in `mode`.
fn layer(mode: GradientMode, scales: [f64; R]) -> Layer {
    let dev = Cpu::seed_from_u64(4);
    let mut l = dev.build_module::<builders::SdsDiagLinear<I, O, R>, f64>();
    l.core.copy_from(&scales);
    l.alpha = 3.0;
    l.gradient_mode = mode;
    l
}

/// L = sum(Gy * y) with fixed Gy, so dL/dy = Gy.
fn loss_weights() -> DMatrix<f64> {
    fixed(B, O, 0.91)
}

fn input() -> DMatrix<f64> {
    fixed(B, I, 0.37)
}

fn loss(l: &Layer, x: &DMatrix<f64>) -> f64 {
    let dev = Cpu::default();
    let xt: Tensor<Rank2<B, I>, f64, Cpu> = dev.tensor_from_vec(rowmajor(x), (Const, Const));
    let y = host(&l.forward(xt), B, O);
    y.component_mul(&loss_weights()).sum()
}

struct Grads {
    x: DMatrix<f64>,
    u: DMatrix<f64>,
    s: DMatrix<f64>,
    v: DMatrix<f64>,
}

fn backward(l: &Layer) -> Grads {
    let dev = Cpu::default();
    let xt: Tensor<Rank2<B, I>, f64, Cpu> = dev.tensor_from_vec(rowmajor(&input()), (Const, Const));
    let gy: Tensor<Rank2<B, O>, f64, Cpu> =
        dev.tensor_from_vec(rowmajor(&loss_weights()), (Const, Const));
    // leaky: keep the input's gradient too (alloc_grads keeps the module's only).
    let y = l.forward(xt.trace(Gradients::leaky()));
    let g = (y * gy).sum().backward();
    Grads {
        x: host(&g.get(&xt), B, I),
        u: host(&g.get(&l.basis_out), O, R),
        s: host(&g.get(&l.core), 1, R),
        v: host(&g.get(&l.basis_in), I, R),
    }
}

fn rel(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    (a - b).norm() / b.norm().max(1e-300)
}

/// Central differences of the loss in each entry of a parameter.
fn finite_diff(l: &Layer, which: &str) -> DMatrix<f64> {
    let h = 1e-6;
    let (rows, cols) = match which {
        "basis_out" => (O, R),
        "basis_in" => (I, R),
        "scales" => (1, R),
        _ => (B, I),
    };
    DMatrix::from_fn(rows, cols, |i, j| {
        let at = |delta: f64| {
            let mut l2 = l.clone();
            let mut x = input();
            let bump = |t: &mut Vec<f64>| t[i * cols + j] += delta;
            match which {
                "basis_out" => {
                    let mut d = l2.basis_out.as_vec();
                    bump(&mut d);
                    l2.basis_out.copy_from(&d);
                }
                "basis_in" => {
                    let mut d = l2.basis_in.as_vec();
                    bump(&mut d);
                    l2.basis_in.copy_from(&d);
                }
                "scales" => {
                    let mut d = l2.core.as_vec();
                    bump(&mut d);
                    l2.core.copy_from(&d);
                }
                _ => x[(i, j)] += delta,
            }
            loss(&l2, &x)
        };
        (at(h) - at(-h)) / (2.0 * h)
    })
}

/// The dense formulas of design.md.
fn dense(l: &Layer) -> Grads {
    let (x, gy) = (input(), loss_weights());
    let (u, v) = (host(&l.basis_out, O, R), host(&l.basis_in, I, R));
    let s = DMatrix::from_row_slice(1, R, &l.core.as_vec());
    let c = l.scale();
    let w0 = host(&l.weight, O, I);
    let sd = DMatrix::from_diagonal(&s.row(0).transpose());
    let (xv, gyu) = (&x * &v, &gy * &u);
    let (u_factor, v_factor) = match l.gradient_mode {
        GradientMode::Decoupled => (xv.clone(), gyu.clone()),
        GradientMode::Coupled => (&xv * &sd, &gyu * &sd),
    };
    Grads {
        x: &gy * (&w0 + &u * &sd * v.transpose() * c),
        u: gy.transpose() * u_factor * c,
        s: DMatrix::from_fn(1, R, |_, k| c * gyu.column(k).dot(&xv.column(k))),
        v: x.transpose() * v_factor * c,
    }
}

#[test]
fn decoupled_gradients_match_the_formulas() {
    let l = layer(GradientMode::Decoupled, [0.7, -1.3]);
    let (got, want) = (backward(&l), dense(&l));
    assert!(rel(&got.x, &want.x) <= 1e-12, "dx");
    assert!(rel(&got.s, &want.s) <= 1e-12, "ds");
    assert!(rel(&got.u, &want.u) <= 1e-12, "dU");
    assert!(rel(&got.v, &want.v) <= 1e-12, "dV");
    // dx and ds are the exact derivatives of the loss.
    assert!(
        rel(&got.x, &finite_diff(&l, "x")) <= 1e-8,
        "dx vs finite differences"
    );
    assert!(
        rel(&got.s, &finite_diff(&l, "scales")) <= 1e-8,
        "ds vs finite differences"
    );
}

#[test]
fn coupled_gradients_are_the_autodiff_of_the_formula() {
    let l = layer(GradientMode::Coupled, [0.7, -1.3]);
    let (got, want) = (backward(&l), dense(&l));
    for (name, g, w) in [
        ("dx", &got.x, &want.x),
        ("ds", &got.s, &want.s),
        ("dU", &got.u, &want.u),
        ("dV", &got.v, &want.v),
    ] {
        assert!(rel(g, w) <= 1e-12, "{name} vs dense");
    }
    for (name, g) in [
        ("basis_out", &got.u),
        ("basis_in", &got.v),
        ("scales", &got.s),
        ("x", &got.x),
    ] {
        let fd = finite_diff(&l, name);
        assert!(
            rel(g, &fd) <= 1e-8,
            "{name} vs finite differences: {:e}",
            rel(g, &fd)
        );
    }
}

#[test]
fn zero_scales_starve_coupled_but_not_decoupled_bases() {
    let d = backward(&layer(GradientMode::Decoupled, [0.0, 0.0]));
    assert!(
        d.u.norm() > 1e-3 && d.v.norm() > 1e-3,
        "decoupled bases get gradient at s = 0"
    );
    let c = backward(&layer(GradientMode::Coupled, [0.0, 0.0]));
    assert_eq!(c.u.norm(), 0.0);
    assert_eq!(c.v.norm(), 0.0);
}

#[test]
fn decoupled_basis_gradients_ignore_positive_rescaling_of_s() {
    let a = backward(&layer(GradientMode::Decoupled, [0.7, -1.3]));
    let b = backward(&layer(GradientMode::Decoupled, [0.7 * 5.0, -1.3 * 0.01]));
    assert!(rel(&a.u, &b.u) <= 1e-14 && rel(&a.v, &b.v) <= 1e-14);
    let c = backward(&layer(GradientMode::Coupled, [0.7 * 5.0, -1.3 * 0.01]));
    assert!(rel(&c.u, &a.u) > 0.1, "coupled gradients do depend on s");
}

#[test]
fn input_used_twice_accumulates() {
    let l = layer(GradientMode::Decoupled, [0.7, -1.3]);
    let dev = Cpu::default();
    let xt: Tensor<Rank2<B, I>, f64, Cpu> = dev.tensor_from_vec(rowmajor(&input()), (Const, Const));
    let gy: Tensor<Rank2<B, O>, f64, Cpu> =
        dev.tensor_from_vec(rowmajor(&loss_weights()), (Const, Const));
    let traced = xt.trace(Gradients::leaky());
    // y = layer(x) + layer(2 x): dL/dx = J^T gy + 2 J^T gy = 3 J^T gy.
    let (x, tape) = traced.split_tape();
    let y1 = l.forward(x.clone().put_tape(tape));
    let y2 = l.forward(x.put_tape(OwnedTape::default()) * 2.0);
    let g = ((y1 + y2) * gy).sum().backward();
    let want = dense(&l);
    assert!(
        rel(&host(&g.get(&xt), B, I), &(&want.x * 3.0)) <= 1e-12,
        "dx"
    );
    // dU = c gy^T (x V) + c gy^T (2 x V) = 3 dU(x).
    assert!(
        rel(&host(&g.get(&l.basis_out), O, R), &(&want.u * 3.0)) <= 1e-12,
        "dU"
    );
}

#[test]
fn inside_a_tuple_model_next_to_other_layers() {
    let dev = Cpu::seed_from_u64(8);
    type Model = (Linear<I, I>, Tanh, builders::SdsDiagLinear<I, O, R>);
    let mut m = dev.build_module::<Model, f64>();
    m.2.core.copy_from(&[0.4, 0.9]);
    let x: Tensor<Rank2<B, I>, f64, Cpu> = dev.tensor_from_vec(rowmajor(&input()), (Const, Const));
    let gy: Tensor<Rank2<B, O>, f64, Cpu> =
        dev.tensor_from_vec(rowmajor(&loss_weights()), (Const, Const));
    let loss_of = |m: &<Model as BuildOnDevice<Cpu, f64>>::Built| -> f64 {
        (m.forward(x.clone()) * gy.clone())
            .sum::<Rank0, _>()
            .array()
    };
    let g = (m.forward(x.trace(m.alloc_grads())) * gy.clone())
        .sum()
        .backward();
    // The first layer's weight and the adapter's scales against finite differences.
    let h = 1e-6;
    let gw: Vec<f64> = g.get(&m.0.weight).as_vec();
    let mut w = m.0.weight.as_vec();
    for k in [0, 7, 24] {
        w[k] += h;
        m.0.weight.copy_from(&w);
        let up = loss_of(&m);
        w[k] -= 2.0 * h;
        m.0.weight.copy_from(&w);
        let down = loss_of(&m);
        w[k] += h;
        m.0.weight.copy_from(&w);
        let fd = (up - down) / (2.0 * h);
        assert!(
            (gw[k] - fd).abs() <= 1e-8 * (1.0 + fd.abs()),
            "Linear weight[{k}]: {} vs {fd}",
            gw[k]
        );
    }
    let gs: Vec<f64> = g.get(&m.2.core).as_vec();
    let mut s = m.2.core.as_vec();
    s[1] += h;
    m.2.core.copy_from(&s);
    let up = loss_of(&m);
    s[1] -= 2.0 * h;
    m.2.core.copy_from(&s);
    let fd = (up - loss_of(&m)) / (2.0 * h);
    assert!(
        (gs[1] - fd).abs() <= 1e-8 * (1.0 + fd.abs()),
        "scales[1]: {} vs {fd}",
        gs[1]
    );
    // Frozen tensors get no gradient entry at all from alloc_grads.
    assert_eq!(m.2.num_trainable_params(), O * R + R + I * R);
}
