//! Test cases of scheduling: round robin among equal priorities, and time partitions (a
//! thread of partition A never runs in B's window). Busy threads count in an atomic; the
//! test thread watches the counter while it runs and notices when it was descheduled (a
//! gap in the counter's time), so it can tell when the other thread may run.

use crate::caps::Case;
use crate::util::*;
use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::{call, invocation, Error, MessageInfo};
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::cap::Cap;

const F: u64 = FREE;
static COUNT: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(16))]
struct Stack([u64; 512]);
static mut STACK: Stack = Stack([0; 512]);

extern "C" fn spinner(_: u64) -> ! {
    loop {
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn now() -> u64 {
    let t: u64;
    // SAFETY: reading the physical counter (EL0 access is enabled); no memory effects.
    unsafe { core::arch::asm!("isb", "mrs {}, cntpct_el0", out(reg) t) };
    t
}

pub(crate) fn freq() -> u64 {
    let f: u64;
    // SAFETY: as in `now`.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f) };
    f
}

fn sched_control() -> Option<u64> {
    (2..72).find(|&i| matches!(cap_at(i), Cap::SchedControl))
}

fn windows(n: u64, parts: u64, ticks: u64) -> Result<(), Error> {
    let sc = sched_control().ok_or(Error::InvalidCapability)?;
    call(
        sc,
        MessageInfo::new(invocation::SCHED_CONTROL_SET_WINDOWS, 4),
        [0, n, parts, ticks],
    )
}

fn tcb(slot: u64, label: u64, mr: [u64; 4]) -> Result<(), Error> {
    call(slot, MessageInfo::new(label, 4), mr)
}

/// A spinning thread in `slot`, in `partition`, at priority 254 (the test's own).
fn spin_thread(ut: u64, slot: u64, partition: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, slot).map_err(|_| "tcb")?;
    tcb(slot, invocation::TCB_CONFIGURE, [ROOT, 254, 0, 0]).map_err(|_| "configure")?;
    tcb(slot, invocation::TCB_SET_PARTITION, [partition, 0, 0, 0]).map_err(|_| "partition")?;
    let sp = core::ptr::addr_of!(STACK) as u64 + 512 * 8;
    tcb(
        slot,
        invocation::TCB_WRITE_REGISTERS,
        [spinner as *const () as u64, sp, 0, 0],
    )
    .map_err(|_| "regs")?;
    COUNT.store(0, Ordering::SeqCst);
    tcb(slot, invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")
}

/// Watches COUNT for about `ms` milliseconds. Returns (gaps seen, gaps during which the
/// other thread ran) or an error if it ran while this thread was running.
///
/// Each comparison spans from a time read *before* the earlier count to a time read
/// *after* the later count; if that span is short, this thread cannot have been
/// descheduled in between, so the count must not have moved.
fn watch(ms: u64) -> Result<(u32, u32), &'static str> {
    let f = freq();
    let gap = f / 500; // 2 ms: far longer than one loop iteration, shorter than a tick
    let end = now() + f * ms / 1000;
    let (mut gaps, mut ran) = (0, 0);
    let mut base_t = now();
    let mut base_c = COUNT.load(Ordering::SeqCst);
    loop {
        let before = now();
        let c = COUNT.load(Ordering::SeqCst);
        let after = now();
        if after - base_t > gap {
            gaps += 1;
            if c != base_c {
                ran += 1;
            }
        } else if c != base_c {
            return Err("the other thread ran while this one was running");
        }
        base_t = before;
        base_c = c;
        if after >= end {
            return Ok((gaps, ran));
        }
    }
}

fn round_robin_equal_priority(ut: u64) -> Outcome {
    spin_thread(ut, F, 0)?;
    let (gaps, ran) = watch(200)?;
    check(gaps >= 3, "this thread was never descheduled")?;
    check(
        ran >= 3,
        "the other thread did not get the processor in turn",
    )
}

fn partitions_run_only_in_their_windows(ut: u64) -> Outcome {
    spin_thread(ut, F, 1)?;
    // Partition 1 has no window yet: its thread must not run at all.
    let (_, ran) = watch(50)?;
    check(ran == 0, "a thread ran without a window")?;
    check(
        COUNT.load(Ordering::SeqCst) == 0,
        "a thread ran without a window",
    )?;
    // Windows: partition 0 for 3 ticks, partition 1 for 3 ticks.
    expect(windows(2, 0x10, 0x0303), Ok(()), "set windows")?;
    let r = watch(300);
    let _ = windows(0, 0, 0);
    let (gaps, ran) = r?;
    check(gaps >= 4, "the windows did not alternate")?;
    check(ran >= 4, "partition 1 did not run in its windows")
}

fn sched_control_errors(ut: u64) -> Outcome {
    let sc = sched_control().ok_or("no SchedControl cap")?;
    let set = |core, n, p, t| {
        call(
            sc,
            MessageInfo::new(invocation::SCHED_CONTROL_SET_WINDOWS, 4),
            [core, n, p, t],
        )
    };
    expect(
        set(99, 1, 0, 1),
        Err(Error::RangeError),
        "a core that does not exist",
    )?;
    expect(set(0, 9, 0, 1), Err(Error::RangeError), "nine windows")?;
    expect(set(0, 1, 4, 1), Err(Error::RangeError), "partition 4")?;
    expect(set(0, 1, 0, 0), Err(Error::RangeError), "zero ticks")?;
    expect(
        call(sc, MessageInfo::new(99, 0), [0; 4]),
        Err(Error::IllegalOperation),
        "unknown label",
    )?;
    make(ut, ObjectType::Tcb, 0, F).map_err(|_| "tcb")?;
    expect(
        tcb(F, invocation::TCB_SET_PARTITION, [4, 0, 0, 0]),
        Err(Error::RangeError),
        "partition 4 for a thread",
    )?;
    spin_thread(ut, F + 1, 0)?;
    expect(
        tcb(F + 1, invocation::TCB_SET_PARTITION, [1, 0, 0, 0]),
        Err(Error::IllegalOperation),
        "a running thread",
    )
}

/// The scheduling cases.
pub const CASES: &[(&str, Case)] = &[
    ("round_robin_equal_priority", round_robin_equal_priority),
    (
        "partitions_run_only_in_their_windows",
        partitions_run_only_in_their_windows,
    ),
    ("sched_control_errors", sched_control_errors),
];
