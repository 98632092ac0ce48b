//! A small per-thread pool of host buffers.
//!
//! Large short-lived buffers (a 4096 x 16 `f32` matrix is 256 KiB) are above the
//! allocator's mmap threshold: each fresh one is mapped and page-faulted in again, which
//! costs more than the arithmetic done on it. Kernels take their working buffers from here
//! and [`HostMat`](super::HostMat) gives them back on drop.

use super::Real;
use std::cell::RefCell;

/// Buffers kept per thread and element type; more are freed.
const KEPT: usize = 8;

/// Per-thread storage of spare buffers of one element type.
pub struct Pool<E>(RefCell<Vec<Vec<E>>>);

impl<E> Pool<E> {
    /// An empty pool.
    pub const fn new() -> Self {
        Pool(RefCell::new(Vec::new()))
    }
}

impl<E> Default for Pool<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// A buffer of `len` zeros, reusing a pooled allocation when one is large enough.
pub fn zeroed<E: Real>(len: usize) -> Vec<E> {
    let reused = E::with_pool(|p| {
        let mut pool = p.0.borrow_mut();
        let i = pool.iter().position(|b| b.capacity() >= len)?;
        Some(pool.swap_remove(i))
    });
    match reused {
        Some(mut b) => {
            b.clear();
            b.resize(len, E::zero());
            b
        }
        None => vec![E::zero(); len],
    }
}

/// Returns a buffer to the pool (dropped if the pool is full or the buffer is small).
pub fn recycle<E: Real>(buf: Vec<E>) {
    if buf.capacity() * std::mem::size_of::<E>() < 32 * 1024 {
        return;
    }
    E::with_pool(|p| {
        let mut pool = p.0.borrow_mut();
        if pool.len() < KEPT {
            pool.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_buffers_come_back_zeroed() {
        let mut b = zeroed::<f32>(20_000);
        b[7] = 3.0;
        let ptr = b.as_ptr();
        recycle(b);
        let c = zeroed::<f32>(10_000);
        assert_eq!(c.as_ptr(), ptr, "reused");
        assert!(c.iter().all(|&v| v == 0.0) && c.len() == 10_000);
    }
}
