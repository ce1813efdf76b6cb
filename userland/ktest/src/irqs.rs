//! Test cases of interrupts delivered to userland: IRQControl issues IRQHandler caps,
//! a handler bound to a notification signals it when its interrupt fires, Ack re-enables
//! it. The interrupt used is the thread's own EL1 physical timer (PPI 30), which the
//! kernel saves and loads per thread.

use crate::caps::Case;
use crate::util::*;
use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::{call, invocation, ipc, Error, MessageInfo, Msg, Syscall};
use kcore::cap::Cap;

const F: u64 = FREE;
const HANDLER: u64 = F + 40;
const NTFN: u64 = F + 41;
const TIMER_PPI: u64 = 30;

fn irq_control() -> Option<u64> {
    (2..70).find(|&i| matches!(cap_at(i), Cap::IrqControl))
}

fn get(irq: u64, dest: u64) -> Result<(), Error> {
    let ctl = irq_control().ok_or(Error::InvalidCapability)?;
    call(
        ctl,
        MessageInfo::new(invocation::IRQ_CONTROL_GET, 2),
        [irq, dest, 0, 0],
    )
}

fn handler(label: u64, mr0: u64) -> Result<(), Error> {
    call(HANDLER, MessageInfo::new(label, 1), [mr0, 0, 0, 0])
}

fn timer_in(ticks: u64) {
    // SAFETY: the thread's own EL1 physical timer, which the kernel lets EL0 program;
    // writing it affects no memory.
    unsafe {
        core::arch::asm!("msr cntp_tval_el0, {}", "msr cntp_ctl_el0, {}", "isb", in(reg) ticks, in(reg) 1u64);
    }
}

fn timer_off() {
    // SAFETY: as in `timer_in`.
    unsafe { core::arch::asm!("msr cntp_ctl_el0, xzr", "isb") };
}

/// Polls the notification until it is signalled (bounded); returns the bits.
fn poll_until_signalled() -> Option<u64> {
    for _ in 0..2_000_000 {
        let (e, m) = ipc(Syscall::Poll, NTFN, &Msg::default());
        if e == 0 && m.badge != 0 {
            return Some(m.badge);
        }
    }
    None
}

fn irq_delivered_to_notification(ut: u64) -> Outcome {
    check(irq_control().is_some(), "no IRQ control cap")?;
    expect(get(TIMER_PPI, HANDLER), Ok(()), "get handler")?;
    check(
        matches!(cap_at(HANDLER), Cap::IrqHandler { irq: 30 }),
        "not a handler cap",
    )?;
    make(ut, ObjectType::Notification, 0, F).map_err(|_| "ntfn")?;
    mint(NTFN, F, rights::ALL, 0x1000).map_err(|_| "mint")?;
    expect(
        handler(invocation::IRQ_HANDLER_SET_NOTIFICATION, NTFN),
        Ok(()),
        "bind",
    )?;
    for round in 0..3 {
        timer_in(2000);
        let bits = poll_until_signalled();
        timer_off();
        check(
            bits == Some(0x1000),
            if round == 0 {
                "interrupt not delivered"
            } else {
                "not delivered again after Ack"
            },
        )?;
        expect(handler(invocation::IRQ_HANDLER_ACK, 0), Ok(()), "ack")?;
    }
    expect(delete(HANDLER), Ok(()), "delete handler")?;
    check(
        matches!(cap_at(HANDLER), Cap::Null),
        "handler cap still there",
    )
}

fn irq_control_errors(ut: u64) -> Outcome {
    expect(
        get(26, HANDLER),
        Err(Error::RangeError),
        "the kernel's own timer",
    )?;
    expect(get(1, HANDLER), Err(Error::RangeError), "an SGI")?;
    expect(get(5000, HANDLER), Err(Error::RangeError), "beyond the GIC")?;
    expect(get(TIMER_PPI, HANDLER), Ok(()), "get")?;
    expect(
        get(TIMER_PPI, HANDLER + 1),
        Err(Error::RevokeFirst),
        "claimed twice",
    )?;
    expect(get(31, HANDLER), Err(Error::DeleteFirst), "occupied slot")?;
    make(ut, ObjectType::Endpoint, 0, F).map_err(|_| "ep")?;
    expect(
        handler(invocation::IRQ_HANDLER_SET_NOTIFICATION, F),
        Err(Error::InvalidCapability),
        "bind an endpoint",
    )?;
    expect(
        handler(99, 0),
        Err(Error::IllegalOperation),
        "unknown label",
    )?;
    copy(HANDLER + 2, HANDLER, rights::ALL).map_err(|_| "copy")?;
    expect(delete(HANDLER), Ok(()), "delete one")?;
    expect(
        get(TIMER_PPI, HANDLER),
        Err(Error::RevokeFirst),
        "a copy still holds it",
    )?;
    expect(delete(HANDLER + 2), Ok(()), "delete the copy")?;
    expect(
        get(TIMER_PPI, HANDLER),
        Ok(()),
        "released after the last cap",
    )?;
    expect(delete(HANDLER), Ok(()), "cleanup")
}

/// The interrupt cases.
pub const CASES: &[(&str, Case)] = &[
    (
        "irq_delivered_to_notification",
        irq_delivered_to_notification,
    ),
    ("irq_control_errors", irq_control_errors),
];
