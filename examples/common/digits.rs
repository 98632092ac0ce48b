//! The 8x8 handwritten digits task shared by the `quickstart` and `optimizer_ablation`
//! examples: data (smartcore's copy of the UCI set), the rotated domain, minibatch
//! training with a progress bar, and held-out accuracy.
#![allow(dead_code)] // shared by several examples; each uses part of it

use dfdx::optim::Optimizer;
use dfdx::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;
pub const BATCH: usize = 64;

pub const HIDDEN: usize = 64;

/// The classifier pretrained on upright digits.
pub type Mlp = (
    Linear<FEATURES, HIDDEN>,
    ReLU,
    Linear<HIDDEN, HIDDEN>,
    ReLU,
    Linear<HIDDEN, CLASSES>,
);
pub type Pretrained = <Mlp as BuildOnDevice<Cpu, f32>>::Built;

/// `base` with each linear layer replaced by an adapter around it (`W0` and bias kept);
/// each adapter draws its own random tensors from a device seeded with `seed`.
pub fn adapted<A, B, C>(base: &Pretrained, seed: u64) -> (A, ReLU, B, ReLU, C)
where
    A: sds_lora::nn::Adapter<FEATURES, HIDDEN, f32, Cpu>,
    B: sds_lora::nn::Adapter<HIDDEN, HIDDEN, f32, Cpu>,
    C: sds_lora::nn::Adapter<HIDDEN, CLASSES, f32, Cpu>,
{
    (
        A::from_linear(&on_seeded(&base.0, seed)).unwrap(),
        ReLU,
        B::from_linear(&on_seeded(&base.2, seed)).unwrap(),
        ReLU,
        C::from_linear(&on_seeded(&base.4, seed)).unwrap(),
    )
}

/// A copy of `l` on a device seeded with `seed`, so that an adapter built from it draws
/// its random tensors from that seed.
fn on_seeded<const I: usize, const O: usize>(
    l: &dfdx::nn::modules::Linear<I, O, f32, Cpu>,
    seed: u64,
) -> dfdx::nn::modules::Linear<I, O, f32, Cpu> {
    l.clone().to_device(&Cpu::seed_from_u64(seed))
}

/// A batch of images and of one-hot labels.
pub type Images = Tensor<(usize, Const<FEATURES>), f32, Cpu>;
pub type Labels = Tensor<(usize, Const<CLASSES>), f32, Cpu>;

/// Images (row-major 8x8, scaled to [0, 1]) and labels.
#[derive(Clone)]
pub struct Split {
    pub x: Vec<[f32; FEATURES]>,
    pub y: Vec<usize>,
}

impl Split {
    /// The same digits rotated by 90 degrees (counter-clockwise).
    pub fn rotated(&self) -> Split {
        let rot = |img: &[f32; FEATURES]| {
            let mut out = [0.0; FEATURES];
            for i in 0..8 {
                for j in 0..8 {
                    out[(7 - j) * 8 + i] = img[i * 8 + j];
                }
            }
            out
        };
        Split {
            x: self.x.iter().map(rot).collect(),
            y: self.y.clone(),
        }
    }

    pub fn tensor(&self, dev: &Cpu, idx: &[usize]) -> (Images, Labels) {
        let x: Vec<f32> = idx.iter().flat_map(|&i| self.x[i]).collect();
        let mut y = vec![0.0f32; idx.len() * CLASSES];
        for (row, &i) in idx.iter().enumerate() {
            y[row * CLASSES + self.y[i]] = 1.0;
        }
        (
            dev.tensor_from_vec(x, (idx.len(), Const)),
            dev.tensor_from_vec(y, (idx.len(), Const)),
        )
    }
}

/// The digits, shuffled with `SEED` and split 75/25 into train and test.
pub fn load(seed: u64) -> (Split, Split) {
    let d = smartcore::dataset::digits::load_dataset();
    let mut order: Vec<usize> = (0..d.num_samples).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let take = |ids: &[usize]| Split {
        x: ids
            .iter()
            .map(|&i| {
                let mut img = [0.0; FEATURES];
                for (k, v) in img.iter_mut().enumerate() {
                    *v = d.data[i * d.num_features + k] / 16.0;
                }
                img
            })
            .collect(),
        y: ids.iter().map(|&i| d.target[i] as usize).collect(),
    };
    let cut = d.num_samples * 3 / 4;
    (take(&order[..cut]), take(&order[cut..]))
}

/// Held-out accuracy.
pub fn accuracy<
    M: Module<
        Tensor<(usize, Const<FEATURES>), f32, Cpu>,
        Output = Tensor<(usize, Const<CLASSES>), f32, Cpu>,
    >,
>(
    model: &M,
    dev: &Cpu,
    data: &Split,
) -> f64 {
    let idx: Vec<usize> = (0..data.y.len()).collect();
    let (x, _) = data.tensor(dev, &idx);
    let logits = model.forward(x).as_vec();
    let correct = logits
        .chunks_exact(CLASSES)
        .zip(&data.y)
        .filter(|(row, &y)| {
            let argmax = (0..CLASSES)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            argmax == y
        })
        .count();
    correct as f64 / data.y.len() as f64
}

/// `steps` optimizer steps on minibatches drawn with `seed`; returns the loss curve, which
/// ends early if the optimizer refuses a step.
pub fn train<M, O>(
    model: &mut M,
    opt: &mut O,
    dev: &Cpu,
    data: &Split,
    steps: usize,
    seed: u64,
    label: &str,
) -> Vec<f32>
where
    M: Module<
            Tensor<(usize, Const<FEATURES>), f32, Cpu, OwnedTape<f32, Cpu>>,
            Output = Tensor<(usize, Const<CLASSES>), f32, Cpu, OwnedTape<f32, Cpu>>,
        > + ZeroGrads<f32, Cpu>,
    O: Optimizer<M, Cpu, f32>,
{
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} loss {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut curve = Vec::with_capacity(steps);
    for _ in 0..steps {
        let idx: Vec<usize> = (0..BATCH).map(|_| rng.gen_range(0..data.y.len())).collect();
        let (x, y) = data.tensor(dev, &idx);
        let logits = model.forward(x.trace(model.alloc_grads()));
        let loss = cross_entropy_with_logits_loss(logits, y);
        let value = loss.array();
        let grads = loss.backward();
        if let Err(e) = opt.update(model, &grads) {
            // A refused step (a diverged run's non-finite gradient, say) ends the run.
            bar.abandon_with_message(format!("stopped at step {}: {e:?}", curve.len()));
            return curve;
        }
        curve.push(value);
        bar.set_message(format!("{value:.4}"));
        bar.inc(1);
    }
    bar.finish();
    curve
}
