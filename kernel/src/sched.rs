//! Threads on cores: each core's current thread, its run queues and its time-partition
//! schedule; switching and idling.
//!
//! A thread is a TCB object (`kcore::thread::tcb` layout) in kernel-owned RAM; its saved
//! registers are the first bytes of the TCB, so the entry code saves straight into it.
//! Each thread has an affinity core; a core runs only its own threads. Waking a thread of
//! another core queues it there and sends that core an SGI so it reschedules.
//!
//! Time partitions: a core's schedule is a major frame of windows, each owned by one
//! partition and lasting a number of timer ticks. Only threads of the window's partition
//! run in it (fixed priorities, round robin among equals); when no such thread is ready
//! the core idles until the window ends, so a partition never gets another's time. A core
//! with no schedule has one endless window of partition 0.
//!
//! Locking, in this order: the capability-and-IPC lock (`cspace::CAPS`: the state of
//! capabilities, endpoints and notifications and the IPC fields of TCBs), then, on the
//! fast path only, one endpoint's lock, then one core's scheduler state (run queues,
//! current thread, schedule). The slow paths hold all of `CAPS`; the same-core fast path
//! (`fastpath`) holds its own core's part and the endpoint's lock (`docs/design/ipc.md`).
//! A thread is in at most one queue at a time: an endpoint's or its core's run queue
//! (under that core's lock).

use core::sync::atomic::{AtomicBool, Ordering};
use kcore::thread::{self, tcb, ObjMem, RunQueue, State};

use crate::arch::cpu::{self, UserContext, MAX_CPUS};
use crate::arch::regs::{isb, sysreg_read, sysreg_write};
use crate::ipcbuf::IpcMem;
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
    /// The thread whose timer state (and VCPU state, for a VCPU thread) is loaded on this
    /// core (0: none).
    pub loaded: u64,
    /// The thread whose FP/SIMD registers this core holds (0: none); others trap on
    /// their first FP instruction and get theirs then.
    pub fp_owner: u64,
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
            fp_owner: 0,
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

/// Per core: the VTTBR_EL2 value loaded (u64::MAX: unknown), so that returning to a
/// thread of the same address space skips the stage-2 register writes.
static LOADED_VTTBR: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(u64::MAX) }; MAX_CPUS];

/// This core's stage-2 registers were changed outside `resume` (task teardown): load
/// them again at the next return to a thread.
pub fn forget_vttbr() {
    LOADED_VTTBR[cpu::index()].store(u64::MAX, Ordering::Relaxed);
}

/// SGI that asks a core to reschedule.
pub const SGI_RESCHED: u32 = 3;

/// The core thread `t` runs on.
pub fn core_of(t: u64) -> usize {
    (KObj.rd(t + tcb::CORE) as usize).min(MAX_CPUS - 1)
}

fn kick(mask: u32) {
    let me = cpu::index();
    for c in 0..MAX_CPUS {
        if mask & (1 << c) != 0 && c != me {
            crate::arch::gic::send_sgi(SGI_RESCHED, cpu::get(c).mpidr.load(Ordering::Relaxed));
        }
    }
}

/// Runs an IPC operation `f` under the whole capability-and-IPC lock (messages may carry
/// a capability). `f` gets the object memory and a `wake` function for the threads it makes
/// ready: each goes to its own core's run queue, and cores other than this one are sent
/// an SGI once the locks are released.
pub fn ipc<R>(f: impl FnOnce(&mut IpcMem<'_>, &mut dyn FnMut(&mut IpcMem<'_>, u64)) -> R) -> R {
    let mut caps = crate::cspace::CAPS.lock();
    ipc_with(&mut caps, f)
}

/// As [`ipc`], for callers that already hold the whole lock.
pub fn ipc_with<R>(
    caps: &mut crate::cspace::KernelSlots,
    f: impl FnOnce(&mut IpcMem<'_>, &mut dyn FnMut(&mut IpcMem<'_>, u64)) -> R,
) -> R {
    let mut mask = 0u32;
    let mut wake = |m: &mut IpcMem<'_>, t: u64| {
        let c = core_of(t);
        let mut s = SCHED[c].lock();
        // A thread that blocked on its core and is woken before that core rescheduled is
        // still its current thread: the core's `resume` finds it ready and keeps it.
        // Queuing it as well would put it in the run queue while it runs (and, once it
        // blocks again, in a run queue and an endpoint queue at once).
        if s.current != t {
            s.rq.push(&mut KObj, t);
        }
        drop(s);
        let _ = m;
        mask |= 1 << c;
    };
    let mut mem = IpcMem { caps };
    let r = f(&mut mem, &mut wake);
    kick(mask);
    r
}

/// Makes `woken`, threads of this core, ready after a fast-path IPC by this core's
/// current thread `cur`. If `cur` blocked and one thread woke that outranks everything
/// queued in the window's partition, it becomes the current thread at once, which is
/// what `resume` would pick after a round trip through the run queue; otherwise they
/// are queued (an equal priority waits behind those already queued, as on the slow path).
pub fn ready_here(cur: u64, woken: &[u64]) {
    let mut s = SCHED[cpu::index()].lock();
    if let [t] = *woken {
        let ap = s.active_partition();
        if s.current == cur && thread::state(&KObj, cur) != State::Ready && partition_of(t) == ap {
            let prio = KObj.rd(t + tcb::PRIO) as u8;
            if s.rq.by_partition[ap]
                .top_priority()
                .is_none_or(|p| p < prio)
            {
                s.current = t;
                return;
            }
        }
    }
    for &t in woken {
        if s.current != t {
            s.rq.push(&mut KObj, t);
        }
    }
}

/// Runs `f` under the whole capability-and-IPC lock, taking it unless this core already
/// holds it (`stop` and `reset` are reached both from capability operations and from
/// trap handlers).
fn with_caps<R>(f: impl FnOnce() -> R) -> R {
    if crate::cspace::CAPS.held_here() {
        f()
    } else {
        let _g = crate::cspace::CAPS.lock();
        f()
    }
}

/// The thread running on this core (0 if idle).
pub fn current() -> u64 {
    cpu::current_thread()
}

/// Stops thread `t` wherever it is (suspend, or its TCB is being destroyed): out of the
/// run queue and any endpoint queue, Inactive, `x0 = error`. If it is running on another
/// core, that core forgets it at once (its next kernel entry saves into a scratch area,
/// never into this TCB again) and is sent an SGI.
pub fn stop(t: u64, error: u64) {
    let remote = with_caps(|| stop_locked(t, error));
    if let Some(c) = remote {
        kick(1 << c);
    }
}

/// [`stop`] under the whole lock: returns the core to kick, if `t` ran on another one.
fn stop_locked(t: u64, error: u64) -> Option<usize> {
    let me = cpu::index();
    let c = core_of(t);
    let mut remote = false;
    {
        let mut s = SCHED[c].lock();
        s.rq.remove(&mut KObj, t);
        thread::cancel(&mut KObj, t, error);
        if s.loaded == t {
            if c == me {
                // Its timer stays loaded until the next switch: stop it now.
                sysreg_write!("cntp_ctl_el0", 0);
                sysreg_write!("cntv_ctl_el0", 0);
            }
            s.loaded = 0;
        }
        if s.fp_owner == t {
            // Its FP registers are never saved into the TCB again.
            s.fp_owner = 0;
        }
        if s.current == t && c != me {
            s.current = 0;
            cpu::redirect_to_scratch(c);
            remote = true;
        }
    }
    remote.then_some(c)
}

/// If thread `t` is running on another core, makes that core enter the kernel (it then
/// sees what changed for `t`, e.g. a virtual interrupt to deliver).
pub fn kick_thread(t: u64) {
    let c = core_of(t);
    if c != cpu::index() && SCHED[c].lock().current == t {
        kick(1 << c);
    }
}

/// The FP/SIMD trap of the thread running on this core: it gets its registers.
pub fn fp_trap() {
    let me = cpu::index();
    let cur = current();
    let mut s = SCHED[me].lock();
    if cur != 0 && s.current == cur {
        s.fp_owner = crate::vcpu::fp_trap(s.fp_owner, cur);
    }
}

/// Sets a TCB field that decides which run queue the thread is in (`tcb::PRIO` or
/// `tcb::PARTITION`); a queued thread is requeued under the new value.
pub fn set_queue_field(t: u64, field: u64, v: u64) {
    let mut s = SCHED[core_of(t)].lock();
    let queued = s.rq.remove(&mut KObj, t);
    KObj.wr(t + field, v);
    if queued {
        s.rq.push(&mut KObj, t);
    }
}

/// Moves inactive (unqueued) thread `t` to core `c` (the caller holds the whole
/// capability-and-IPC lock, under which fast paths read a thread's core).
pub fn set_core(_caps: &mut crate::cspace::KernelSlots, t: u64, c: usize) {
    KObj.wr(t + tcb::CORE, c as u64);
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

/// Forgets every thread on every core (the boot task that owned them ended): empty run
/// queues, no current thread, no schedule. Other cores running one of them are
/// redirected and kicked as in [`stop`].
pub fn reset() {
    let me = cpu::index();
    sysreg_write!("cntp_ctl_el0", 0);
    cpu::set_context(core::ptr::null_mut());
    let mask = with_caps(|| {
        let mut mask = 0u32;
        for (c, sc) in SCHED.iter().enumerate() {
            let mut s = sc.lock();
            if c != me && s.current != 0 {
                cpu::redirect_to_scratch(c);
                mask |= 1 << c;
            }
            *s = CoreSched::new();
        }
        mask
    });
    kick(mask);
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

/// Saves the guest state loaded on this core (EL1 registers, timers, virtual CPU
/// interface) into its thread and VCPU, leaving nothing loaded.
fn unload(s: &mut CoreSched) {
    let loaded = s.loaded;
    KObj.wr(loaded + tcb::TIMER_CTL, sysreg_read!("cntp_ctl_el0") & 1);
    KObj.wr(loaded + tcb::TIMER_CVAL, sysreg_read!("cntp_cval_el0"));
    sysreg_write!("cntp_ctl_el0", 0);
    crate::vcpu::switch(loaded, 0);
    s.loaded = 0;
}

/// The current thread, a VCPU thread, exits to its VMM: its guest state goes to memory
/// now, before the exit message can wake a VMM on another core, which reads and writes
/// that state (VcpuReadSysreg, VcpuWriteSysreg, an injected abort) while the guest waits.
/// Had it stayed loaded, the next `resume` of the same thread here would keep the live
/// registers and lose what the VMM wrote. (For a VMM on this core the switch to it would
/// save the state anyway; doing it here costs nothing more.)
pub fn unload_current_guest() {
    let mut s = SCHED[cpu::index()].lock();
    if s.current != 0 && s.loaded == s.current && crate::vcpu::of(s.current) != 0 {
        unload(&mut s);
    }
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
        crate::vcpu::switch(loaded, next);
        s.loaded = next;
    } else if next == 0 && crate::vcpu::of(s.loaded) != 0 {
        // Idle after a guest: its EL1 state goes to memory now, where its VMM reads it
        // while the guest waits for a reply (a native thread's timer stays loaded).
        unload(&mut s);
    }
    let fp_mine = next != 0 && s.fp_owner == next;
    drop(s);
    if next == 0 {
        cpu::set_context(core::ptr::null_mut());
        IDLE[me].store(true, Ordering::Relaxed);
        crate::vm::exit();
        crate::arch::idle();
    }
    IDLE[me].store(false, Ordering::Relaxed);
    crate::arch::virt::trap_fp(!fp_mine);
    let vcpu = crate::vcpu::of(next);
    let vttbr = KObj.rd(next + tcb::VTTBR);
    // The cached value records the address space and whether it ran a guest.
    let key = vttbr ^ ((vcpu != 0) as u64);
    if LOADED_VTTBR[me].swap(key, Ordering::Relaxed) != key {
        sysreg_write!("vttbr_el2", vttbr);
        sysreg_write!("vtcr_el2", kcore::stage2::VTCR);
        crate::arch::virt::set_hcr(if vcpu != 0 {
            crate::vcpu::HCR_GUEST
        } else {
            crate::task::HCR_NATIVE
        });
        isb();
    }
    if vcpu != 0 {
        crate::vcpu::flush_pending(vcpu);
    }
    crate::vm::exit();
    let ctx = next as usize as *mut UserContext;
    cpu::set_context(ctx);
    // SAFETY: `next` is a live TCB (in a run queue or current, so not destroyed: destroy
    // removes it first) whose first 272 bytes are its saved registers, a UserContext.
    crate::arch::resume_user(unsafe { &*ctx })
}
