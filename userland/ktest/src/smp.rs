//! Test cases across cores: IPC with a server on another core, signals to a waiter on
//! another core, affinity errors, and stopping a thread while it runs on another core.

use crate::caps::Case;
use crate::threads::{SEEN, STEP};
use crate::util::*;
use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::{call, exit, invocation, ipc, Error, MessageInfo, Msg, Syscall};
use core::sync::atomic::{AtomicU64, Ordering};

const F: u64 = FREE;
const EP: u64 = F + 60;
const NTFN: u64 = F + 61;

#[repr(C, align(16))]
struct Stacks([[u64; 1024]; 3]);
static mut STACKS: Stacks = Stacks([[0; 1024]; 3]);
static SPIN: AtomicU64 = AtomicU64::new(0);

fn tcb(slot: u64, label: u64, mr: [u64; 4]) -> Result<(), Error> {
    call(slot, MessageInfo::new(label, 4), mr)
}

/// A thread in `slot` on core `core` running `entry(arg)` at `prio` on stack `stack`.
fn spawn_on(
    ut: u64,
    slot: u64,
    core: u64,
    entry: extern "C" fn(u64) -> !,
    arg: u64,
    prio: u64,
    stack: usize,
) -> Outcome {
    make(ut, ObjectType::Tcb, 0, slot).map_err(|_| "tcb")?;
    tcb(slot, invocation::TCB_CONFIGURE, [ROOT, prio, 0, 0]).map_err(|_| "configure")?;
    expect(
        tcb(slot, invocation::TCB_SET_AFFINITY, [core, 0, 0, 0]),
        Ok(()),
        "affinity",
    )?;
    let sp = core::ptr::addr_of!(STACKS) as u64 + ((stack + 1) * 1024 * 8) as u64;
    tcb(
        slot,
        invocation::TCB_WRITE_REGISTERS,
        [entry as *const () as u64, sp, arg, 0],
    )
    .map_err(|_| "regs")?;
    tcb(slot, invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")
}

extern "C" fn doubler(_: u64) -> ! {
    let (_, mut m) = ipc(Syscall::Recv, EP, &Msg::default());
    loop {
        let r = ipc(
            Syscall::ReplyRecv,
            EP,
            &Msg {
                info: 0,
                mr: [m.mr[0] * 2, 0, 0, 0],
                badge: 0,
            },
        );
        m = r.1;
    }
}

extern "C" fn remote_waiter(_: u64) -> ! {
    let (e, m) = ipc(Syscall::Wait, NTFN, &Msg::default());
    SEEN.store(
        if e == 0 { m.badge + 1 } else { 1000 + e },
        Ordering::SeqCst,
    );
    exit(0)
}

extern "C" fn remote_spinner(_: u64) -> ! {
    loop {
        SPIN.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits (bounded) until `f` holds.
fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..5_000_000 {
        if f() {
            return true;
        }
        core::hint::spin_loop();
    }
    f()
}

fn cross_core_call_reply(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    spawn_on(ut, F, 1, doubler, 0, 200, 0)?;
    for v in [1u64, 21, 1 << 40] {
        let (e, r) = ipc(
            Syscall::Call,
            EP,
            &Msg {
                info: 0,
                mr: [v, 0, 0, 0],
                badge: 0,
            },
        );
        check(
            e == 0 && r.mr[0] == v * 2,
            "wrong reply from the server on core 1",
        )?;
    }
    Ok(())
}

fn cross_core_signal(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, NTFN).map_err(|_| "ntfn")?;
    SEEN.store(0, Ordering::SeqCst);
    spawn_on(ut, F, 2, remote_waiter, 0, 200, 1)?;
    // Let it block first (it may not have started yet: signals accumulate anyway).
    check(ipc(Syscall::Signal, NTFN, &Msg::default()).0 == 0, "signal")?;
    check(
        eventually(|| SEEN.load(Ordering::SeqCst) == 1),
        "waiter on core 2 never woke",
    )
}

fn affinity_errors(ut: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, F).map_err(|_| "tcb")?;
    expect(
        tcb(F, invocation::TCB_SET_AFFINITY, [99, 0, 0, 0]),
        Err(Error::RangeError),
        "core 99",
    )?;
    SPIN.store(0, Ordering::SeqCst);
    spawn_on(ut, F + 1, 1, remote_spinner, 0, 100, 2)?;
    expect(
        tcb(F + 1, invocation::TCB_SET_AFFINITY, [0, 0, 0, 0]),
        Err(Error::IllegalOperation),
        "a running thread",
    )
}

fn stop_thread_running_on_another_core(ut: u64) -> Outcome {
    SPIN.store(0, Ordering::SeqCst);
    spawn_on(ut, F, 3, remote_spinner, 0, 100, 2)?;
    check(
        eventually(|| SPIN.load(Ordering::SeqCst) > 1000),
        "spinner on core 3 never ran",
    )?;
    expect(tcb(F, invocation::TCB_SUSPEND, [0; 4]), Ok(()), "suspend")?;
    // Give core 3 time to take the SGI, then the count must stay put.
    eventually(|| false);
    let a = SPIN.load(Ordering::SeqCst);
    eventually(|| false);
    check(
        SPIN.load(Ordering::SeqCst) == a,
        "thread kept running after suspend",
    )?;
    STEP.store(0, Ordering::SeqCst);
    // Resume it and stop it again by deleting its TCB (the last cap): the same must hold.
    expect(tcb(F, invocation::TCB_RESUME, [0; 4]), Ok(()), "resume")?;
    check(
        eventually(|| SPIN.load(Ordering::SeqCst) > a + 1000),
        "resumed thread did not run",
    )?;
    expect(delete(F), Ok(()), "delete")?;
    eventually(|| false);
    let b = SPIN.load(Ordering::SeqCst);
    eventually(|| false);
    check(
        SPIN.load(Ordering::SeqCst) == b,
        "thread kept running after its TCB was destroyed",
    )
}

/// The cross-core cases.
pub const CASES: &[(&str, Case)] = &[
    ("cross_core_call_reply", cross_core_call_reply),
    ("cross_core_signal", cross_core_signal),
    ("affinity_errors", affinity_errors),
    (
        "stop_thread_running_on_another_core",
        stop_thread_running_on_another_core,
    ),
];
