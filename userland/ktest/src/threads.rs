//! Test cases of threads and IPC: TCB configure/resume/suspend, priorities, Call/Reply,
//! Send/Recv with badges, non-blocking variants, rights, endpoint deletion aborting its
//! waiters, a faulting thread stopped alone. Child threads share this task's address
//! space; they never log (the task's logger is not shared between threads), they report
//! through IPC and the atomics below.

use crate::caps::Case;
use crate::util::*;
use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::{call, exit, invocation, ipc, Error, MessageInfo, Msg, Syscall};
use core::sync::atomic::{AtomicU64, Ordering};

const F: u64 = FREE;
/// Slots: F = endpoint, F+1 = TCB, F+2.. = extra caps.
const EPS: u64 = F;
const TCB: u64 = F + 1;
const STACK_WORDS: usize = 1024;

#[repr(C, align(16))]
struct Stacks([[u64; STACK_WORDS]; 4]);
static mut STACKS: Stacks = Stacks([[0; STACK_WORDS]; 4]);

/// What a child saw (written by the child, read by the test).
pub static SEEN: AtomicU64 = AtomicU64::new(0);
pub static STEP: AtomicU64 = AtomicU64::new(0);

fn stack_top() -> u64 {
    stack_top_of(0)
}

fn stack_top_of(i: usize) -> u64 {
    core::ptr::addr_of!(STACKS) as u64 + ((i + 1) * STACK_WORDS * 8) as u64
}

/// A thread in root slot `slot` running `entry(arg)` at `prio` on stack `stack`.
pub fn spawn_at(
    ut: u64,
    slot: u64,
    entry: extern "C" fn(u64) -> !,
    arg: u64,
    prio: u64,
    stack: usize,
) -> Outcome {
    make(ut, ObjectType::Tcb, 0, slot).map_err(|_| "tcb")?;
    let t = |label, mr| call(slot, MessageInfo::new(label, 4), mr);
    t(invocation::TCB_CONFIGURE, [ROOT, prio, 0, 0]).map_err(|_| "configure")?;
    t(
        invocation::TCB_WRITE_REGISTERS,
        [entry as *const () as u64, stack_top_of(stack), arg, 0],
    )
    .map_err(|_| "registers")?;
    t(invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")
}

fn tcb(label: u64, mr: [u64; 4]) -> Result<(), Error> {
    call(TCB, MessageInfo::new(label, 4), mr)
}

/// Makes an endpoint at EPS and a thread at TCB running `entry(arg)` at `prio`.
fn spawn(ut: u64, entry: extern "C" fn(u64) -> !, arg: u64, prio: u64) -> Result<(), &'static str> {
    make(ut, ObjectType::Endpoint, 0, EPS).map_err(|_| "endpoint")?;
    make(ut, ObjectType::Tcb, 0, TCB).map_err(|_| "tcb")?;
    tcb(invocation::TCB_CONFIGURE, [ROOT, prio, 0, 0]).map_err(|_| "configure")?;
    tcb(
        invocation::TCB_WRITE_REGISTERS,
        [entry as *const () as u64, stack_top(), arg, 0],
    )
    .map_err(|_| "registers")?;
    SEEN.store(0, Ordering::SeqCst);
    STEP.store(0, Ordering::SeqCst);
    tcb(invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")
}

fn msg(label: u64, v: u64) -> Msg {
    Msg {
        info: MessageInfo::new(label, 1).0,
        mr: [v, 0, 0, 0],
        badge: 0,
    }
}

/// Server: answers every Call with its value plus one, forever.
extern "C" fn adder(_: u64) -> ! {
    let (_, mut m) = ipc(Syscall::Recv, EPS, &Msg::default());
    loop {
        let r = ipc(Syscall::ReplyRecv, EPS, &msg(0, m.mr[0] + 1));
        m = r.1;
    }
}

/// Sends its argument to the endpoint, then exits.
extern "C" fn sender(arg: u64) -> ! {
    let (e, _) = ipc(Syscall::Send, F + 2, &msg(7, arg));
    SEEN.store(e + 1, Ordering::SeqCst);
    exit(0)
}

/// Marks that it ran, then exits.
extern "C" fn marker(arg: u64) -> ! {
    SEEN.store(arg, Ordering::SeqCst);
    exit(0)
}

/// Waits on the endpoint and records the error it came back with.
extern "C" fn waiter(_: u64) -> ! {
    let (e, _) = ipc(Syscall::Recv, EPS, &Msg::default());
    SEEN.store(100 + e, Ordering::SeqCst);
    exit(0)
}

/// Executes an undefined instruction.
extern "C" fn crasher(_: u64) -> ! {
    STEP.store(1, Ordering::SeqCst);
    // SAFETY: `udf` only raises an undefined-instruction exception; the kernel stops
    // this thread.
    unsafe { core::arch::asm!("udf #1") };
    STEP.store(2, Ordering::SeqCst);
    exit(0)
}

fn call_reply(ut: u64) -> Outcome {
    spawn(ut, adder, 0, 100)?;
    for v in [41u64, 1000, u64::MAX - 1] {
        let (e, r) = ipc(Syscall::Call, EPS, &msg(1, v));
        check(e == 0 && r.mr[0] == v + 1, "wrong reply")?;
    }
    Ok(())
}

/// Same-core Call and ReplyRecv take the fast path (counted by the test kernel), long
/// messages included; a capability in the message, and a server on another core, send
/// the Call to the slow path, with the same results.
fn fast_path_same_core_only(ut: u64) -> Outcome {
    spawn(ut, adder, 0, 100)?;
    let count = || bulkhead_sys::debug_fast_path_count().map_err(|_| "count");
    // The server's first ReplyRecv has no caller yet: one Call primes it.
    check(
        ipc(Syscall::Call, EPS, &msg(1, 1)).1.mr[0] == 2,
        "first call",
    )?;
    let before = count()?;
    for v in 0..10u64 {
        let (e, r) = ipc(Syscall::Call, EPS, &msg(1, v));
        check(e == 0 && r.mr[0] == v + 1, "wrong reply")?;
    }
    let long = Msg {
        info: MessageInfo::new(1, 10).0,
        mr: [50, 0, 0, 0],
        badge: 0,
    };
    let (e, r) = ipc(Syscall::Call, EPS, &long);
    check(e == 0 && r.mr[0] == 51, "long message")?;
    // 11 Calls and the server's 11 ReplyRecvs.
    check(
        count()? - before == 22,
        "same-core IPC missed the fast path",
    )?;
    let before = count()?;
    let with_cap = Msg {
        info: MessageInfo::new(1, 1).0 | 1 << 7,
        mr: [60, 0, 0, 0],
        badge: 0,
    };
    let (e, r) = ipc(Syscall::Call, EPS, &with_cap);
    check(e == 0 && r.mr[0] == 61, "call with a cap")?;
    // Only the server's ReplyRecv was fast.
    check(
        count()? - before == 1,
        "a cap-carrying Call took the fast path",
    )?;
    // A server on core 1 (if there is one): the Call is a slow one on this core.
    make(ut, ObjectType::Endpoint, 0, F + 4).map_err(|_| "endpoint")?;
    make(ut, ObjectType::Tcb, 0, F + 5).map_err(|_| "tcb")?;
    let t = |label, mr| call(F + 5, MessageInfo::new(label, 4), mr);
    t(invocation::TCB_CONFIGURE, [ROOT, 100, 0, 0]).map_err(|_| "configure")?;
    if t(invocation::TCB_SET_AFFINITY, [1, 0, 0, 0]).is_err() {
        return Ok(()); // one core only
    }
    t(
        invocation::TCB_WRITE_REGISTERS,
        [remote_adder as *const () as u64, stack_top_of(1), 0, 0],
    )
    .map_err(|_| "registers")?;
    t(invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")?;
    let before = count()?;
    for v in 0..5u64 {
        let (e, r) = ipc(Syscall::Call, F + 4, &msg(1, v));
        check(e == 0 && r.mr[0] == v + 1, "remote reply")?;
    }
    check(count()? == before, "a cross-core Call took the fast path")?;
    t(invocation::TCB_SUSPEND, [0; 4]).map_err(|_| "suspend")
}

/// As `adder`, on the endpoint in slot F + 4.
extern "C" fn remote_adder(_: u64) -> ! {
    let (_, mut m) = ipc(Syscall::Recv, F + 4, &Msg::default());
    loop {
        m = ipc(Syscall::ReplyRecv, F + 4, &msg(0, m.mr[0] + 1)).1;
    }
}

fn send_recv_with_badge(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EPS).map_err(|_| "endpoint")?;
    mint(F + 2, EPS, rights::WRITE, 0xbad9e).map_err(|_| "mint")?;
    // The sender (higher priority) runs at once and blocks in Send: no receiver yet.
    make(ut, ObjectType::Tcb, 0, TCB).map_err(|_| "tcb")?;
    tcb(invocation::TCB_CONFIGURE, [ROOT, 255, 0, 0]).map_err(|_| "configure")?;
    tcb(
        invocation::TCB_WRITE_REGISTERS,
        [sender as *const () as u64, stack_top(), 77, 0],
    )
    .map_err(|_| "regs")?;
    SEEN.store(0, Ordering::SeqCst);
    tcb(invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")?;
    check(SEEN.load(Ordering::SeqCst) == 0, "send did not block")?;
    let (e, m) = ipc(Syscall::Recv, EPS, &Msg::default());
    check(e == 0, "recv failed")?;
    check(m.badge == 0xbad9e, "badge not delivered")?;
    check(
        m.mr[0] == 77 && MessageInfo(m.info).label() == 7,
        "message garbled",
    )?;
    check(SEEN.load(Ordering::SeqCst) == 1, "sender not released")
}

fn non_blocking_variants(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EPS).map_err(|_| "endpoint")?;
    let (e, m) = ipc(Syscall::NBRecv, EPS, &msg(5, 5));
    check(
        e == 0 && m.info == 0 && m.badge == 0,
        "NBRecv with no sender",
    )?;
    let (e, _) = ipc(Syscall::NBSend, EPS, &msg(5, 5));
    check(e == 0, "NBSend with no receiver")?;
    let (e, m) = ipc(Syscall::NBRecv, EPS, &Msg::default());
    check(
        e == 0 && m.info == 0,
        "NBSend was queued instead of dropped",
    )
}

fn ipc_rights_checked(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EPS).map_err(|_| "endpoint")?;
    copy(F + 2, EPS, rights::READ).map_err(|_| "copy r")?;
    copy(F + 3, EPS, rights::WRITE).map_err(|_| "copy w")?;
    let (e, _) = ipc(Syscall::NBSend, F + 2, &Msg::default());
    check(e == Error::InvalidCapability as u64, "send without Write")?;
    let (e, _) = ipc(Syscall::NBRecv, F + 3, &Msg::default());
    check(e == Error::InvalidCapability as u64, "recv without Read")?;
    make(ut, ObjectType::Notification, 0, F + 4).map_err(|_| "ntfn")?;
    let (e, _) = ipc(Syscall::NBSend, F + 4, &Msg::default());
    check(
        e == Error::InvalidCapability as u64,
        "send on a notification",
    )?;
    let (e, _) = ipc(Syscall::NBRecv, F + 30, &Msg::default());
    check(
        e == Error::InvalidCapability as u64,
        "recv on an empty slot",
    )
}

fn higher_priority_runs_first(ut: u64) -> Outcome {
    spawn(ut, marker, 5, 255)?;
    check(
        SEEN.load(Ordering::SeqCst) == 5,
        "higher-priority thread did not preempt",
    )
}

fn lower_priority_waits(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, NTFN).map_err(|_| "ntfn")?;
    mint(F + 2, NTFN, rights::WRITE, 0x55).map_err(|_| "mint")?;
    spawn(ut, signaller, F + 2, 10)?;
    check(
        STEP.load(Ordering::SeqCst) == 0,
        "lower-priority thread ran first",
    )?;
    // Blocking lets it run: it signals (with its badge) the notification this thread
    // waits on, and this thread preempts it again at once.
    let (e, m) = ipc(Syscall::Wait, NTFN, &Msg::default());
    check(
        e == 0 && m.badge == 0x55,
        "lower-priority thread did not run when this one blocked",
    )
}

fn delete_endpoint_aborts_waiter(ut: u64) -> Outcome {
    spawn(ut, waiter, 0, 255)?;
    check(SEEN.load(Ordering::SeqCst) == 0, "waiter did not block")?;
    // Raise it so it runs as soon as it is released.
    delete(EPS).map_err(|_| "delete")?;
    check(
        SEEN.load(Ordering::SeqCst) == 100 + Error::Aborted as u64,
        "waiter not aborted",
    )
}

fn suspend_blocked_thread(ut: u64) -> Outcome {
    spawn(ut, waiter, 0, 255)?;
    expect(tcb(invocation::TCB_SUSPEND, [0; 4]), Ok(()), "suspend")?;
    // The suspended thread must no longer be a receiver: a non-blocking send is dropped.
    let (e, _) = ipc(Syscall::NBSend, EPS, &msg(1, 1));
    check(
        e == 0 && SEEN.load(Ordering::SeqCst) == 0,
        "suspended thread received",
    )
}

fn tcb_invocation_errors(ut: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, TCB).map_err(|_| "tcb")?;
    expect(
        tcb(invocation::TCB_RESUME, [0; 4]),
        Err(Error::IllegalOperation),
        "resume unconfigured",
    )?;
    expect(
        tcb(invocation::TCB_CONFIGURE, [ROOT, 256, 0, 0]),
        Err(Error::RangeError),
        "priority 256",
    )?;
    make(ut, ObjectType::Notification, 0, F + 2).map_err(|_| "ntfn")?;
    expect(
        tcb(invocation::TCB_CONFIGURE, [F + 2, 1, 0, 0]),
        Err(Error::InvalidCapability),
        "cspace not a cnode",
    )?;
    expect(
        tcb(99, [0; 4]),
        Err(Error::IllegalOperation),
        "unknown label",
    )
}

fn faulting_thread_stopped_alone(ut: u64) -> Outcome {
    spawn(ut, crasher, 0, 255)?;
    check(
        STEP.load(Ordering::SeqCst) == 1,
        "crasher did not run to the fault",
    )?;
    // The task is alive (we are running) and the crasher was stopped: only an inactive
    // thread accepts new registers.
    expect(
        tcb(invocation::TCB_WRITE_REGISTERS, [0, 0, 0, 0]),
        Ok(()),
        "crasher not stopped",
    )
}

/// A thread whose faults go to the endpoint at EPS, running `entry` at priority 255
/// (so it runs, and faults, before this call returns).
fn spawn_handled(ut: u64, entry: extern "C" fn(u64) -> !) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EPS).map_err(|_| "endpoint")?;
    make(ut, ObjectType::Tcb, 0, TCB).map_err(|_| "tcb")?;
    SEEN.store(0, Ordering::SeqCst);
    STEP.store(0, Ordering::SeqCst);
    tcb(invocation::TCB_CONFIGURE, [ROOT, 255, EPS, 0]).map_err(|_| "configure")?;
    tcb(
        invocation::TCB_WRITE_REGISTERS,
        [entry as *const () as u64, stack_top(), 0, 0],
    )
    .map_err(|_| "registers")?;
    tcb(invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")
}

const BAD_ADDR: u64 = 0x10_0000_0000;

extern "C" fn bad_reader(_: u64) -> ! {
    // SAFETY: deliberately unmapped: the fault goes to the handler, which resumes this
    // thread in `recovered` instead.
    let v = unsafe { core::ptr::read_volatile(BAD_ADDR as *const u64) };
    SEEN.store(v, Ordering::SeqCst);
    exit(0)
}

extern "C" fn recovered(_: u64) -> ! {
    SEEN.store(0x600d, Ordering::SeqCst);
    exit(0)
}

extern "C" fn undef_then_go_on(_: u64) -> ! {
    STEP.store(1, Ordering::SeqCst);
    // SAFETY: raises an undefined-instruction fault; the handler resumes after it.
    unsafe { core::arch::asm!("udf #7") };
    STEP.store(2, Ordering::SeqCst);
    exit(0)
}

extern "C" fn odd_syscall(_: u64) -> ! {
    let r = bulkhead_sys::raw_call(0x99, 0, 0);
    SEEN.store(r + 1, Ordering::SeqCst);
    exit(0)
}

fn fault_delivered_and_fixed(ut: u64) -> Outcome {
    spawn_handled(ut, bad_reader)?;
    let (e, m) = ipc(Syscall::Recv, EPS, &Msg::default());
    check(e == 0, "recv")?;
    check(
        MessageInfo(m.info).label() == bulkhead_sys::fault::DATA_ABORT,
        "not a data-abort message",
    )?;
    check(m.mr[1] == BAD_ADDR, "wrong fault address")?;
    let fix = Msg {
        info: MessageInfo::new(bulkhead_sys::fault::REPLY_SET_PC, 1).0,
        mr: [recovered as *const () as u64, 0, 0, 0],
        badge: 0,
    };
    let _ = ipc(Syscall::Reply, 0, &fix);
    check(
        SEEN.load(Ordering::SeqCst) == 0x600d,
        "thread not resumed where the handler said",
    )
}

fn undefined_instruction_emulated(ut: u64) -> Outcome {
    spawn_handled(ut, undef_then_go_on)?;
    let (_, m) = ipc(Syscall::Recv, EPS, &Msg::default());
    check(
        MessageInfo(m.info).label() == bulkhead_sys::fault::UNDEFINED,
        "not an undefined-instruction message",
    )?;
    check(
        STEP.load(Ordering::SeqCst) == 1,
        "thread ran past its fault",
    )?;
    let skip = Msg {
        info: MessageInfo::new(bulkhead_sys::fault::REPLY_SET_PC, 1).0,
        mr: [m.mr[0] + 4, 0, 0, 0],
        badge: 0,
    };
    let _ = ipc(Syscall::Reply, 0, &skip);
    check(
        STEP.load(Ordering::SeqCst) == 2,
        "thread not resumed after the instruction",
    )
}

fn unknown_syscall_to_handler(ut: u64) -> Outcome {
    spawn_handled(ut, odd_syscall)?;
    let (_, m) = ipc(Syscall::Recv, EPS, &Msg::default());
    check(
        MessageInfo(m.info).label() == bulkhead_sys::fault::UNKNOWN_SYSCALL,
        "not an unknown-syscall message",
    )?;
    check(m.mr[1] == 0x99, "wrong syscall number")?;
    let _ = ipc(Syscall::Reply, 0, &Msg::default());
    check(
        SEEN.load(Ordering::SeqCst) != 0,
        "thread not resumed after the syscall",
    )
}

/// Notification slot for the signal tests.
const NTFN: u64 = F + 10;

/// Signals the notification through the badged cap in slot `arg`, then exits.
extern "C" fn signaller(arg: u64) -> ! {
    let (e, _) = ipc(Syscall::Signal, arg, &Msg::default());
    STEP.fetch_add(1 + e, Ordering::SeqCst);
    exit(0)
}

/// Waits on the notification and records the bits.
extern "C" fn notif_waiter(_: u64) -> ! {
    let (e, m) = ipc(Syscall::Wait, NTFN, &Msg::default());
    SEEN.store(if e == 0 { m.badge } else { 1000 + e }, Ordering::SeqCst);
    exit(0)
}

fn signal_then_wait(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, NTFN).map_err(|_| "ntfn")?;
    mint(F + 2, NTFN, rights::WRITE, 0b001).map_err(|_| "mint 1")?;
    mint(F + 3, NTFN, rights::WRITE, 0b100).map_err(|_| "mint 2")?;
    check(
        ipc(Syscall::Signal, F + 2, &Msg::default()).0 == 0,
        "signal 1",
    )?;
    check(
        ipc(Syscall::Signal, F + 3, &Msg::default()).0 == 0,
        "signal 2",
    )?;
    let (e, m) = ipc(Syscall::Wait, NTFN, &Msg::default());
    check(e == 0 && m.badge == 0b101, "bits not accumulated")?;
    let (e, m) = ipc(Syscall::Poll, NTFN, &Msg::default());
    check(
        e == 0 && m.badge == 0,
        "poll after wait should find nothing",
    )
}

fn wait_blocks_until_signal(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, NTFN).map_err(|_| "ntfn")?;
    mint(F + 2, NTFN, rights::WRITE, 0x40).map_err(|_| "mint")?;
    SEEN.store(0, Ordering::SeqCst);
    spawn_at(ut, TCB, notif_waiter, 0, 255, 0)?;
    check(SEEN.load(Ordering::SeqCst) == 0, "waiter did not block")?;
    check(
        ipc(Syscall::Signal, F + 2, &Msg::default()).0 == 0,
        "signal",
    )?;
    check(
        SEEN.load(Ordering::SeqCst) == 0x40,
        "waiter not woken with the badge",
    )
}

fn several_signallers(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, NTFN).map_err(|_| "ntfn")?;
    STEP.store(0, Ordering::SeqCst);
    // Three higher-priority threads each signal with their own badge and exit at once.
    for i in 0..3u64 {
        mint(F + 2 + i, NTFN, rights::WRITE, 1 << i).map_err(|_| "mint")?;
        spawn_at(ut, F + 20 + i, signaller, F + 2 + i, 255, i as usize + 1)?;
    }
    check(
        STEP.load(Ordering::SeqCst) == 3,
        "a signaller did not run or saw an error",
    )?;
    let (e, m) = ipc(Syscall::Wait, NTFN, &Msg::default());
    check(
        e == 0 && m.badge == 0b111,
        "signals were not all accumulated",
    )
}

fn notification_rights(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, NTFN).map_err(|_| "ntfn")?;
    copy(F + 2, NTFN, rights::READ).map_err(|_| "copy")?;
    copy(F + 3, NTFN, rights::WRITE).map_err(|_| "copy")?;
    check(
        ipc(Syscall::Signal, F + 2, &Msg::default()).0 == Error::InvalidCapability as u64,
        "signal without Write",
    )?;
    check(
        ipc(Syscall::Poll, F + 3, &Msg::default()).0 == Error::InvalidCapability as u64,
        "poll without Read",
    )?;
    make(ut, ObjectType::Endpoint, 0, EPS).map_err(|_| "ep")?;
    check(
        ipc(Syscall::Signal, EPS, &Msg::default()).0 == Error::InvalidCapability as u64,
        "signal an endpoint",
    )
}

/// The thread and IPC cases.
pub const CASES: &[(&str, Case)] = &[
    ("call_reply", call_reply),
    ("fast_path_same_core_only", fast_path_same_core_only),
    ("send_recv_with_badge", send_recv_with_badge),
    ("non_blocking_variants", non_blocking_variants),
    ("ipc_rights_checked", ipc_rights_checked),
    ("higher_priority_runs_first", higher_priority_runs_first),
    ("lower_priority_waits", lower_priority_waits),
    (
        "delete_endpoint_aborts_waiter",
        delete_endpoint_aborts_waiter,
    ),
    ("suspend_blocked_thread", suspend_blocked_thread),
    ("tcb_invocation_errors", tcb_invocation_errors),
    (
        "faulting_thread_stopped_alone",
        faulting_thread_stopped_alone,
    ),
    ("signal_then_wait", signal_then_wait),
    ("wait_blocks_until_signal", wait_blocks_until_signal),
    ("several_signallers", several_signallers),
    ("notification_rights", notification_rights),
    ("fault_delivered_and_fixed", fault_delivered_and_fixed),
    (
        "undefined_instruction_emulated",
        undefined_instruction_emulated,
    ),
    ("unknown_syscall_to_handler", unknown_syscall_to_handler),
];
