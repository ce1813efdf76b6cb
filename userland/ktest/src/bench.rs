//! The IPC benchmark, timed with the PMU cycle counter (instructions, under QEMU's
//! `-icount shift=0`). Prints `BENCH <name> <instructions>` lines for `cargo xtask bench`.
//!
//! - Round trips: a client (this thread, priority 254) Calls a server thread (priority
//!   255) on the same core, which answers with ReplyRecv; many round trips are timed
//!   together, minus the cost of the loop itself.
//! - One-way figures, the way sel4bench takes them: each side reads the counter right
//!   before its `svc` and right after it (one `asm!` block, [`timed_ipc`], so the message
//!   registers are loaded before the first reading and nothing else lies between), and
//!   keeps its readings in memory until the loop is over, so no store lies inside a
//!   measured interval. A Call is timed from the client's reading before the Call to the
//!   server's reading after its Recv (or ReplyRecv) returns with the message; a
//!   ReplyRecv from the server's reading before it to the client's reading after its
//!   Call returns. The server has the client's priority (254). Send is timed from the
//!   sender (254) to a receiver of higher priority (255) blocked in Recv. Each figure is
//!   the median of [`SAMPLES`] samples after [`WARMUP`] discarded ones, less the cost of
//!   the measurement itself (two counter reads back to back, [`overhead`]). sel4bench
//!   subtracts an overhead measured with its system call replaced by a `nop`, which
//!   comes to the same: the interval holds the `svc` and what the kernel does.
//!
//! Every thread shares this task's address space (and so the arrays of readings).

use crate::util::*;
use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::{call, invocation, ipc, MessageInfo, Msg, Syscall};
use core::sync::atomic::{AtomicU64, Ordering};

const EP: u64 = FREE;
const SERVER: u64 = FREE + 1;
/// Endpoint and thread of one-way variant `v` (0-word, 10-word): `ONE_WAY + 2 v` and
/// `ONE_WAY + 2 v + 1`.
const ONE_WAY: u64 = FREE + 2;
/// Endpoint and thread of the Send benchmark.
const SEND_EP: u64 = FREE + 6;
const RECEIVER: u64 = FREE + 7;
/// The other-address-space server: its endpoint, thread, VSpace, table pool and code
/// frame.
const FAR_EP: u64 = FREE + 8;
const FAR_TCB: u64 = FREE + 9;
const FAR_VS: u64 = FREE + 10;
const FAR_POOL: u64 = FREE + 11;
const FAR_CODE: u64 = FREE + 12;
/// Where the code frame lies in the server's space, and where this task sees it to
/// write it.
const FAR_PC: u64 = 0x1000_0000;
const FAR_WINDOW: u64 = 0x3000_0000;
const ROUNDS: u64 = 1000;

/// Samples kept for each one-way figure (the median is printed).
const SAMPLES: usize = 64;
/// Samples taken first and thrown away (the first crossings of a path).
const WARMUP: usize = 8;
const RUNS: usize = WARMUP + SAMPLES;
/// The one-way variants: message length in words, figure names (Call, ReplyRecv).
const VARIANTS: [(u64, &str, &str); 2] = [
    (0, "ipc-call-0", "ipc-replyrecv-0"),
    (10, "ipc-call-10", "ipc-replyrecv-10"),
];
/// Threads besides this one: the round-trip server, a one-way server per variant, the
/// Send receiver.
const THREADS: usize = 2 + VARIANTS.len();

#[repr(C, align(4096))]
struct Page([u64; 512]);
/// The IPC buffers of the threads (a 10-word message reaches the receiver's buffer).
static mut BUFS: [Page; THREADS] = [const { Page([0; 512]) }; THREADS];
#[repr(C, align(16))]
struct Stack([u64; 1024]);
static mut STACKS: [Stack; THREADS] = [const { Stack([0; 1024]) }; THREADS];

/// A column of counter readings.
type Readings = [AtomicU64; RUNS];
/// Per variant, the one-way server's readings after each message arrived.
static SERVER_IN: [Readings; VARIANTS.len()] =
    [const { [const { AtomicU64::new(0) }; RUNS] }; VARIANTS.len()];
/// Per variant, the one-way server's readings before each ReplyRecv.
static SERVER_OUT: [Readings; VARIANTS.len()] =
    [const { [const { AtomicU64::new(0) }; RUNS] }; VARIANTS.len()];
/// The Send receiver's readings after each message arrived.
static RECEIVER_IN: Readings = [const { AtomicU64::new(0) }; RUNS];

fn cycles() -> u64 {
    let c: u64;
    // SAFETY: reading the PMU cycle counter, which a test kernel lets EL0 read; no memory
    // effects.
    unsafe { core::arch::asm!("isb", "mrs {}, pmccntr_el0", out(reg) c) };
    c
}

/// An IPC syscall as [`ipc`], with the cycle counter read right before the `svc` and
/// right after it returns: (before, after, the error word, the message).
fn timed_ipc(n: Syscall, cptr: u64, m: &Msg) -> (u64, u64, u64, Msg) {
    let (before, after): (u64, u64);
    let (r0, r1, r2, r3, r4, r5, r6): (u64, u64, u64, u64, u64, u64, u64);
    // SAFETY: as `bulkhead_sys::ipc`: `svc #0` with an IPC syscall number, which reads
    // x0..x5 and x7, writes x0..x6 and touches none of our memory; around it two reads of
    // the PMU cycle counter, which a test kernel lets EL0 read. The kernel preserves every
    // other register, so `before` survives the call.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {before}, pmccntr_el0",
            "svc #0",
            "isb",
            "mrs {after}, pmccntr_el0",
            before = out(reg) before,
            after = out(reg) after,
            inlateout("x0") cptr => r0,
            inlateout("x1") m.info => r1,
            inlateout("x2") m.mr[0] => r2,
            inlateout("x3") m.mr[1] => r3,
            inlateout("x4") m.mr[2] => r4,
            inlateout("x5") m.mr[3] => r5,
            lateout("x6") r6,
            in("x7") n as u64,
            options(nostack, preserves_flags),
        );
    }
    (
        before,
        after,
        r0,
        Msg {
            info: r1,
            mr: [r2, r3, r4, r5],
            badge: r6,
        },
    )
}

extern "C" fn server(_: u64) -> ! {
    let (_, mut m) = ipc(Syscall::Recv, EP, &Msg::default());
    loop {
        let r = ipc(
            Syscall::ReplyRecv,
            EP,
            &Msg {
                info: m.info,
                mr: m.mr,
                badge: 0,
            },
        );
        m = r.1;
    }
}

/// The one-way server of variant `v`: answers every Call with a message of the same
/// length, reading the counter when a message arrives and before each ReplyRecv; the
/// readings are stored outside both measured intervals.
extern "C" fn one_way_server(v: u64) -> ! {
    let v = v as usize;
    let ep = ONE_WAY + 2 * v as u64;
    let (_, mut arrived, _, mut m) = timed_ipc(Syscall::Recv, ep, &Msg::default());
    let mut i = 0;
    loop {
        if i < RUNS {
            SERVER_IN[v][i].store(arrived, Ordering::Relaxed);
        }
        let reply = Msg {
            info: m.info,
            mr: m.mr,
            badge: 0,
        };
        let (out, next, _, r) = timed_ipc(Syscall::ReplyRecv, ep, &reply);
        if i < RUNS {
            SERVER_OUT[v][i].store(out, Ordering::Relaxed);
        }
        arrived = next;
        m = r;
        i += 1;
    }
}

/// The Send receiver: reads the counter when each message arrives.
extern "C" fn receiver(_: u64) -> ! {
    let mut i = 0;
    loop {
        let (_, arrived, _, _) = timed_ipc(Syscall::Recv, SEND_EP, &Msg::default());
        if i < RUNS {
            RECEIVER_IN[i].store(arrived, Ordering::Relaxed);
        }
        i += 1;
    }
}

/// Creates endpoint `ep` and thread `tcb` (the `n`th, for its stack and IPC buffer), which
/// starts at `entry` with `x0 = arg` and runs at `priority`.
fn spawn(
    ut: u64,
    ep: u64,
    tcb: u64,
    n: usize,
    priority: u64,
    entry: extern "C" fn(u64) -> !,
    arg: u64,
) -> bool {
    let t = |label, mr| call(tcb, MessageInfo::new(label, 4), mr);
    // SAFETY: only addresses are taken; the thread is the only user of its stack and
    // buffer.
    let (sp, buf) = unsafe {
        (
            core::ptr::addr_of!(STACKS[n]) as u64 + 1024 * 8,
            core::ptr::addr_of!(BUFS[n]) as u64,
        )
    };
    make(ut, ObjectType::Endpoint, 0, ep).is_ok()
        && make(ut, ObjectType::Tcb, 0, tcb).is_ok()
        && t(invocation::TCB_CONFIGURE, [ROOT, priority, 0, buf]).is_ok()
        && t(
            invocation::TCB_WRITE_REGISTERS,
            [entry as *const () as u64, sp, arg, 0],
        )
        .is_ok()
        && t(invocation::TCB_RESUME, [0; 4]).is_ok()
}

/// The other-address-space server, machine code (it needs no stack and no memory): answer
/// every message with itself, forever. `movz x0, #FAR_EP; movz x7, #ReplyRecv; svc #0;
/// b` back to the first instruction (a ReplyRecv with no caller only receives).
fn far_server_code() -> [u32; 4] {
    const MOVZ_X: u32 = 0xd280_0000;
    [
        MOVZ_X | (FAR_EP as u32) << 5,
        MOVZ_X | (Syscall::ReplyRecv as u32) << 5 | 7,
        0xd400_0001,
        0x17ff_fffd,
    ]
}

/// Starts the server of [`far_server_code`] in an address space of its own (a VSpace
/// with a table pool, the code frame mapped there read-execute), at `priority`.
fn spawn_far(ut: u64, priority: u64) -> bool {
    let inv = |slot: u64, label, mr| call(slot, MessageInfo::new(label, 4), mr);
    let made = make(ut, ObjectType::Endpoint, 0, FAR_EP).is_ok()
        && make(ut, ObjectType::VSpace, 0, FAR_VS).is_ok()
        && make(ut, ObjectType::TablePool, 14, FAR_POOL).is_ok()
        && make(ut, ObjectType::Frame4K, 0, FAR_CODE).is_ok()
        && make(ut, ObjectType::Tcb, 0, FAR_TCB).is_ok()
        && inv(FAR_VS, invocation::VSPACE_CONFIGURE, [FAR_POOL, 0, 0, 0]).is_ok()
        && inv(
            FAR_CODE,
            invocation::FRAME_MAP,
            [
                invocation::SELF_SPACE,
                FAR_WINDOW,
                bulkhead_sys::map_rights::READ | bulkhead_sys::map_rights::WRITE,
                0,
            ],
        )
        .is_ok();
    if !made {
        return false;
    }
    for (i, word) in far_server_code().into_iter().enumerate() {
        let at = FAR_WINDOW + 4 * i as u64;
        // SAFETY: the code frame, mapped read-write here just above; nothing else uses it
        // yet. No cache maintenance follows: EL0 may not clean or invalidate caches here
        // (SCTLR_EL1.UCI is clear), and QEMU's caches are coherent. On hardware without
        // CTR_EL0.IDC/DIC, code written this way would need the kernel to clean it to the
        // point of unification first (no invocation does that yet).
        unsafe { core::ptr::write_volatile(at as *mut u32, word) };
    }
    let t = |label, mr| inv(FAR_TCB, label, mr);
    inv(
        FAR_CODE,
        invocation::FRAME_MAP,
        [
            FAR_VS,
            FAR_PC,
            bulkhead_sys::map_rights::READ | bulkhead_sys::map_rights::EXEC,
            0,
        ],
    )
    .is_ok()
        && t(invocation::TCB_CONFIGURE, [ROOT, priority, 0, 0]).is_ok()
        && t(invocation::TCB_SET_SPACE, [FAR_VS, 0, 0, 0]).is_ok()
        && t(invocation::TCB_WRITE_REGISTERS, [FAR_PC, 0, 0, 0]).is_ok()
        && t(invocation::TCB_RESUME, [0; 4]).is_ok()
}

/// Instructions for `ROUNDS` Call/ReplyRecv round trips of `length` message registers,
/// less the empty loop's.
fn measure(length: u64) -> u64 {
    measure_on(EP, length)
}

/// As [`measure`], with the server on endpoint `ep`.
fn measure_on(ep: u64, length: u64) -> u64 {
    let msg = Msg {
        info: MessageInfo::new(1, length).0,
        mr: [1, 2, 3, 4],
        badge: 0,
    };
    for _ in 0..10 {
        let _ = ipc(Syscall::Call, ep, &msg);
    }
    let t0 = cycles();
    for _ in 0..ROUNDS {
        core::hint::black_box(&msg);
    }
    let empty = cycles() - t0;
    let t1 = cycles();
    for _ in 0..ROUNDS {
        let _ = ipc(Syscall::Call, ep, core::hint::black_box(&msg));
    }
    (cycles() - t1).saturating_sub(empty)
}

/// The median of the samples after the warm-up, less `overhead`; `None` if a sample is
/// negative (the readings are not in the order the benchmark assumes).
fn figure(mut d: [i64; RUNS], overhead: u64) -> Option<u64> {
    let kept = &mut d[WARMUP..];
    if kept.iter().any(|&x| x <= 0) {
        return None;
    }
    kept.sort_unstable();
    Some((kept[kept.len() / 2] as u64).saturating_sub(overhead))
}

/// The cost of the measurement itself: the counter read before an `svc` and the one
/// after it, back to back (the instructions of [`timed_ipc`]'s interval that are not the
/// `svc`: one `isb; mrs`).
fn overhead() -> u64 {
    let mut d = [0i64; RUNS];
    for x in d.iter_mut() {
        let (a, b): (u64, u64);
        // SAFETY: two reads of the PMU cycle counter, which a test kernel lets EL0 read;
        // no memory effects.
        unsafe {
            core::arch::asm!(
                "isb",
                "mrs {a}, pmccntr_el0",
                "isb",
                "mrs {b}, pmccntr_el0",
                a = out(reg) a,
                b = out(reg) b,
                options(nomem, nostack, preserves_flags),
            );
        }
        *x = b.wrapping_sub(a) as i64;
    }
    figure(d, 0).unwrap_or(0)
}

fn report(name: &str, value: Option<u64>) -> bool {
    match value {
        Some(v) if v > 0 => {
            defmt::info!("BENCH {=str} {=u64}", name, v);
            true
        }
        _ => {
            defmt::error!("bench: {=str}: readings out of order or zero", name);
            false
        }
    }
}

/// One-way Call and ReplyRecv of variant `v`: (Call samples, ReplyRecv samples).
fn one_way(v: usize) -> ([i64; RUNS], [i64; RUNS]) {
    let msg = Msg {
        info: MessageInfo::new(1, VARIANTS[v].0).0,
        mr: [1, 2, 3, 4],
        badge: 0,
    };
    let ep = ONE_WAY + 2 * v as u64;
    let mut sent = [0u64; RUNS];
    let mut back = [0u64; RUNS];
    for i in 0..RUNS {
        let (t0, t1, _, _) = timed_ipc(Syscall::Call, ep, &msg);
        sent[i] = t0;
        back[i] = t1;
    }
    let mut call = [0i64; RUNS];
    let mut reply = [0i64; RUNS];
    for i in 0..RUNS {
        call[i] = SERVER_IN[v][i]
            .load(Ordering::Relaxed)
            .wrapping_sub(sent[i]) as i64;
        reply[i] = back[i].wrapping_sub(SERVER_OUT[v][i].load(Ordering::Relaxed)) as i64;
    }
    (call, reply)
}

/// One-way Send (0 words) to the higher-priority receiver: the samples.
fn send_up() -> [i64; RUNS] {
    let msg = Msg {
        info: MessageInfo::new(1, 0).0,
        ..Msg::default()
    };
    let mut sent = [0u64; RUNS];
    for s in sent.iter_mut() {
        *s = timed_ipc(Syscall::Send, SEND_EP, &msg).0;
    }
    let mut d = [0i64; RUNS];
    for (i, x) in d.iter_mut().enumerate() {
        *x = RECEIVER_IN[i].load(Ordering::Relaxed).wrapping_sub(sent[i]) as i64;
    }
    d
}

/// Runs the benchmark; 0 on success.
pub fn run() -> u64 {
    let Some((ut, _, _)) = largest_untyped() else {
        return 1;
    };
    let mut ok = spawn(ut, EP, SERVER, 0, 255, server, 0);
    for v in 0..VARIANTS.len() {
        let ep = ONE_WAY + 2 * v as u64;
        ok = ok && spawn(ut, ep, ep + 1, 1 + v, 254, one_way_server, v as u64);
    }
    ok = ok && spawn(ut, SEND_EP, RECEIVER, THREADS - 1, 255, receiver, 0);
    ok = ok && spawn_far(ut, 255);
    if !ok {
        defmt::error!("bench: could not start the server threads");
        return 1;
    }
    // The one-way servers share this thread's priority: let them reach their Recv now,
    // so that no time slice of theirs falls into a measurement.
    bulkhead_sys::yield_now();
    if cycles() == cycles() {
        defmt::error!("bench: the cycle counter does not count (not a test kernel?)");
        return 1;
    }
    // The cheapest kernel entry and exit: an unknown syscall number.
    let t0 = cycles();
    for _ in 0..ROUNDS {
        core::hint::black_box(bulkhead_sys::raw_call(0xdead, 0, 0));
    }
    defmt::info!("BENCH syscall-null {=u64}", (cycles() - t0) / ROUNDS);
    for (name, length) in [("ipc-roundtrip-4", 4u64), ("ipc-roundtrip-10", 10)] {
        let total = measure(length);
        defmt::info!("BENCH {=str} {=u64}", name, total / ROUNDS);
    }
    // The same round trip with the server in an address space of its own: every switch
    // loads the other stage-2 (VTTBR_EL2).
    let (e, echo) = ipc(
        Syscall::Call,
        FAR_EP,
        &Msg {
            info: MessageInfo::new(1, 4).0,
            mr: [5, 6, 7, 8],
            badge: 0,
        },
    );
    if e != 0 || echo.mr != [5, 6, 7, 8] {
        defmt::error!("bench: the other-address-space server did not echo the message");
        return 1;
    }
    defmt::info!(
        "BENCH ipc-roundtrip-4-other-vspace {=u64}",
        measure_on(FAR_EP, 4) / ROUNDS
    );
    let overhead = overhead();
    let mut good = report("ipc-overhead", Some(overhead));
    for (v, &(_, call_name, reply_name)) in VARIANTS.iter().enumerate() {
        let (call, reply) = one_way(v);
        good &= report(call_name, figure(call, overhead));
        good &= report(reply_name, figure(reply, overhead));
    }
    good &= report("ipc-send-up", figure(send_up(), overhead));
    if good {
        0
    } else {
        1
    }
}
