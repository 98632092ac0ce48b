//! A small per-thread pool of host buffers.
//!
//! Large short-lived buffers (a 4096 x 16 `f32` matrix is 256 KiB) are above the
//! allocator's mmap threshold: each fresh one is mapped and page-faulted in again, which
//! costs more than the arithmetic done on it. Kernels take their working buffers from here
//! and [`HostMat`](super::HostMat) gives them back on drop.

use super::Real;
use std::cell::RefCell;

/// Buffers kept per thread and element type (an optimizer step holds about twenty at
/// once); more are freed, oldest first.
const KEPT: usize = 32;

/// Bytes kept per thread and element type at most.
const KEPT_BYTES: usize = 64 << 20;

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

/// What a request wants of a pooled allocation: its elements written before (a load
/// that copies into a `&mut [E]`, which must not see unwritten memory), or nothing
/// written (a kernel that writes all of its output into the spare capacity).
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Written,
    Spare,
}

/// The smallest pooled allocation of `len` to `2 len` elements, if there is one (a much
/// larger one stays for the requests it fits); of those, one of the kind wanted first (a
/// [`Want::Written`] request prefers one with `len` elements written, a [`Want::Spare`]
/// one prefers one that would need writing), and of equal ones the one at the lowest
/// address.
///
/// The lowest address, not the one given back last: a computation then works in the same
/// few buffers call after call (they stay in cache), and the buffers it hands out for
/// good, as tensors' storage ([`replace`]), come from the bottom of the heap. glibc's
/// heap grows upwards and gives memory at its top back to the system when a free leaves
/// enough of it unused: a result taken from the top and freed by the caller was given
/// back that way and page-faulted in again by the next allocation, call after call.
///
/// A [`Want::Written`] request leaves the pool's only empty allocation that fits to
/// the next [`Want::Spare`] one and gets none (its caller allocates): otherwise a call
/// that loads two inputs, writes a kernel's output and hands it out for good settles on
/// two pooled buffers, one of them zero-filled for a load every call, where a third
/// allocated once ends the zero-filling.
fn take<E: Real>(len: usize, want: Want) -> Option<Vec<E>> {
    E::with_pool(|p| {
        let mut pool = p.0.borrow_mut();
        let fits = |b: &Vec<E>| b.capacity() >= len && b.capacity() <= 2 * len.max(1);
        let written = |b: &Vec<E>| b.len() >= len;
        let (i, best) = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| fits(b))
            .min_by_key(|(_, b)| {
                let other_kind = written(b) != (want == Want::Written);
                (other_kind, b.capacity(), b.as_ptr() as usize)
            })?;
        let empty = || pool.iter().filter(|b| fits(b) && b.is_empty()).count();
        if want == Want::Written && best.is_empty() && empty() == 1 {
            return None;
        }
        Some(pool.remove(i))
    })
}

/// A buffer of `len` zeros, reusing a pooled allocation when one is large enough.
pub fn zeroed<E: Real>(len: usize) -> Vec<E> {
    match take(len, Want::Written) {
        Some(mut b) => {
            b.clear();
            b.resize(len, E::zero());
            b
        }
        None => vec![E::zero(); len],
    }
}

/// A buffer of `len` elements with unspecified (but initialised) contents, for callers
/// that overwrite all of it through a `&mut [E]`: a pooled allocation keeps the values
/// written before, saving the zeroing (only elements never written are zeroed).
pub fn overwritten<E: Real>(len: usize) -> Vec<E> {
    match take(len, Want::Written) {
        Some(mut b) => {
            b.resize(len, E::zero());
            b.truncate(len);
            b
        }
        None => vec![E::zero(); len],
    }
}

/// An empty buffer with room for `len` elements, for a kernel that writes all of them
/// into its spare capacity (then sets the length): nothing is zeroed first. A pooled
/// allocation with nothing written is taken before one that holds values.
pub fn spare<E: Real>(len: usize) -> Vec<E> {
    match take(len, Want::Spare) {
        Some(mut b) => {
            b.clear();
            b
        }
        None => Vec::with_capacity(len),
    }
}

/// A pooled copy of `src`.
pub fn copied<E: Real>(src: &[E]) -> Vec<E> {
    let mut b = spare(src.len());
    b.extend_from_slice(src);
    b
}

/// The smallest buffer the pool keeps, in bytes: smaller ones are cheap to allocate.
const MIN_KEPT_BYTES: usize = 32 * 1024;

/// Returns a buffer to the pool (small buffers are freed; a full pool drops its oldest).
pub fn recycle<E: Real>(buf: Vec<E>) {
    if buf.capacity() * std::mem::size_of::<E>() < MIN_KEPT_BYTES {
        return;
    }
    E::with_pool(|p| {
        let mut pool = p.0.borrow_mut();
        pool.push(buf);
        let bytes = |pool: &Vec<Vec<E>>| {
            pool.iter().map(|b| b.capacity()).sum::<usize>() * std::mem::size_of::<E>()
        };
        while pool.len() > KEPT || (pool.len() > 1 && bytes(&pool) > KEPT_BYTES) {
            pool.remove(0);
        }
    });
}

/// Puts an allocation of `len` elements into the pool in the place of one that left it
/// for good (as a tensor's storage), where the pool keeps buffers that long. Nothing is
/// written to it: the next [`spare`] request (a kernel's output) fills it as it goes, and
/// only a request for written elements ([`overwritten`], [`zeroed`]) zeroes it.
/// Zero-filling the replacement would be a pass over memory that nothing reads.
pub fn replace<E: Real>(len: usize) {
    if len * std::mem::size_of::<E>() >= MIN_KEPT_BYTES {
        recycle(Vec::<E>::with_capacity(len));
    }
}

/// Where this thread's pooled buffers of `E` start, in the pool's order (for tests).
#[cfg(test)]
pub fn pooled<E: Real>() -> Vec<usize> {
    E::with_pool(|p| p.0.borrow().iter().map(|b| b.as_ptr() as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_joins_the_pool_where_it_keeps_buffers_that_long() {
        let before = pooled::<f64>().len();
        replace::<f64>(100);
        assert_eq!(pooled::<f64>().len(), before, "800 bytes: not kept");
        replace::<f64>(5000);
        assert_eq!(pooled::<f64>().len(), before + 1);
        assert!(zeroed::<f64>(5000).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn of_equal_buffers_the_lowest_is_handed_out() {
        let bufs: Vec<Vec<f32>> = (0..4).map(|_| zeroed(20_000)).collect();
        let mut starts: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
        // Given back in an order unrelated to their addresses.
        let mut order: Vec<usize> = (0..4).collect();
        order.sort_by_key(|&i| (starts[i] * 7919) % 1013);
        let mut bufs: Vec<Option<Vec<f32>>> = bufs.into_iter().map(Some).collect();
        for i in order {
            recycle(bufs[i].take().unwrap());
        }
        starts.sort_unstable();
        let taken: Vec<Vec<f32>> = (0..4).map(|_| overwritten(20_000)).collect();
        let got: Vec<usize> = taken.iter().map(|b| b.as_ptr() as usize).collect();
        assert_eq!(got, starts, "lowest address first");
        // A smaller buffer that fits still goes before a larger one lower down.
        let small = zeroed::<f32>(15_000);
        let small_at = small.as_ptr() as usize;
        taken.into_iter().for_each(recycle);
        recycle(small);
        let again = overwritten::<f32>(15_000);
        assert_eq!(again.as_ptr() as usize, small_at);
    }

    #[test]
    fn kernel_outputs_take_unwritten_allocations_and_loads_written_ones() {
        let written = zeroed::<f32>(20_000);
        let written_at = written.as_ptr() as usize;
        recycle(written);
        // A replacement: an allocation with nothing written to it.
        replace::<f32>(20_000);
        let out = spare::<f32>(20_000);
        assert!(out.is_empty() && out.capacity() >= 20_000);
        assert_ne!(
            out.as_ptr() as usize,
            written_at,
            "the unwritten allocation"
        );
        let load = overwritten::<f32>(20_000);
        assert_eq!(load.as_ptr() as usize, written_at, "the written one");
        // With only unwritten allocations left, a load gets one, zero-filled, but the last
        // one stays for a kernel output and the load gets a fresh allocation.
        recycle(out);
        replace::<f32>(20_000);
        let filled = overwritten::<f32>(20_000);
        assert!(filled.len() == 20_000 && filled.iter().all(|&v| v == 0.0));
        let fresh = overwritten::<f32>(20_000);
        assert!(fresh.len() == 20_000 && fresh.iter().all(|&v| v == 0.0));
        let kept = spare::<f32>(20_000);
        assert!(
            kept.is_empty() && kept.capacity() >= 20_000,
            "the unwritten one stayed"
        );
        assert_ne!(kept.as_ptr(), fresh.as_ptr());
        // With only written ones left, an output gets one, emptied.
        recycle(load);
        let emptied = spare::<f32>(20_000);
        assert_eq!((emptied.len(), emptied.as_ptr() as usize), (0, written_at));
    }

    #[test]
    fn recycled_buffers_come_back_zeroed() {
        let mut b = zeroed::<f32>(20_000);
        b[7] = 3.0;
        let ptr = b.as_ptr();
        recycle(b);
        let c = zeroed::<f32>(10_000);
        assert_eq!(c.as_ptr(), ptr, "reused");
        assert!(c.iter().all(|&v| v == 0.0) && c.len() == 10_000);
        recycle(c);
        let d = overwritten::<f32>(15_000);
        assert_eq!(
            (d.as_ptr(), d.len()),
            (ptr, 15_000),
            "reused at the asked length"
        );
    }
}
