//! Test cases of long messages (IPC buffers) and capability transfer.

use crate::caps::Case;
use crate::threads::{SEEN, STEP};
use crate::util::*;
use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::{
    call, exit, invocation, ipc, ipc_buffer, Error, MessageInfo, Msg, Syscall, BOOT_IPC_BUFFER,
};
use core::sync::atomic::Ordering;
use kcore::cap::Cap;

const F: u64 = FREE;
const EP: u64 = F + 70;
const CHILD: u64 = F + 71;
const RECV_SLOT: u64 = F + 30;

#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut CHILD_BUF: Page = Page([0; 512]);

#[repr(C, align(16))]
struct Stack([u64; 1024]);
static mut STACK: Stack = Stack([0; 1024]);

fn mine() -> *mut u64 {
    BOOT_IPC_BUFFER as *mut u64
}
fn child_buf() -> *mut u64 {
    core::ptr::addr_of_mut!(CHILD_BUF) as *mut u64
}
fn put(buf: *mut u64, i: usize, v: u64) {
    // SAFETY: an IPC buffer page of this task (the boot buffer the kernel mapped, or a
    // static page), index below 512.
    unsafe { buf.add(i).write_volatile(v) }
}
fn get(buf: *mut u64, i: usize) -> u64 {
    // SAFETY: as in `put`.
    unsafe { buf.add(i).read_volatile() }
}

fn spawn_child(ut: u64, entry: extern "C" fn(u64) -> !, buffer: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, CHILD).map_err(|_| "tcb")?;
    let t = |label, mr| call(CHILD, MessageInfo::new(label, 4), mr);
    t(invocation::TCB_CONFIGURE, [ROOT, 255, 0, buffer]).map_err(|_| "configure")?;
    let sp = core::ptr::addr_of!(STACK) as u64 + 1024 * 8;
    t(
        invocation::TCB_WRITE_REGISTERS,
        [entry as *const () as u64, sp, 0, 0],
    )
    .map_err(|_| "regs")?;
    SEEN.store(0, Ordering::SeqCst);
    STEP.store(0, Ordering::SeqCst);
    t(invocation::TCB_RESUME, [0; 4]).map_err(|_| "resume")
}

/// Answers one Call: the same length, every message register doubled.
extern "C" fn doubler(_: u64) -> ! {
    let (_, m) = ipc(Syscall::Recv, EP, &Msg::default());
    let len = MessageInfo(m.info).length();
    for i in 4..len as usize {
        put(child_buf(), i, get(child_buf(), i) * 2);
    }
    let r = Msg {
        info: MessageInfo::new(0, len).0,
        mr: m.mr.map(|v| v * 2),
        badge: 0,
    };
    let _ = ipc(Syscall::Reply, 0, &r);
    exit(0)
}

/// Receives one message and records its length and capability count.
extern "C" fn receiver(_: u64) -> ! {
    put(child_buf(), ipc_buffer::RECV_SLOT, RECV_SLOT);
    let (_, m) = ipc(Syscall::Recv, EP, &Msg::default());
    let info = MessageInfo(m.info);
    SEEN.store(info.length() + 1, Ordering::SeqCst);
    STEP.store(info.caps() + 1, Ordering::SeqCst);
    exit(0)
}

fn long_message_round_trip(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    spawn_child(ut, doubler, child_buf() as u64)?;
    for i in 4..20 {
        put(mine(), i, 100 + i as u64);
    }
    let (e, r) = ipc(
        Syscall::Call,
        EP,
        &Msg {
            info: MessageInfo::new(1, 20).0,
            mr: [1, 2, 3, 4],
            badge: 0,
        },
    );
    check(e == 0, "call")?;
    check(MessageInfo(r.info).length() == 20, "reply length")?;
    check(r.mr == [2, 4, 6, 8], "registers")?;
    check(
        (4..20).all(|i| get(mine(), i) == 2 * (100 + i as u64)),
        "buffer words",
    )
}

fn long_message_trimmed_without_buffer(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    spawn_child(ut, receiver, 0)?;
    let (e, _) = ipc(
        Syscall::Send,
        EP,
        &Msg {
            info: MessageInfo::new(1, 30).0,
            mr: [0; 4],
            badge: 0,
        },
    );
    check(e == 0, "send")?;
    check(
        SEEN.load(Ordering::SeqCst) == 5,
        "receiver without a buffer got more than 4 registers",
    )
}

/// Sends the notification in F+6 over an endpoint cap with `r` rights to a receiver that
/// offers RECV_SLOT.
fn send_cap(ut: u64, r: u8) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    make(ut, ObjectType::Notification, 0, F + 6).map_err(|_| "ntfn")?;
    mint(F + 5, EP, r, 0).map_err(|_| "mint")?;
    spawn_child(ut, receiver, child_buf() as u64)?;
    put(mine(), ipc_buffer::SEND_CAP, F + 6);
    let info = MessageInfo::new(2, 0).with_caps(1);
    let (e, _) = ipc(
        Syscall::Send,
        F + 5,
        &Msg {
            info: info.0,
            mr: [0; 4],
            badge: 0,
        },
    );
    check(e == 0, "send")
}

fn cap_transfer_with_grant(ut: u64) -> Outcome {
    send_cap(ut, rights::WRITE | rights::GRANT)?;
    check(
        STEP.load(Ordering::SeqCst) == 2,
        "receiver was not told of one capability",
    )?;
    check(
        matches!(cap_at(RECV_SLOT), Cap::Notification { .. }),
        "capability not in the receive slot",
    )?;
    check(
        place(RECV_SLOT).and_then(|p| p.1) == place(F + 6).map(|p| p.0),
        "transferred cap is not a child of the sent one",
    )
}

fn cap_transfer_needs_grant(ut: u64) -> Outcome {
    send_cap(ut, rights::WRITE)?;
    check(
        STEP.load(Ordering::SeqCst) == 1,
        "a capability arrived without Grant",
    )?;
    check(
        cap_at(RECV_SLOT).is_null(),
        "receive slot filled without Grant",
    )
}

fn configure_rejects_unaligned_buffer(ut: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, CHILD).map_err(|_| "tcb")?;
    expect(
        call(
            CHILD,
            MessageInfo::new(invocation::TCB_CONFIGURE, 4),
            [ROOT, 1, 0, 0x1234],
        ),
        Err(Error::AlignmentError),
        "unaligned IPC buffer",
    )
}

/// The IPC-buffer cases.
pub const CASES: &[(&str, Case)] = &[
    ("long_message_round_trip", long_message_round_trip),
    (
        "long_message_trimmed_without_buffer",
        long_message_trimmed_without_buffer,
    ),
    ("cap_transfer_with_grant", cap_transfer_with_grant),
    ("cap_transfer_needs_grant", cap_transfer_needs_grant),
    (
        "configure_rejects_unaligned_buffer",
        configure_rejects_unaligned_buffer,
    ),
];
