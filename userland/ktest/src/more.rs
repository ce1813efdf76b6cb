//! More cases: edge cases of CNode operations, retype placement, IPC ordering and message
//! contents, suspend/resume, priority changes, yield, and argument errors.

use crate::caps::Case;
use crate::threads::{spawn_at, SEEN, STEP};
use crate::util::*;
use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::{call, debug_slot, exit, invocation, ipc, Error, MessageInfo, Msg, Syscall};
use core::sync::atomic::Ordering;
use kcore::cap::Cap;

const F: u64 = FREE;
const EP: u64 = F + 50;

fn tcb(slot: u64, label: u64, mr: [u64; 4]) -> Result<(), Error> {
    call(slot, MessageInfo::new(label, 4), mr)
}

fn mutate_moves_untyped(ut: u64) -> Outcome {
    make(ut, ObjectType::Untyped, 12, F).map_err(|_| "setup")?;
    expect(mutate(F + 1, F, 5), Ok(()), "mutate untyped")?;
    check(
        matches!(cap_at(F + 1), Cap::Untyped { size_bits: 12, .. }) && cap_at(F).is_null(),
        "not moved",
    )
}
fn move_cnode_cap(ut: u64) -> Outcome {
    make(ut, ObjectType::CNode, 2, F).map_err(|_| "setup")?;
    let before = cap_at(F);
    expect(mv(F + 1, F), Ok(()), "move")?;
    check(cap_at(F + 1) == before, "cnode cap changed")
}
fn revoke_and_delete_bad_address(_ut: u64) -> Outcome {
    expect(revoke(1 << 40), Err(Error::FailedLookup), "revoke")?;
    expect(delete(1 << 40), Err(Error::FailedLookup), "delete")?;
    expect(revoke(F + 3), Ok(()), "revoke empty")
}
fn child_untypeds_tile(ut: u64) -> Outcome {
    expect(
        retype(ut, ObjectType::Untyped as u64, 12, ROOT, F, 4),
        Ok(()),
        "retype",
    )?;
    let mut bases = [0u64; 4];
    for (i, b) in bases.iter_mut().enumerate() {
        let Cap::Untyped {
            base,
            size_bits: 12,
            ..
        } = cap_at(F + i as u64)
        else {
            return Err("not untyped");
        };
        *b = base;
    }
    check(
        bases.windows(2).all(|w| w[1] == w[0] + 4096),
        "children not contiguous",
    )
}
fn big_frames_aligned(ut: u64) -> Outcome {
    make(ut, ObjectType::Frame4K, 0, F).map_err(|_| "4k")?;
    expect(make(ut, ObjectType::Frame2M, 0, F + 1), Ok(()), "2M")?;
    let Cap::Frame {
        addr,
        size_bits: 21,
        ..
    } = cap_at(F + 1)
    else {
        return Err("not a 2M frame");
    };
    check(addr % (2 << 20) == 0, "2M frame misaligned")
}
fn fill_cnode_to_the_end(ut: u64) -> Outcome {
    expect(
        retype(ut, ObjectType::Notification as u64, 0, ROOT, 1020, 4),
        Ok(()),
        "last four slots",
    )?;
    check(!cap_at(1023).is_null(), "slot 1023 empty")
}
fn zero_rights_cap_cannot_send(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    mint(F, EP, 0, 3).map_err(|_| "mint")?;
    let (e, _) = ipc(Syscall::NBSend, F, &Msg::default());
    check(e == Error::InvalidCapability as u64, "sent without rights")
}
fn revoke_child_cnode_contents(ut: u64) -> Outcome {
    make(ut, ObjectType::Untyped, 16, F).map_err(|_| "untyped")?;
    make(F, ObjectType::CNode, 3, F + 1).map_err(|_| "cnode")?;
    expect(
        retype(F, ObjectType::Endpoint as u64, 0, F + 1, 0, 8),
        Ok(()),
        "fill child",
    )?;
    expect(revoke(F), Ok(()), "revoke")?;
    check(cap_at(F + 1).is_null(), "child cnode survived")?;
    expect(
        make(F, ObjectType::Untyped, 16, F + 1),
        Ok(()),
        "memory not whole again",
    )
}

extern "C" fn late_server(_: u64) -> ! {
    let (_, m) = ipc(Syscall::Recv, EP, &Msg::default());
    let _ = ipc(
        Syscall::Reply,
        0,
        &Msg {
            info: m.info,
            mr: [m.mr[3], m.mr[2], m.mr[1], m.mr[0]],
            badge: 0,
        },
    );
    exit(0)
}
extern "C" fn fifo_sender(arg: u64) -> ! {
    let _ = ipc(
        Syscall::Send,
        EP,
        &Msg {
            info: 0,
            mr: [arg, 0, 0, 0],
            badge: 0,
        },
    );
    exit(0)
}
extern "C" fn yielder_mark(arg: u64) -> ! {
    SEEN.store(arg, Ordering::SeqCst);
    exit(0)
}
extern "C" fn resumable_waiter(_: u64) -> ! {
    let (e, _) = ipc(Syscall::Recv, EP, &Msg::default());
    SEEN.store(100 + e, Ordering::SeqCst);
    exit(0)
}

fn call_blocks_until_served(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    // The server has a lower priority: it only runs once this thread blocks in Call.
    spawn_at(ut, F, late_server, 0, 100, 0)?;
    let m = Msg {
        info: MessageInfo::new(9, 4).0,
        mr: [1, 2, 3, 4],
        badge: 0,
    };
    let (e, r) = ipc(Syscall::Call, EP, &m);
    check(e == 0, "call failed")?;
    check(
        r.mr == [4, 3, 2, 1] && MessageInfo(r.info).label() == 9,
        "all four registers and the label",
    )
}
fn reply_without_caller(_ut: u64) -> Outcome {
    let (e, _) = ipc(Syscall::Reply, 0, &Msg::default());
    check(e == 0, "reply with nobody waiting is not an error")
}
fn senders_served_in_order(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    for i in 0..3u64 {
        spawn_at(ut, F + i, fifo_sender, 10 + i, 255, i as usize + 1)?;
    }
    for i in 0..3u64 {
        let (e, m) = ipc(Syscall::Recv, EP, &Msg::default());
        check(
            e == 0 && m.mr[0] == 10 + i,
            "senders not served first come, first served",
        )?;
    }
    Ok(())
}
fn resume_after_suspend(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    SEEN.store(0, Ordering::SeqCst);
    spawn_at(ut, F, resumable_waiter, 0, 255, 0)?;
    expect(tcb(F, invocation::TCB_SUSPEND, [0; 4]), Ok(()), "suspend")?;
    check(SEEN.load(Ordering::SeqCst) == 0, "suspended thread ran on")?;
    expect(tcb(F, invocation::TCB_RESUME, [0; 4]), Ok(()), "resume")?;
    check(
        SEEN.load(Ordering::SeqCst) == 100 + Error::Aborted as u64,
        "resumed thread did not see its call aborted",
    )
}
fn raising_priority_runs_at_once(ut: u64) -> Outcome {
    SEEN.store(0, Ordering::SeqCst);
    spawn_at(ut, F, yielder_mark, 7, 1, 0)?;
    check(SEEN.load(Ordering::SeqCst) == 0, "low-priority thread ran")?;
    expect(
        tcb(F, invocation::TCB_SET_PRIORITY, [255, 0, 0, 0]),
        Ok(()),
        "raise",
    )?;
    check(
        SEEN.load(Ordering::SeqCst) == 7,
        "raised thread did not run at once",
    )
}
fn yield_to_equal_priority(ut: u64) -> Outcome {
    SEEN.store(0, Ordering::SeqCst);
    spawn_at(ut, F, yielder_mark, 8, 254, 0)?;
    bulkhead_sys::yield_now();
    check(
        SEEN.load(Ordering::SeqCst) == 8,
        "yield did not let the equal-priority thread run",
    )
}
fn thread_exit_keeps_task(ut: u64) -> Outcome {
    STEP.store(0, Ordering::SeqCst);
    spawn_at(ut, F, yielder_mark, 9, 255, 0)?;
    check(SEEN.load(Ordering::SeqCst) == 9, "thread did not run")?;
    // Exit stopped it: only an inactive thread accepts a new partition.
    expect(
        tcb(F, invocation::TCB_SET_PARTITION, [0; 4]),
        Ok(()),
        "exited thread not inactive",
    )
}
fn debug_slot_errors(_ut: u64) -> Outcome {
    check(debug_slot(1, 0) == Err(Error::RangeError), "depth 0")?;
    check(debug_slot(1, 1000) == Err(Error::RangeError), "depth 1000")?;
    check(
        debug_slot(1 << 50, 64) == Err(Error::FailedLookup),
        "guard mismatch",
    )?;
    check(debug_slot(1, 64).is_ok(), "the root's own slot")
}
fn invoke_bad_cptrs(_ut: u64) -> Outcome {
    expect(
        call(u64::MAX, MessageInfo::new(1, 0), [0; 4]),
        Err(Error::FailedLookup),
        "cptr u64::MAX",
    )?;
    expect(
        call(0, MessageInfo::new(1, 0), [0; 4]),
        Err(Error::InvalidCapability),
        "slot 0 (always empty)",
    )?;
    let (e, _) = ipc(Syscall::Send, 1 << 61, &Msg::default());
    check(e == Error::FailedLookup as u64, "send to a bad cptr")
}
fn tcb_write_registers_refused_when_running(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    spawn_at(ut, F, resumable_waiter, 0, 255, 0)?;
    expect(
        tcb(F, invocation::TCB_WRITE_REGISTERS, [0; 4]),
        Err(Error::IllegalOperation),
        "write registers",
    )?;
    expect(
        tcb(F, invocation::TCB_CONFIGURE, [ROOT, 1, 0, 0]),
        Err(Error::IllegalOperation),
        "configure",
    )
}

fn unbadged_signal_still_wakes(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, F).map_err(|_| "ntfn")?;
    check(ipc(Syscall::Signal, F, &Msg::default()).0 == 0, "signal")?;
    let (e, m) = ipc(Syscall::Wait, F, &Msg::default());
    check(e == 0 && m.badge == 0, "wait after an unbadged signal")
}
fn mint_keeps_badge_reduces_rights(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    mint(F, EP, rights::ALL, 77).map_err(|_| "mint")?;
    expect(mint(F + 1, F, rights::READ, 0), Ok(()), "mint with badge 0")?;
    check(
        matches!(
            cap_at(F + 1),
            Cap::Endpoint {
                badge: 77,
                rights: rights::READ,
                ..
            }
        ),
        "badge or rights wrong",
    )
}
fn deleting_a_copy_keeps_the_thread(ut: u64) -> Outcome {
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "ep")?;
    SEEN.store(0, Ordering::SeqCst);
    spawn_at(ut, F, resumable_waiter, 0, 255, 0)?;
    copy(F + 1, F, rights::ALL).map_err(|_| "copy tcb")?;
    expect(delete(F), Ok(()), "delete one tcb cap")?;
    // The thread still waits: a message reaches it.
    let (e, _) = ipc(Syscall::NBSend, EP, &Msg::default());
    check(
        e == 0 && SEEN.load(Ordering::SeqCst) == 100,
        "thread stopped although a cap remained",
    )
}

/// The cases of this file.
pub const CASES: &[(&str, Case)] = &[
    ("mutate_moves_untyped", mutate_moves_untyped),
    ("move_cnode_cap", move_cnode_cap),
    (
        "revoke_and_delete_bad_address",
        revoke_and_delete_bad_address,
    ),
    ("child_untypeds_tile", child_untypeds_tile),
    ("big_frames_aligned", big_frames_aligned),
    ("fill_cnode_to_the_end", fill_cnode_to_the_end),
    ("zero_rights_cap_cannot_send", zero_rights_cap_cannot_send),
    ("revoke_child_cnode_contents", revoke_child_cnode_contents),
    ("call_blocks_until_served", call_blocks_until_served),
    ("reply_without_caller", reply_without_caller),
    ("senders_served_in_order", senders_served_in_order),
    ("resume_after_suspend", resume_after_suspend),
    (
        "raising_priority_runs_at_once",
        raising_priority_runs_at_once,
    ),
    ("yield_to_equal_priority", yield_to_equal_priority),
    ("thread_exit_keeps_task", thread_exit_keeps_task),
    ("debug_slot_errors", debug_slot_errors),
    ("invoke_bad_cptrs", invoke_bad_cptrs),
    (
        "tcb_write_registers_refused_when_running",
        tcb_write_registers_refused_when_running,
    ),
    ("unbadged_signal_still_wakes", unbadged_signal_still_wakes),
    (
        "mint_keeps_badge_reduces_rights",
        mint_keeps_badge_reduces_rights,
    ),
    (
        "deleting_a_copy_keeps_the_thread",
        deleting_a_copy_keeps_the_thread,
    ),
];
