//! Whether a `Cpu` device's allocation cache is on.
//!
//! With `Cpu::enable_cache`, a dropped tensor's buffer goes into the device's cache, and
//! dfdx's own allocations take from it. A tensor built around a buffer of ours
//! (`try_tensor_from_vec`) also goes into the cache when dropped, but nothing of ours takes
//! it back: a loop of host calls that each return a new tensor would grow the cache without
//! bound (and slow down as it grows). Where the cache is on, [`HostOps`](super::HostOps) therefore allocates
//! its results through the device. dfdx 0.13 does not say whether the cache is on, so
//! [`caching`] finds out by a probe.

use dfdx::tensor::{Cpu, Tensor, ZerosTensor};
use std::hint::black_box;

/// Elements of the probe's tensors (a size few tensors have).
const PROBE_LEN: usize = 3;

/// Whether `dev` caches allocations: a probe tensor is allocated through the device and
/// dropped, two plain allocations of the same size are held (one uninitialised, one
/// zeroed: glibc serves them from different bins, and the freed buffer sits in one of
/// them), and a second probe tensor is allocated. With the cache off, the allocator hands
/// the freed buffer to one of the held allocations and the second tensor gets another one;
/// with it on, the freed buffer waits in the cache and the second tensor gets it back. An
/// allocator that does not reuse the freed buffer at once makes the second tensor's buffer
/// a new one too, and the answer is `false`, as it should be (the tests below turn the
/// cache on and off).
pub fn caching(dev: &Cpu) -> bool {
    let first_element = |t: &Tensor<(usize,), f32, Cpu>| &t[[0]] as *const f32 as usize;
    let Ok(probe) = dev.try_zeros_like(&(PROBE_LEN,)) else {
        return true;
    };
    let freed = first_element(&probe);
    drop(probe);
    // `black_box`: an allocation nothing reads may be optimised away.
    let held: [Vec<f32>; 2] = black_box([Vec::with_capacity(PROBE_LEN), vec![0.0; PROBE_LEN]]);
    let again = dev.try_zeros_like(&(PROBE_LEN,)).map(|t| first_element(&t));
    drop(held);
    again.map_or(true, |at| at == freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::tensor::Cache;

    #[test]
    fn the_probe_sees_the_cache_turned_on_and_off() {
        let dev = Cpu::default();
        assert!(!caching(&dev), "off by default");
        dev.enable_cache();
        assert!(caching(&dev));
        assert!(
            caching(&dev),
            "again, with the probe's buffer already in the cache"
        );
        dev.disable_cache();
        assert!(!caching(&dev));
    }

    /// With the allocator's per-thread bin for the probe's size full (glibc's tcache holds
    /// seven chunks per size), a freed probe buffer goes to another bin, which `calloc`
    /// (dfdx's zeroed allocation) reads and `malloc` does not: a probe that held only a
    /// `malloc`ed buffer saw the freed buffer come back and answered "on".
    #[test]
    fn the_probe_sees_the_cache_off_with_the_allocator_bins_full() {
        let dev = Cpu::default();
        for filled in 0..24 {
            let held: Vec<Vec<f32>> = (0..filled)
                .map(|_| black_box(Vec::with_capacity(PROBE_LEN)))
                .collect();
            drop(held);
            assert!(
                !caching(&dev),
                "off, after {filled} small buffers were freed"
            );
        }
        dev.enable_cache();
        assert!(caching(&dev));
    }
}
