//! Splitting host work between the calling thread and one helper thread.
//!
//! The host kernels work on `n x r` matrices whose products take 5 to 50 microseconds:
//! handing such work to a thread pool whose workers sleep costs more than it saves (waking
//! a worker takes longer than the work). So
//! there is one helper thread, started on first use, which spins for a while after each
//! piece of work ([`SPIN`]) and then parks; work is cut into jobs that both threads claim
//! one at a time (the caller from the front, the helper from the back), and the caller
//! never waits for the helper to wake up: a sleeping helper just leaves the caller all
//! the jobs. Work is shared only inside [`splitting`], which the optimizer's host step
//! opens.
//!
//! Jobs are fixed by the caller, not by the number of threads, and each job's result does
//! not depend on which thread runs it: results are the same bits with one thread or two.
//!
//! [`threads`] follows `RAYON_NUM_THREADS`, the variable dfdx's CPU matrix products
//! follow: `1` keeps all work on the calling thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long the helper spins for new work before it parks.
pub const SPIN: Duration = Duration::from_micros(100);

/// Threads the host kernels use: 2, or 1 where `RAYON_NUM_THREADS` is `1` or the
/// machine has one core (read once).
pub fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        let asked = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        asked.unwrap_or(cores).min(cores).clamp(1, 2)
    })
}

/// Runs `f` while [`run`] may use the helper thread on this thread's behalf. Splitting
/// pays where several passes go over the same pieces of rows, each core keeping its
/// pieces in its own cache (an optimizer step); a single product on data that has just
/// been copied in on this thread, and is copied out again right after, gains less than
/// the traffic between the cores costs, so outside this scope [`run`] stays on this
/// thread.
pub fn splitting<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SPLITTING.set(self.0);
        }
    }
    let _restore = Restore(SPLITTING.replace(true));
    f()
}

/// Runs `f` on every job, on this thread and, inside [`splitting`] where [`threads`]
/// allows and there are two or more jobs, on the helper thread too; returns when every
/// job is done. A job's result must not depend on the thread that runs it. Called from
/// inside a job, or while another thread's jobs hold the helper, it runs the jobs here,
/// in order.
pub fn run<T: Send>(jobs: Vec<T>, f: impl Fn(T) + Sync) {
    if jobs.len() < 2 || threads() < 2 || INSIDE_JOB.get() || !SPLITTING.get() {
        return jobs.into_iter().for_each(f);
    }
    // Jobs not yet claimed: the caller takes them from the front, the helper from the
    // back, so that in a sequence of calls over the same rows each thread tends to get
    // the same rows again (and finds them in its own cache).
    let pending = Mutex::new(jobs.into_iter().collect::<std::collections::VecDeque<T>>());
    let claim = |from_back: bool| {
        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
        if from_back {
            pending.pop_back()
        } else {
            pending.pop_front()
        }
    };
    let work = |from_back: bool| {
        let _inside = InsideJob::enter();
        while let Some(job) = claim(from_back) {
            f(job);
        }
    };
    let helper_work = || work(true);
    // Withdrawn (and the helper waited for) when dropped, also on unwinding.
    let posted = Helper::get().post(&helper_work);
    work(false);
    drop(posted);
}

thread_local! {
    /// Whether this thread is running a job (nested calls run inline).
    static INSIDE_JOB: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread is inside [`splitting`].
    static SPLITTING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as inside a job until dropped (also on unwinding).
struct InsideJob(bool);

impl InsideJob {
    fn enter() -> Self {
        Self(INSIDE_JOB.replace(true))
    }
}

impl Drop for InsideJob {
    fn drop(&mut self) {
        INSIDE_JOB.set(self.0);
    }
}

/// Work as the helper sees it: a pointer to the caller's claiming loop, its lifetime
/// erased. Valid while it is posted (see [`Posted`]).
#[derive(Clone, Copy)]
struct WorkPtr(*const (dyn Fn() + Sync));

// SAFETY: the pointee is `Sync`, and [`Posted`] keeps it alive while the helper can reach it.
unsafe impl Send for WorkPtr {}

/// The helper thread and the slot through which work reaches it.
struct Helper {
    /// The posted work, if any.
    slot: Mutex<Option<WorkPtr>>,
    /// Incremented at each post: the helper watches it while it spins.
    epoch: AtomicU64,
    /// Helpers inside posted work (entered under the slot's lock).
    inside: AtomicUsize,
    /// A job panicked on the helper.
    panicked: AtomicBool,
    /// Whether the helper is parked (or about to be).
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

/// A post of work to the helper: dropping it withdraws the work and waits until the
/// helper has left it, so the work (on the caller's stack) outlives every use.
struct Posted<'a>(&'a Helper);

impl Drop for Posted<'_> {
    fn drop(&mut self) {
        let helper = self.0;
        *helper.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        while helper.inside.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        if helper.panicked.swap(false, Ordering::AcqRel) && !std::thread::panicking() {
            panic!("parallel::run: a job panicked on the helper thread");
        }
    }
}

impl Helper {
    /// The helper, started on first use.
    fn get() -> &'static Helper {
        static HELPER: OnceLock<Helper> = OnceLock::new();
        let helper = HELPER.get_or_init(|| Helper {
            slot: Mutex::new(None),
            epoch: AtomicU64::new(0),
            inside: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        helper.thread.get_or_init(|| {
            std::thread::Builder::new()
                .name("sds-lora-helper".into())
                .spawn(|| Helper::get().serve())
                .expect("parallel: spawning the helper thread")
                .thread()
                .clone()
        });
        helper
    }

    /// Posts `work`; `None` where another caller's work holds the slot.
    fn post<'a>(&'a self, work: &'a (dyn Fn() + Sync + 'a)) -> Option<Posted<'a>> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return None;
        }
        // SAFETY: only the lifetime is erased; `Posted` withdraws the pointer and waits
        // for the helper to leave before `work` can go out of scope.
        let ptr: *const (dyn Fn() + Sync + 'a) = work;
        *slot = Some(WorkPtr(unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + 'a), *const (dyn Fn() + Sync)>(ptr)
        }));
        drop(slot);
        // Sequentially consistent with the helper's `parked` store and `epoch` load, so
        // that a helper about to park either sees this post or is unparked.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.parked.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        Some(Posted(self))
    }

    /// The helper's loop: run posted work, spin for more, park when idle.
    fn serve(&self) {
        let mut seen = self.epoch.load(Ordering::Acquire);
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                let work = {
                    let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                    let work = *slot;
                    if work.is_some() {
                        self.inside.fetch_add(1, Ordering::AcqRel);
                    }
                    work
                };
                if let Some(WorkPtr(ptr)) = work {
                    // SAFETY: entered under the slot's lock while posted; the caller waits
                    // for `inside` to drop before the work goes away.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                        (*ptr)()
                    }));
                    if ran.is_err() {
                        self.panicked.store(true, Ordering::Release);
                    }
                    self.inside.fetch_sub(1, Ordering::AcqRel);
                }
                idle_since = Instant::now();
                continue;
            }
            spins += 1;
            // The clock is read now and then: a read costs more than a look at `epoch`.
            if !spins.is_multiple_of(64) || idle_since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            self.parked.store(true, Ordering::SeqCst);
            // A post between the last look and here has bumped the epoch: look again.
            if self.epoch.load(Ordering::SeqCst) == seen {
                std::thread::park();
            }
            self.parked.store(false, Ordering::Release);
            idle_since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every job runs once, whatever the threads, nested calls included.
    #[test]
    fn every_job_runs_once() {
        splitting(every_job_runs_once_inside);
        every_job_runs_once_inside();
    }

    fn every_job_runs_once_inside() {
        for round in 0..50usize {
            let counts: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
            run((0..37).collect(), |i: usize| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                if i.is_multiple_of(10) {
                    run(vec![i], |j| assert_eq!(j, i));
                }
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "round {round}"
            );
            if round.is_multiple_of(10) {
                // Let the helper park and be woken again.
                std::thread::sleep(SPIN * 2);
            }
        }
    }

    /// Jobs write disjoint parts of one buffer (the way the kernels split rows).
    #[test]
    fn disjoint_writes() {
        let mut data = vec![0u64; 1000];
        let jobs: Vec<(usize, &mut [u64])> = data.chunks_mut(64).enumerate().collect();
        splitting(|| {
            run(jobs, |(k, chunk)| {
                for (i, v) in chunk.iter_mut().enumerate() {
                    *v = (k * 64 + i) as u64;
                }
            })
        });
        assert!(data.iter().enumerate().all(|(i, &v)| v == i as u64));
    }

    /// Outside [`splitting`] every job runs on the calling thread; inside, the helper takes
    /// some (where there are two threads), from the back.
    #[test]
    fn the_helper_works_only_inside_splitting() {
        let busy = || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_micros(100) {
                std::hint::spin_loop();
            }
            std::thread::current().id()
        };
        let on = |split: bool| {
            let ids = Mutex::new(vec![None; 64]);
            let jobs: Vec<usize> = (0..64).collect();
            let go = || run(jobs, |i| ids.lock().unwrap()[i] = Some(busy()));
            if split {
                splitting(go)
            } else {
                go()
            }
            ids.into_inner().unwrap()
        };
        let me = Some(std::thread::current().id());
        assert!(on(false).iter().all(|id| *id == me));
        // A helper that the machine's load keeps from waking leaves every job to the
        // caller; it gets a few tries.
        let helped = (0..50).any(|_| {
            let split = on(true);
            assert!(split.iter().all(|id| id.is_some()));
            split[63] != me
        });
        assert_eq!(helped, threads() > 1, "the helper takes jobs from the back");
    }
}
