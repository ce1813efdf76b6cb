//! The IPC benchmark: a client (this thread, priority 254) Calls a server thread
//! (priority 255) on the same core, which answers with ReplyRecv; the PMU cycle counter
//! (instructions, under QEMU's `-icount shift=0`) times many round trips, minus the cost
//! of the loop itself. Prints `BENCH <name> <instructions>` lines for `cargo xtask bench`.

use crate::util::*;
use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::{call, invocation, ipc, MessageInfo, Msg, Syscall};

const EP: u64 = FREE;
const SERVER: u64 = FREE + 1;
const ROUNDS: u64 = 1000;

#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut SERVER_BUF: Page = Page([0; 512]);
#[repr(C, align(16))]
struct Stack([u64; 1024]);
static mut STACK: Stack = Stack([0; 1024]);

fn cycles() -> u64 {
    let c: u64;
    // SAFETY: reading the PMU cycle counter, which a test kernel lets EL0 read; no memory
    // effects.
    unsafe { core::arch::asm!("isb", "mrs {}, pmccntr_el0", out(reg) c) };
    c
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

/// Instructions for `ROUNDS` Call/ReplyRecv round trips of `length` message registers,
/// less the empty loop's.
fn measure(length: u64) -> u64 {
    let msg = Msg {
        info: MessageInfo::new(1, length).0,
        mr: [1, 2, 3, 4],
        badge: 0,
    };
    for _ in 0..10 {
        let _ = ipc(Syscall::Call, EP, &msg);
    }
    let t0 = cycles();
    for _ in 0..ROUNDS {
        core::hint::black_box(&msg);
    }
    let empty = cycles() - t0;
    let t1 = cycles();
    for _ in 0..ROUNDS {
        let _ = ipc(Syscall::Call, EP, core::hint::black_box(&msg));
    }
    (cycles() - t1).saturating_sub(empty)
}

/// Runs the benchmark; 0 on success.
pub fn run() -> u64 {
    let Some((ut, _, _)) = largest_untyped() else {
        return 1;
    };
    let t = |label, mr| call(SERVER, MessageInfo::new(label, 4), mr);
    let sp = core::ptr::addr_of!(STACK) as u64 + 1024 * 8;
    let buf = core::ptr::addr_of!(SERVER_BUF) as u64;
    let ok = make(ut, ObjectType::Endpoint, 0, EP).is_ok()
        && make(ut, ObjectType::Tcb, 0, SERVER).is_ok()
        && t(invocation::TCB_CONFIGURE, [ROOT, 255, 0, buf]).is_ok()
        && t(
            invocation::TCB_WRITE_REGISTERS,
            [server as *const () as u64, sp, 0, 0],
        )
        .is_ok()
        && t(invocation::TCB_RESUME, [0; 4]).is_ok();
    if !ok {
        defmt::error!("bench: could not start the server");
        return 1;
    }
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
    0
}
