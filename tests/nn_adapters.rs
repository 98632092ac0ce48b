//! Adapters: frozen tensors stay bit-identical in training; merge, unmerge, conversion
//! from a LoRA pair and PEFT export/import reproduce dW.

use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use nalgebra::DMatrix;
use sds_lora::nn::peft::{export_peft, import_peft, read_peft, TargetModules};
use sds_lora::nn::{builders, Adapter, LoraLinear, Scaling, SdsLinear};
use sds_lora::optim::{ParamGroups, SdsAdam, SdsAdamConfig};
use sds_lora::stiefel::orthogonality_error;

fn host<const N: usize, const M: usize, E: Dtype + Into<f64>>(
    t: &Tensor<Rank2<N, M>, E, Cpu>,
) -> DMatrix<f64> {
    DMatrix::from_row_iterator(N, M, t.as_vec().into_iter().map(Into::into))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sds_lora_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn frozen_weight_and_bias_are_bit_identical_after_training() {
    let dev = Cpu::seed_from_u64(3);
    type Model = (
        builders::SdsLinear<6, 5, 2>,
        Tanh,
        builders::SdsLinear<5, 3, 2>,
    );
    let mut m = dev.build_module::<Model, f32>();
    let (w0, b0, w2) = (m.0.weight.as_vec(), m.0.bias.as_vec(), m.2.weight.as_vec());
    let mut opt = SdsAdam::new(
        &m,
        SdsAdamConfig {
            groups: ParamGroups::uniform(1e-2),
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..20 {
        let x: Tensor<Rank2<4, 6>, f32, Cpu> = dev.sample_normal();
        let y: Tensor<Rank2<4, 3>, f32, Cpu> = dev.sample_normal();
        let g = mse_loss(m.forward(x.trace(m.alloc_grads())), y).backward();
        opt.update(&mut m, &g).unwrap();
    }
    assert_eq!(
        (m.0.weight.as_vec(), m.0.bias.as_vec(), m.2.weight.as_vec()),
        (w0, b0, w2)
    );
    assert!(
        m.0.core.as_vec().iter().any(|&s| s != 0.0),
        "the adapter trained"
    );
    assert!(orthogonality_error(&m.0.basis_out) < 1e-5);

    let mut l = dev.build_module::<builders::LoraLinear<6, 3, 2>, f32>();
    let (w0, b0) = (l.weight.as_vec(), l.bias.as_vec());
    let mut adam = Adam::new(&l, AdamConfig::default());
    for _ in 0..5 {
        let x: Tensor<Rank2<4, 6>, f32, Cpu> = dev.sample_normal();
        let g = l
            .forward(x.trace(l.alloc_grads()))
            .square()
            .mean()
            .backward();
        adam.update(&mut l, &g).unwrap();
    }
    assert_eq!((l.weight.as_vec(), l.bias.as_vec()), (w0, b0));
}

#[test]
fn merge_then_forward_equals_adapter_forward_and_unmerge_restores() {
    let dev = Cpu::seed_from_u64(5);
    let mut l: SdsLinear<16, 12, 4, f32, Cpu> =
        dev.build_module::<builders::SdsLinear<16, 12, 4>, f32>();
    l.core
        .copy_from(&dev.sample_normal::<Rank2<4, 4>>().as_vec());
    l.alpha = 8.0;
    let w0 = l.weight.as_vec();
    let x: Tensor<Rank2<5, 16>, f32, Cpu> = dev.sample_normal();
    let y = l.forward(x.clone()).as_vec();
    l.merge().unwrap();
    assert!(l.merge().is_err(), "merging twice is refused");
    let y_merged = l.forward(x.clone()).as_vec();
    let gap = y
        .iter()
        .zip(&y_merged)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(gap <= 1e-6, "merge-then-forward differs by {gap:e}");
    l.unmerge().unwrap();
    let back = l.weight.as_vec();
    let err = w0
        .iter()
        .zip(&back)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // One rounding of W0 + dW and one of (W0 + dW) - dW, |W0 + dW| < 1: 2 ulps of 1.
    assert!(err <= 2.0 * f32::EPSILON, "unmerge restores W0 to {err:e}");
    println!("unmerge restores W0 within {err:e} (f32, max abs)");
    let again = l.forward(x.clone()).as_vec();
    let gap = y
        .iter()
        .zip(&again)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        gap <= 1e-6,
        "after unmerge the forward is the adapter's again: {gap:e}"
    );

    let mut lora = dev.build_module::<builders::LoraLinear<16, 12, 4>, f32>();
    lora.lora_b
        .copy_from(&dev.sample_normal::<Rank2<12, 4>>().as_vec());
    let y = lora.forward(x.clone()).as_vec();
    lora.merge().unwrap();
    let gap = y
        .iter()
        .zip(lora.forward(x).as_vec())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(gap <= 1e-6, "LoRA merge-then-forward differs by {gap:e}");
}

#[test]
fn lora_pair_converts_exactly_to_sds() {
    let dev = Cpu::seed_from_u64(6);
    let mut lora: LoraLinear<20, 15, 4, f64, Cpu> =
        dev.build_module::<builders::LoraLinear<20, 15, 4>, f64>();
    lora.lora_b
        .copy_from(&dev.sample_normal::<Rank2<15, 4>>().as_vec());
    lora.alpha = 16.0;
    lora.scaling = Scaling::RankStabilized;
    let mut sds = dev.build_module::<builders::SdsLinear<20, 15, 4>, f64>();
    sds.alpha = 3.0; // a different c: the conversion accounts for it
    sds.set_from_lora(&lora.lora_b, &lora.lora_a, lora.scale())
        .unwrap();
    let want = host(&lora.delta_weight().unwrap());
    let got = host(&sds.delta_weight().unwrap());
    let err = (&got - &want).norm() / want.norm();
    assert!(err <= 1e-10, "B A reproduced to {err:e}");
    assert!(
        orthogonality_error(&sds.basis_out) < 1e-13 && orthogonality_error(&sds.basis_in) < 1e-13
    );
}

#[test]
fn peft_export_then_import_reproduces_dw() {
    let dev = Cpu::seed_from_u64(7);
    type Model = (
        builders::SdsLinear<10, 8, 3>,
        Tanh,
        builders::SdsLinear<8, 6, 2>,
    );
    let mut m = dev.build_module::<Model, f64>();
    // Full cores, off-diagonal entries included.
    m.0.core
        .copy_from(&[1.0, 0.3, -0.2, 0.1, -0.5, 0.4, 0.05, -0.3, 0.2]);
    m.2.core.copy_from(&[0.3, -0.6, 0.2, 0.7]);
    m.0.alpha = 6.0;
    let dir = temp_dir("peft");
    let cfg = export_peft(&m, &dir).unwrap();
    assert_eq!(
        (cfg.r, cfg.lora_alpha, cfg.target_modules.clone()),
        (
            3,
            6.0,
            TargetModules::List(vec!["0".to_string(), "2".to_string()])
        )
    );
    assert_eq!(cfg.rank_pattern.get("2"), Some(&2));
    let text = std::fs::read_to_string(dir.join("adapter_config.json")).unwrap();
    assert!(text.contains("\"peft_type\": \"LORA\"") && text.contains("\"use_rslora\": false"));
    let adapter = read_peft(&dir).unwrap();
    assert_eq!(adapter.pairs["0"].a.shape(), (3, 10), "lora_A is [R, I]");
    assert_eq!(adapter.pairs["0"].b.shape(), (8, 3), "lora_B is [O, R]");

    // Into a fresh SDS model (other random bases) and into a LoRA model.
    let mut fresh = Cpu::seed_from_u64(99).build_module::<Model, f64>();
    import_peft(&mut fresh, &adapter).unwrap();
    for (got, want) in [
        (
            host(&fresh.0.delta_weight().unwrap()),
            host(&m.0.delta_weight().unwrap()),
        ),
        (
            host(&fresh.2.delta_weight().unwrap()),
            host(&m.2.delta_weight().unwrap()),
        ),
    ] {
        assert!((&got - &want).norm() <= 1e-12 * want.norm(), "SDS import");
    }
    type Lora = (
        builders::LoraLinear<10, 8, 3>,
        Tanh,
        builders::LoraLinear<8, 6, 2>,
    );
    let mut lora = dev.build_module::<Lora, f64>();
    import_peft(&mut lora, &adapter).unwrap();
    let (got, want) = (
        host(&lora.0.delta_weight().unwrap()),
        host(&m.0.delta_weight().unwrap()),
    );
    assert!((&got - &want).norm() <= 1e-12 * want.norm(), "LoRA import");
    assert_eq!(lora.0.alpha, 6.0);

    // Into diagonal-core layers: the SVD of the pair's core is diagonal.
    type Diag = (
        builders::SdsDiagLinear<10, 8, 3>,
        Tanh,
        builders::SdsDiagLinear<8, 6, 2>,
    );
    let mut diag = dev.build_module::<Diag, f64>();
    import_peft(&mut diag, &adapter).unwrap();
    let (got, want) = (
        host(&diag.2.delta_weight().unwrap()),
        host(&m.2.delta_weight().unwrap()),
    );
    assert!(
        (&got - &want).norm() <= 1e-12 * want.norm(),
        "diagonal import"
    );

    // A model whose shapes do not fit is refused, untouched.
    type Other = (
        builders::SdsLinear<10, 8, 2>,
        Tanh,
        builders::SdsLinear<8, 6, 2>,
    );
    let mut other = dev.build_module::<Other, f64>();
    let before = other.0.basis_out.as_vec();
    assert!(import_peft(&mut other, &adapter).is_err());
    assert_eq!(other.0.basis_out.as_vec(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn from_linear_starts_at_the_linear_map() {
    let dev = Cpu::seed_from_u64(8);
    let linear = dev.build_module::<Linear<7, 5>, f32>();
    let sds = SdsLinear::<7, 5, 2, f32, Cpu>::from_linear(&linear).unwrap();
    let lora = LoraLinear::<7, 5, 2, f32, Cpu>::from_linear(&linear).unwrap();
    let x: Tensor<Rank2<3, 7>, f32, Cpu> = dev.sample_normal();
    let want = linear.forward(x.clone()).as_vec();
    for (got, name) in [
        (sds.forward(x.clone()).as_vec(), "sds"),
        (lora.forward(x).as_vec(), "lora"),
    ] {
        let gap = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(gap <= 1e-6, "{name}: {gap:e}");
    }
}

#[test]
fn principal_init_takes_the_top_singular_vectors() {
    let dev = Cpu::seed_from_u64(9);
    let mut l = dev.build_module::<builders::SdsLinear<12, 10, 3>, f64>();
    // A weight with singular values 5, 4, 3, then 0.1: a clear gap after the third.
    let u = DMatrix::<f64>::from_fn(10, 10, |i, j| ((i * 3 + j * 7) % 11) as f64)
        .qr()
        .q();
    let v = DMatrix::<f64>::from_fn(12, 12, |i, j| ((i * 5 + j * 2) % 13) as f64)
        .qr()
        .q();
    let mut s = DMatrix::<f64>::zeros(10, 12);
    for k in 0..10 {
        s[(k, k)] = if k < 3 { 5.0 - k as f64 } else { 0.1 };
    }
    let w = &u * s * v.transpose();
    l.weight.copy_from(w.transpose().as_slice());
    l.init_principal().unwrap();
    let (bu, bv) = (host(&l.basis_out), host(&l.basis_in));
    // Same subspaces: the projections onto them agree.
    let (pu, pv) = (u.columns(0, 3).into_owned(), v.columns(0, 3).into_owned());
    assert!((&bu * bu.transpose() - &pu * pu.transpose()).norm() < 1e-10);
    assert!((&bv * bv.transpose() - &pv * pv.transpose()).norm() < 1e-10);
    assert!(l.core.as_vec().iter().all(|&x| x == 0.0));
}

#[test]
fn zero_and_rank_deficient_pairs_give_orthonormal_bases() {
    let dev = Cpu::seed_from_u64(12);
    let mut sds = dev.build_module::<builders::SdsLinear<20, 15, 4>, f64>();
    let a: Tensor<Rank2<4, 20>, f64, Cpu> = dev.sample_normal();
    // PEFT's initialisation (B = 0), and a rank-1 B.
    let zero: Tensor<Rank2<15, 4>, f64, Cpu> = dev.zeros();
    let col: Vec<f64> = dev.sample_normal::<Rank1<15>>().as_vec();
    let rank_one: Vec<f64> = (0..15 * 4).map(|k| col[k / 4] * (k % 4) as f64).collect();
    let mut rank_one_b: Tensor<Rank2<15, 4>, f64, Cpu> = dev.zeros();
    rank_one_b.copy_from(&rank_one);
    for (name, b) in [("B = 0", &zero), ("rank-1 B", &rank_one_b)] {
        sds.set_from_lora(b, &a, 1.0).unwrap();
        let (u, v) = (
            orthogonality_error(&sds.basis_out),
            orthogonality_error(&sds.basis_in),
        );
        assert!(u < 1e-13 && v < 1e-13, "{name}: {u:e} {v:e}");
        let want = host(b) * host(&a);
        let got = host(&sds.delta_weight().unwrap());
        assert!(
            (&got - &want).norm() <= 1e-12 * want.norm().max(1.0),
            "{name}: dW"
        );
    }
}
