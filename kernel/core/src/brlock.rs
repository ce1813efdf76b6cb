//! The kernel lock split per core, and the endpoint lock of the IPC fast path
//! (`docs/design/ipc.md`).
//!
//! [`BrLock`] is a "big reader" lock: one flag per core. A **reader** takes only its own
//! core's flag; a **writer** takes every core's flag, in increasing core order. The kernel
//! uses it for its capability-and-IPC state: the slow paths (every capability operation,
//! every IPC that is not the same-core fast path) are writers and exclude everything, as
//! one global lock would; the same-core Call/ReplyRecv fast path is a reader and touches
//! no cache line another core's fast path writes, except the endpoint it uses.
//!
//! Two readers on different cores run at the same time, so the one shared object they
//! can both reach, an endpoint's queue (and the queue links in the TCBs on it), has its
//! own lock word ([`ep_lock`]), taken only by readers: a writer holds every core's flag,
//! so no reader, and so no endpoint lock holder, runs beside it.
//!
//! No deadlock: a reader waits only for its own flag and then for one endpoint lock,
//! whose holder (another reader) waits for nothing; writers take flags in one order.
//!
//! Ordering: every take is an Acquire read-modify-write and every release a Release
//! store, so whatever a holder wrote is visible to the next holder of the same flag or
//! endpoint lock; a writer's critical section is ordered with every reader's through the
//! reader's own flag.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(not(loom))]
fn spin() {
    core::hint::spin_loop();
}
#[cfg(loom)]
fn spin() {
    loom::thread::yield_now();
}

/// One flag per core of `N` cores.
pub struct BrLock<const N: usize> {
    cores: [AtomicBool; N],
}

impl<const N: usize> BrLock<N> {
    /// Unlocked.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        BrLock {
            cores: [const { AtomicBool::new(false) }; N],
        }
    }

    /// Unlocked (loom's atomics are not `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        BrLock {
            cores: core::array::from_fn(|_| AtomicBool::new(false)),
        }
    }

    /// Takes core `c`'s flag if it is free (a reader's take, and each step of a writer's).
    pub fn try_take(&self, c: usize) -> bool {
        self.cores[c]
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases core `c`'s flag.
    pub fn release(&self, c: usize) {
        self.cores[c].store(false, Ordering::Release);
    }

    /// Takes core `c`'s flag, spinning (`wait` runs once before the first spin and gets
    /// `true`, once after the take with `false`: the kernel marks the core quiescent
    /// there).
    pub fn read(&self, c: usize, wait: &mut dyn FnMut(bool)) {
        if self.try_take(c) {
            return;
        }
        wait(true);
        while !self.try_take(c) {
            spin();
        }
        wait(false);
    }

    /// Takes the flags of cores `0..n` in order (`n <= N`), spinning on each; `wait` as in
    /// [`Self::read`].
    pub fn write(&self, n: usize, wait: &mut dyn FnMut(bool)) {
        for c in 0..n.min(N) {
            self.read(c, wait);
        }
    }

    /// Releases the flags of cores `0..n`.
    pub fn write_release(&self, n: usize) {
        for c in (0..n.min(N)).rev() {
            self.release(c);
        }
    }
}

impl<const N: usize> Default for BrLock<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes an endpoint's fast-path lock word (0 free, 1 held).
pub fn ep_lock(w: &AtomicU64) {
    while w
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spin();
    }
}

/// Releases an endpoint's fast-path lock word.
pub fn ep_unlock(w: &AtomicU64) {
    w.store(0, Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_writer_takes_every_flag_and_excludes_readers() {
        let l: BrLock<4> = BrLock::new();
        l.write(4, &mut |_| {});
        for c in 0..4 {
            assert!(!l.try_take(c), "core {c} free under a writer");
        }
        l.write_release(4);
        for c in 0..4 {
            assert!(l.try_take(c), "core {c} still held after the writer");
        }
    }

    #[test]
    fn readers_of_different_cores_do_not_exclude_each_other() {
        let l: BrLock<2> = BrLock::new();
        assert!(l.try_take(0));
        assert!(l.try_take(1));
        assert!(!l.try_take(0));
        l.release(0);
        l.release(1);
    }

    #[test]
    fn a_writer_for_fewer_cores_leaves_the_rest_free() {
        let l: BrLock<4> = BrLock::new();
        l.write(2, &mut |_| {});
        assert!(!l.try_take(1));
        assert!(l.try_take(2));
        l.release(2);
        l.write_release(2);
        assert!(l.try_take(0));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Plain data under a lock: a read and a separate write (Relaxed), so two updates
    /// that are not mutually excluded can lose one, and a reader not ordered after a
    /// writer can see a stale value: either shows in the final counts.
    struct Plain(AtomicU64);

    impl Plain {
        fn new() -> Self {
            Plain(AtomicU64::new(0))
        }
        fn add(&self, n: u64) {
            let v = self.0.load(Ordering::Relaxed);
            self.0.store(v + n, Ordering::Relaxed);
        }
        fn get(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// What the IPC paths touch: an endpoint queue shared by every core, and a thread of
    /// each of two cores (its state and registers).
    struct World {
        lock: BrLock<2>,
        ep_word: AtomicU64,
        queue: Plain,
        thread: [Plain; 2],
    }

    fn world() -> Arc<World> {
        Arc::new(World {
            lock: BrLock::new(),
            ep_word: AtomicU64::new(0),
            queue: Plain::new(),
            thread: [Plain::new(), Plain::new()],
        })
    }

    /// The fast path of core `c`: its own flag, the endpoint lock for the queue, its own
    /// thread under the flag alone.
    fn fast(w: &World, c: usize) {
        w.lock.read(c, &mut |_| {});
        ep_lock(&w.ep_word);
        w.queue.add(1);
        ep_unlock(&w.ep_word);
        w.thread[c].add(1);
        w.lock.release(c);
    }

    /// Two fast paths on different cores and a slow path (a writer touching the queue and
    /// both cores' threads): no update is lost and none reads stale data.
    #[test]
    fn fast_paths_on_two_cores_and_a_slow_path_exclude_each_other_where_they_share() {
        loom::model(|| {
            let w = world();
            let a = {
                let w = w.clone();
                thread::spawn(move || fast(&w, 0))
            };
            let b = {
                let w = w.clone();
                thread::spawn(move || fast(&w, 1))
            };
            w.lock.write(2, &mut |_| {});
            w.queue.add(10);
            for t in &w.thread {
                t.add(10);
            }
            w.lock.write_release(2);
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(w.queue.get(), 12);
            for t in &w.thread {
                assert_eq!(t.get(), 11);
            }
        });
    }

    /// Two writers and a reader: writers take the flags in one order, so they never
    /// deadlock, and each sees the other's whole critical section or none of it.
    #[test]
    fn two_writers_and_a_reader_finish_and_serialise() {
        loom::model(|| {
            let w = world();
            let other = {
                let w = w.clone();
                thread::spawn(move || {
                    w.lock.write(2, &mut |_| {});
                    w.queue.add(1);
                    w.lock.write_release(2);
                })
            };
            let reader = {
                let w = w.clone();
                thread::spawn(move || {
                    w.lock.read(1, &mut |_| {});
                    w.thread[1].add(1);
                    w.lock.release(1);
                })
            };
            w.lock.write(2, &mut |_| {});
            w.queue.add(1);
            w.thread[1].add(1);
            w.lock.write_release(2);
            other.join().unwrap();
            reader.join().unwrap();
            assert_eq!(w.queue.get(), 2);
            assert_eq!(w.thread[1].get(), 2);
        });
    }
}
