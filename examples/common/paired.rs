//! Timing two pieces of work against each other on a shared, noisy machine. Shared by the
//! `step_bench` and `retraction_table` examples.

use std::time::Instant;

/// Wall time that one batch of calls is sized to.
const BATCH_SECONDS: f64 = 2e-3;

/// Median nanoseconds per call of `f` and of `g` over `samples` batches of each, the
/// batches alternated (`f`, `g`, `f`, ...). Each batch runs about 2 ms of calls after one
/// untimed call, so that a batch finds its data in cache as a loop of its own would. On a
/// shared host the speed drifts over seconds: timing all of `f` and then all of `g` would
/// compare two different machines, while alternating batches see the same one.
pub fn paired_median_ns(samples: usize, mut f: impl FnMut(), mut g: impl FnMut()) -> (f64, f64) {
    let calls = |h: &mut dyn FnMut()| {
        let start = Instant::now();
        h();
        let once = start.elapsed().as_secs_f64().max(1e-7);
        ((BATCH_SECONDS / once).ceil() as usize).clamp(1, 10_000)
    };
    let (per_f, per_g) = (calls(&mut f), calls(&mut g));
    let batch = |h: &mut dyn FnMut(), n: usize| {
        h();
        let start = Instant::now();
        for _ in 0..n {
            h();
        }
        start.elapsed().as_secs_f64() * 1e9 / n as f64
    };
    let (mut tf, mut tg): (Vec<f64>, Vec<f64>) = (0..samples.max(1))
        .map(|_| (batch(&mut f, per_f), batch(&mut g, per_g)))
        .unzip();
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    (median(&mut tf), median(&mut tg))
}
