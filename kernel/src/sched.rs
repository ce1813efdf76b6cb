//! Threads on cores: each core's current thread, its run queues and its time-partition
//! schedule; switching and idling.
//!
//! A thread is a TCB object (`kcore::thread::tcb` layout) in kernel-owned RAM; its saved
//! registers are the first bytes of the TCB, so the entry code saves straight into it.
//! For now every thread runs on the boot core (core 0); other cores idle.
//!
//! Time partitions: a core's schedule is a major frame of windows, each owned by one
//! partition and lasting a number of timer ticks. Only threads of the window's partition
//! run in it (fixed priorities, round robin among equals); when no such thread is ready
//! the core idles until the window ends, so a partition never gets another's time. A core
//! with no schedule has one endless window of partition 0.
//!
//! Locking: one lock per core's scheduler state. The capability lock (`cspace::CAPS`) is
//! taken before it when both are needed, never after.

use core::sync::atomic::{AtomicBool, Ordering};
use kcore::thread::{self, tcb, ObjMem, RunQueue, State};

use crate::arch::cpu::{self, UserContext, MAX_CPUS};
use crate::arch::regs::{isb, sysreg_read, sysreg_write};
use crate::sync::SpinLock;

/// Partitions a core's schedule can name.
pub const MAX_PARTITIONS: usize = 4;
/// Windows in one major frame.
pub const MAX_WINDOWS: usize = 8;

/// Kernel objects through the identity map.
pub struct KObj;

impl ObjMem for KObj {
    fn rd(&self, addr: u64) -> u64 {
        // SAFETY: callers pass fields of TCB and endpoint objects, which lie in RAM the
        // kernel owns (retyped from Untyped memory or allocated at boot), identity mapped;
        // fields are 8-byte aligned.
        unsafe { core::ptr::read_volatile(addr as usize as *const u64) }
    }
    fn wr(&mut self, addr: u64, v: u64) {
        // SAFETY: as in `rd`; writers hold the scheduler lock of the object's core.
        unsafe { core::ptr::write_volatile(addr as usize as *mut u64, v) }
    }
}

fn partition_of(t: u64) -> usize {
    (KObj.rd(t + tcb::PARTITION) as usize).min(MAX_PARTITIONS - 1)
}

/// Ready threads of one core, one priority queue per partition.
pub struct Queues {
    by_partition: [RunQueue; MAX_PARTITIONS],
}

impl Queues {
    const fn new() -> Self {
        Queues {
            by_partition: [const { RunQueue::new() }; MAX_PARTITIONS],
        }
    }
    /// Queues `t` (Ready) in its partition.
    pub fn push(&mut self, m: &mut KObj, t: u64) {
        self.by_partition[partition_of(t)].push(m, t);
    }
    /// Takes `t` out if it is queued (true if it was).
    pub fn remove(&mut self, m: &mut KObj, t: u64) -> bool {
        self.by_partition[partition_of(t)].remove(m, t)
    }
}

/// One core's scheduler state.
pub struct CoreSched {
    /// Ready threads (the current one is not in here).
    pub rq: Queues,
    /// The running thread's TCB, 0 when idle.
    pub current: u64,
    /// The thread whose timer state is loaded on this core (0: none).
    pub loaded: u64,
    /// The major frame: (partition, ticks) per window; empty = partition 0 forever.
    windows: [(u8, u32); MAX_WINDOWS],
    nwindows: usize,
    window: usize,
    ticks_left: u32,
}

impl CoreSched {
    const fn new() -> Self {
        CoreSched {
            rq: Queues::new(),
            current: 0,
            loaded: 0,
            windows: [(0, 0); MAX_WINDOWS],
            nwindows: 0,
            window: 0,
            ticks_left: 0,
        }
    }

    fn active_partition(&self) -> usize {
        if self.nwindows == 0 {
            0
        } else {
            self.windows[self.window].0 as usize
        }
    }
}

/// Per-core scheduler state.
pub static SCHED: [SpinLock<CoreSched>; MAX_CPUS] =
    [const { SpinLock::new(CoreSched::new()) }; MAX_CPUS];

/// Per core: the running thread's time slice is over (timer tick).
static SLICE_OVER: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per core: it sits in the idle loop (an interrupt may then pick a thread).
static IDLE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The core threads run on.
const THREAD_CORE: usize = 0;

/// The thread running on this core (0 if idle).
pub fn current() -> u64 {
    SCHED[cpu::index()].lock().current
}

/// Makes `t` (now Ready) runnable.
pub fn wake(s: &mut CoreSched, t: u64) {
    s.rq.push(&mut KObj, t);
}

/// Runs `f` with the thread core's scheduler state.
pub fn with<R>(f: impl FnOnce(&mut CoreSched) -> R) -> R {
    f(&mut SCHED[THREAD_CORE].lock())
}

/// Stops thread `t` wherever it is (suspend, or its TCB is being destroyed): out of the
/// run queue and any endpoint queue, Inactive, `x0 = error`.
pub fn stop(t: u64, error: u64) {
    with(|s| {
        s.rq.remove(&mut KObj, t);
        thread::cancel(&mut KObj, t, error);
        if s.loaded == t {
            // Its timer stays on this core until the next switch; stop it now, and never
            // save into a TCB that may be about to be freed.
            sysreg_write!("cntp_ctl_el0", 0);
            s.loaded = 0;
        }
    });
}

/// Moves inactive thread `t` to partition `p` (queued threads are requeued).
pub fn set_partition(t: u64, p: u64) {
    with(|s| {
        let queued = s.rq.remove(&mut KObj, t);
        KObj.wr(t + tcb::PARTITION, p);
        if queued {
            s.rq.push(&mut KObj, t);
        }
    });
}

/// Installs a major frame of `(partition, ticks)` windows on `core` (empty: partition 0
/// forever). The first window starts at the next tick.
pub fn set_windows(core: usize, windows: &[(u8, u32)]) {
    let mut s = SCHED[core].lock();
    let n = windows.len().min(MAX_WINDOWS);
    s.nwindows = n;
    s.windows[..n].copy_from_slice(&windows[..n]);
    s.window = 0;
    s.ticks_left = s.windows[0].1;
}

/// The timer ticked on this core: end the running thread's slice, advance the window.
pub fn tick() {
    let me = cpu::index();
    SLICE_OVER[me].store(true, Ordering::Relaxed);
    let mut s = SCHED[me].lock();
    if s.nwindows > 0 {
        s.ticks_left = s.ticks_left.saturating_sub(1);
        if s.ticks_left == 0 {
            s.window = (s.window + 1) % s.nwindows;
            s.ticks_left = s.windows[s.window].1;
        }
    }
}

/// Ends the running thread's slice now (Yield).
pub fn yield_slice() {
    SLICE_OVER[cpu::index()].store(true, Ordering::Relaxed);
}

/// Forgets every thread (the boot task that owned them ended): empty run queues, no
/// current thread, no schedule.
pub fn reset() {
    sysreg_write!("cntp_ctl_el0", 0);
    with(|s| *s = CoreSched::new());
}

/// Called after an interrupt taken in the kernel: if this core was idling, pick a thread
/// (never returns then).
pub fn after_kernel_irq() {
    if IDLE[cpu::index()].load(Ordering::Relaxed) {
        resume();
    }
}

/// Saves the EL1 physical timer of `prev` (if any) and loads `next`'s.
fn switch_timer(prev: u64, next: u64) {
    if prev != 0 {
        KObj.wr(prev + tcb::TIMER_CTL, sysreg_read!("cntp_ctl_el0") & 1);
        KObj.wr(prev + tcb::TIMER_CVAL, sysreg_read!("cntp_cval_el0"));
    }
    sysreg_write!("cntp_ctl_el0", 0);
    sysreg_write!("cntp_cval_el0", KObj.rd(next + tcb::TIMER_CVAL));
    sysreg_write!("cntp_ctl_el0", KObj.rd(next + tcb::TIMER_CTL) & 1);
}

/// Picks the thread to run on this core and returns to it, or idles.
pub fn resume() -> ! {
    let me = cpu::index();
    let mut s = SCHED[me].lock();
    let cur = s.current;
    let slice_over = SLICE_OVER[me].swap(false, Ordering::Relaxed);
    let ap = s.active_partition();
    if cur != 0 && thread::state(&KObj, cur) == State::Ready {
        if partition_of(cur) != ap {
            // Its window is over.
            s.rq.push(&mut KObj, cur);
            s.current = 0;
        } else {
            let prio = KObj.rd(cur + tcb::PRIO) as u8;
            let top = s.rq.by_partition[ap].top_priority();
            if top.is_some_and(|p| p > prio || (slice_over && p == prio)) {
                s.rq.push(&mut KObj, cur);
                s.current = 0;
            }
        }
    } else {
        s.current = 0;
    }
    if s.current == 0 {
        s.current = s.rq.by_partition[ap].pop(&mut KObj).unwrap_or(0);
    }
    let next = s.current;
    if next != 0 && next != s.loaded {
        let loaded = s.loaded;
        switch_timer(loaded, next);
        s.loaded = next;
    }
    drop(s);
    if next == 0 {
        cpu::set_context(core::ptr::null_mut());
        IDLE[me].store(true, Ordering::Relaxed);
        crate::arch::idle();
    }
    IDLE[me].store(false, Ordering::Relaxed);
    sysreg_write!("vttbr_el2", KObj.rd(next + tcb::VTTBR));
    sysreg_write!("vtcr_el2", kcore::stage2::VTCR);
    sysreg_write!("hcr_el2", crate::task::HCR_NATIVE);
    isb();
    let ctx = next as usize as *mut UserContext;
    cpu::set_context(ctx);
    // SAFETY: `next` is a live TCB (in a run queue or current, so not destroyed: destroy
    // removes it first) whose first 272 bytes are its saved registers, a UserContext.
    crate::arch::resume_user(unsafe { &*ctx })
}
