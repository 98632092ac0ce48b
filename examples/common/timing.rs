//! Timing code on a shared, noisy machine: medians over batches of about 2 ms, one piece
//! of work alone or two against each other. Shared by the `step_bench` and
//! `retraction_table` examples.

#![allow(dead_code)] // shared by several examples; each uses part of it

use std::time::Instant;

/// Wall time that one batch of calls is sized to.
const BATCH_SECONDS: f64 = 2e-3;

/// Calls of `h` that make one batch, from the time of one call.
fn calls_per_batch(h: &mut dyn FnMut()) -> usize {
    let start = Instant::now();
    h();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    ((BATCH_SECONDS / once).ceil() as usize).clamp(1, 10_000)
}

/// Nanoseconds per call over a batch of `n` calls, after one untimed call (so that the
/// batch finds its data in cache as a loop of its own would).
fn batch_ns(h: &mut dyn FnMut(), n: usize) -> f64 {
    h();
    let start = Instant::now();
    for _ in 0..n {
        h();
    }
    start.elapsed().as_secs_f64() * 1e9 / n as f64
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Median nanoseconds per call of `f` over `samples` batches.
pub fn median_ns(samples: usize, mut f: impl FnMut()) -> f64 {
    let per = calls_per_batch(&mut f);
    median((0..samples.max(1)).map(|_| batch_ns(&mut f, per)).collect())
}

/// Median nanoseconds per call of `f` and of `g` over `samples` batches of each, the
/// batches alternated (`f`, `g`, `f`, ...). On a shared host the speed drifts over
/// seconds: timing all of `f` and then all of `g` would compare two different machines,
/// while alternating batches see the same one.
pub fn paired_median_ns(samples: usize, mut f: impl FnMut(), mut g: impl FnMut()) -> (f64, f64) {
    let (per_f, per_g) = (calls_per_batch(&mut f), calls_per_batch(&mut g));
    let (tf, tg): (Vec<f64>, Vec<f64>) = (0..samples.max(1))
        .map(|_| (batch_ns(&mut f, per_f), batch_ns(&mut g, per_g)))
        .unzip();
    (median(tf), median(tg))
}
