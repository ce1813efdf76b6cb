//! Quiescent-state-based reclamation (QSBR): when may a table that was unlinked from a
//! stage-2 tree be reused? (`docs/design/stage2.md`, "QSBR".)
//!
//! Every core has a counter that is **odd while the core runs kernel code** and even
//! otherwise (at EL0, in a guest, idle). Walkers of translation tables are kernel code, so a
//! core whose counter is even holds no pointer into any table, and a core whose counter
//! changed since a snapshot has left the kernel since then. An unlinked subtree is
//! retired with a snapshot of all counters taken after it became unreachable (and after the
//! broadcast TLB invalidation that drops it from the MMUs' walk caches); it may be reused
//! once every core either was even in the snapshot or has a different counter now.
//!
//! A core running a guest for a long time without exits stays even: it never holds up a
//! grace period, and no timer tick is needed for progress.
//!
//! Memory ordering: `exit` is `fetch_add(1, Release)`, so a visit's table reads happen
//! before its end is visible. `enter` is `fetch_add(1, AcqRel)` **followed by a SeqCst
//! fence**, and `snapshot` **starts with a SeqCst fence**: the walker writes its counter and
//! then reads a table entry while the retiring core writes the entry (unlink) and then
//! reads the counters, the store-buffering pattern, which only full fences on both sides
//! forbid (without them, the walker could read the old entry while the retiring core reads
//! its counter as even: the loom test below found exactly that). On AArch64 the fences are
//! `DMB ISH`; on the retiring side the TLBI's `DSB ISH` already is one. Expiry loads are
//! Acquire: seeing a core even, or past its snapshot, means seeing the end of every kernel
//! visit that could have reached the retired tables.
//!
//! Retire lists live outside the retired pages (fixed arrays here), since walkers may still
//! read those pages until the grace period ends.

#[cfg(not(loom))]
use core::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU64, Ordering};

/// The per-core counters of `N` cores.
pub struct Qsbr<const N: usize> {
    counters: [AtomicU64; N],
}

/// All counters at one moment.
pub type Snapshot<const N: usize> = [u64; N];

impl<const N: usize> Qsbr<N> {
    /// Every core outside the kernel (all counters even).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Qsbr {
            counters: [const { AtomicU64::new(0) }; N],
        }
    }

    /// Every core outside the kernel (loom's atomics are not `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Qsbr {
            counters: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Core `c` enters the kernel (its counter becomes odd). The fence orders the
    /// increment before every table read of the visit, as seen by other cores.
    pub fn enter(&self, c: usize) {
        self.counters[c].fetch_add(1, Ordering::AcqRel);
        fence(Ordering::SeqCst);
    }

    /// [`Self::enter`] if core `c`'s counter is even (only core `c` writes its counter, so
    /// the check is race-free); the kernel calls it at every entry, some of which may
    /// nest (an interrupt taken while idle inside the kernel).
    pub fn enter_if_outside(&self, c: usize) {
        if self.counters[c].load(Ordering::Relaxed).is_multiple_of(2) {
            self.enter(c);
        }
    }

    /// [`Self::exit`] if core `c`'s counter is odd; returns whether it was.
    pub fn exit_if_inside(&self, c: usize) -> bool {
        let inside = !self.counters[c].load(Ordering::Relaxed).is_multiple_of(2);
        if inside {
            self.exit(c);
        }
        inside
    }

    /// Core `c` leaves the kernel (its counter becomes even).
    pub fn exit(&self, c: usize) {
        self.counters[c].fetch_add(1, Ordering::Release);
    }

    /// The counters now. The fence orders the caller's unlink (an earlier store) before
    /// these loads, as seen by other cores.
    pub fn snapshot(&self) -> Snapshot<N> {
        fence(Ordering::SeqCst);
        core::array::from_fn(|c| self.counters[c].load(Ordering::Acquire))
    }

    /// True once every core has been quiescent since `snap` was taken.
    pub fn expired(&self, snap: &Snapshot<N>) -> bool {
        (0..N).all(|c| {
            snap[c].is_multiple_of(2) || self.counters[c].load(Ordering::Acquire) != snap[c]
        })
    }
}

impl<const N: usize> Default for Qsbr<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A core's retired items waiting for their grace period, each with the snapshot taken when
/// it was retired. `T` is whatever the owner needs to free the item later: a table's
/// address, or (table, pool) for the kernel. The list lives outside the retired memory.
pub struct RetireList<T: Copy, const N: usize, const CAP: usize> {
    items: [Option<(T, Snapshot<N>)>; CAP],
    len: usize,
}

impl<T: Copy, const N: usize, const CAP: usize> Default for RetireList<T, N, CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy, const N: usize, const CAP: usize> RetireList<T, N, CAP> {
    /// An empty list.
    pub const fn new() -> Self {
        RetireList {
            items: [None; CAP],
            len: 0,
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when a further `retire` would be refused.
    pub fn is_full(&self) -> bool {
        self.len == CAP
    }

    /// Retires `item` (already unreachable, and, for a translation table, already dropped
    /// from every MMU's walk cache) with a snapshot taken now ([`Qsbr::snapshot`] starts
    /// with the full fence that orders the caller's unlink before the counter loads).
    /// `Err(item)` when the list is full: reclaim first.
    pub fn retire(&mut self, q: &Qsbr<N>, item: T) -> Result<(), T> {
        if self.len == CAP {
            return Err(item);
        }
        self.items[self.len] = Some((item, q.snapshot()));
        self.len += 1;
        Ok(())
    }

    /// Hands every item whose grace period is over to `free` (oldest first); returns how
    /// many. The others stay, in order.
    pub fn reclaim(&mut self, q: &Qsbr<N>, free: &mut dyn FnMut(T)) -> usize {
        let mut kept = 0;
        let mut freed = 0;
        for i in 0..self.len {
            let Some((item, snap)) = self.items[i] else {
                continue;
            };
            if q.expired(&snap) {
                free(item);
                freed += 1;
            } else {
                self.items[kept] = Some((item, snap));
                kept += 1;
            }
        }
        for slot in &mut self.items[kept..self.len] {
            *slot = None;
        }
        self.len = kept;
        freed
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn grace_periods() {
        let q: Qsbr<3> = Qsbr::new();
        q.enter(0); // the retiring core, in the kernel
        q.enter(1); // a walker in the kernel
                    // core 2 runs a guest: even, quiescent
        let mut list: RetireList<u64, 3, 2> = RetireList::new();
        list.retire(&q, 0x1000).unwrap();
        let mut freed = Vec::new();
        assert_eq!(
            list.reclaim(&q, &mut |t| freed.push(t)),
            0,
            "cores 0 and 1 may still read it"
        );
        q.exit(1);
        assert_eq!(
            list.reclaim(&q, &mut |t| freed.push(t)),
            0,
            "core 0 has not left yet"
        );
        q.exit(0);
        q.enter(0);
        q.enter(1); // a new visit of core 1 cannot see the unlinked table
        assert_eq!(list.reclaim(&q, &mut |t| freed.push(t)), 1);
        assert_eq!(freed, vec![0x1000]);
        assert!(list.is_empty());
    }

    #[test]
    fn a_full_list_refuses() {
        let q: Qsbr<1> = Qsbr::new();
        let mut list: RetireList<u64, 1, 1> = RetireList::new();
        list.retire(&q, 1).unwrap();
        assert_eq!(list.retire(&q, 2), Err(2));
        // Core 0 was even at the snapshot: reclaimable at once.
        assert_eq!(list.reclaim(&q, &mut |_| {}), 1);
    }

    #[test]
    fn items_are_any_copy_type_and_the_unexpired_keep_their_order() {
        // The kernel's items: (table, pool) pairs.
        #[derive(Clone, Copy, Debug, PartialEq)]
        struct Item(u64, u8);
        let q: Qsbr<2> = Qsbr::new();
        let mut list: RetireList<Item, 2, 4> = RetireList::new();
        list.retire(&q, Item(0x1000, 0)).unwrap(); // core 1 even: expires at once
        q.enter(1);
        list.retire(&q, Item(0x2000, 1)).unwrap();
        list.retire(&q, Item(0x3000, 2)).unwrap();
        q.exit(1);
        q.enter(1);
        list.retire(&q, Item(0x4000, 3)).unwrap(); // core 1 in the kernel again
        assert!(list.is_full());
        assert_eq!(list.retire(&q, Item(0x9000, 9)), Err(Item(0x9000, 9)));
        let mut freed = Vec::new();
        assert_eq!(list.reclaim(&q, &mut |i| freed.push(i)), 3);
        assert_eq!(
            freed,
            vec![Item(0x1000, 0), Item(0x2000, 1), Item(0x3000, 2)]
        );
        assert_eq!(list.len(), 1);
        list.retire(&q, Item(0x5000, 4)).unwrap();
        q.exit(1);
        freed.clear();
        assert_eq!(list.reclaim(&q, &mut |i| freed.push(i)), 2);
        assert_eq!(freed, vec![Item(0x4000, 3), Item(0x5000, 4)]);
        assert!(list.is_empty());
    }
}

/// Model checks (`RUSTFLAGS="--cfg loom" cargo test -p kcore --lib --release loom`): every
/// interleaving of a walker and a reclaimer.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicUsize};
    use loom::sync::Arc;
    use loom::thread;

    /// Two "tables", each a poison flag; the entry names the live one (0 or 1).
    struct World {
        q: Qsbr<2>,
        entry: AtomicUsize,
        poisoned: [AtomicBool; 2],
    }

    /// A walker that enters the kernel, follows the entry and reads the table, then leaves;
    /// a reclaimer on the other core swaps in table 1, retires table 0, waits for its grace
    /// period and poisons it (reuse). The walker must never read a poisoned table.
    #[test]
    fn no_table_is_reused_while_a_walker_can_read_it() {
        loom::model(|| {
            let w = Arc::new(World {
                q: Qsbr::new(),
                entry: AtomicUsize::new(0),
                poisoned: [AtomicBool::new(false), AtomicBool::new(false)],
            });
            let walker = {
                let w = w.clone();
                thread::spawn(move || {
                    w.q.enter(1);
                    let t = w.entry.load(Ordering::Acquire);
                    assert!(
                        !w.poisoned[t].load(Ordering::Relaxed),
                        "read a reused table"
                    );
                    w.q.exit(1);
                })
            };
            w.q.enter(0);
            w.entry.store(1, Ordering::Release); // unlink table 0
            let mut list: RetireList<u64, 2, 1> = RetireList::new();
            list.retire(&w.q, 0).unwrap();
            w.q.exit(0);
            w.q.enter(0);
            let mut freed = 0;
            while freed == 0 {
                freed = list.reclaim(&w.q, &mut |t| {
                    w.poisoned[t as usize].store(true, Ordering::Relaxed)
                });
                if freed == 0 {
                    thread::yield_now();
                }
            }
            w.q.exit(0);
            walker.join().unwrap();
        });
    }

    /// A core that makes one kernel visit and then stays in its guest (even) for ever: the
    /// retiring core's wait for the grace period ends in every interleaving (a spin that
    /// never ended would exceed loom's branch limit and fail the model).
    #[test]
    fn a_grace_period_ends_while_a_core_stays_in_its_guest() {
        loom::model(|| {
            let q: Arc<Qsbr<2>> = Arc::new(Qsbr::new());
            let guest = {
                let q = q.clone();
                thread::spawn(move || {
                    q.enter(1);
                    q.exit(1);
                    // Runs its guest from here on without exits.
                })
            };
            let mut list: RetireList<u64, 2, 1> = RetireList::new();
            q.enter(0);
            list.retire(&q, 7).unwrap();
            q.exit(0);
            loop {
                q.enter(0);
                let freed = list.reclaim(&q, &mut |t| assert_eq!(t, 7));
                q.exit(0);
                if freed == 1 {
                    break;
                }
                thread::yield_now();
            }
            guest.join().unwrap();
        });
    }

    /// A core that never enters the kernel (a guest in a tight loop) does not hold up the
    /// grace period: reclamation finishes without it.
    #[test]
    fn a_core_that_never_exits_a_guest_does_not_block() {
        loom::model(|| {
            let q: Arc<Qsbr<2>> = Arc::new(Qsbr::new());
            let mut list: RetireList<u64, 2, 1> = RetireList::new();
            q.enter(0);
            list.retire(&q, 7).unwrap();
            q.exit(0);
            q.enter(0);
            let mut got = 0;
            assert_eq!(list.reclaim(&q, &mut |t| got = t), 1);
            assert_eq!(got, 7);
            q.exit(0);
        });
    }
}
