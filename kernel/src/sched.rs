//! Threads on cores: each core's current thread and run queue, switching and idling.
//!
//! A thread is a TCB object (`kcore::thread::tcb` layout) in kernel-owned RAM; its saved
//! registers are the first bytes of the TCB, so the entry code saves straight into it.
//! For now every thread runs on the boot core (core 0); other cores idle.
//!
//! Locking: one lock per core's scheduler state. The capability lock (`cspace::CAPS`) is
//! taken before it when both are needed, never after.

use core::sync::atomic::{AtomicBool, Ordering};
use kcore::thread::{self, tcb, ObjMem, RunQueue, State};

use crate::arch::cpu::{self, UserContext, MAX_CPUS};
use crate::arch::regs::{isb, sysreg_write};
use crate::sync::SpinLock;

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

/// One core's scheduler state.
pub struct CoreSched {
    /// Ready threads (the current one is not in here).
    pub rq: RunQueue,
    /// The running thread's TCB, 0 when idle.
    pub current: u64,
    /// The thread whose timer state is loaded on this core (0: none).
    pub loaded: u64,
}

/// Per-core scheduler state.
pub static SCHED: [SpinLock<CoreSched>; MAX_CPUS] = [const {
    SpinLock::new(CoreSched {
        rq: RunQueue::new(),
        current: 0,
        loaded: 0,
    })
}; MAX_CPUS];

/// Set when the running thread's time slice is over (timer tick).
static SLICE_OVER: AtomicBool = AtomicBool::new(false);

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

/// The timer ticked on this core: end the running thread's slice.
pub fn tick() {
    SLICE_OVER.store(true, Ordering::Relaxed);
}

/// Forgets every thread (the boot task that owned them ended): empty run queue, no
/// current thread.
pub fn reset() {
    sysreg_write!("cntp_ctl_el0", 0);
    with(|s| {
        *s = CoreSched {
            rq: RunQueue::new(),
            current: 0,
            loaded: 0,
        };
    });
}

/// Saves the EL1 physical timer of `prev` (if any) and loads `next`'s.
fn switch_timer(prev: u64, next: u64) {
    if prev != 0 {
        KObj.wr(
            prev + tcb::TIMER_CTL,
            crate::arch::regs::sysreg_read!("cntp_ctl_el0") & 1,
        );
        KObj.wr(
            prev + tcb::TIMER_CVAL,
            crate::arch::regs::sysreg_read!("cntp_cval_el0"),
        );
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
    let slice_over = SLICE_OVER.swap(false, Ordering::Relaxed);
    if cur != 0 && thread::state(&KObj, cur) == State::Ready {
        let prio = KObj.rd(cur + tcb::PRIO) as u8;
        let better =
            s.rq.top_priority()
                .is_some_and(|p| p > prio || (slice_over && p == prio));
        if better {
            s.rq.push(&mut KObj, cur);
            s.current = 0;
        }
    } else {
        s.current = 0;
    }
    if s.current == 0 {
        s.current = s.rq.pop(&mut KObj).unwrap_or(0);
    }
    let next = s.current;
    if next != 0 && next != s.loaded {
        switch_timer(s.loaded, next);
        s.loaded = next;
    }
    drop(s);
    if next == 0 {
        cpu::set_context(core::ptr::null_mut());
        crate::arch::idle();
    }
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
