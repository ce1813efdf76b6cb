//! Exception handlers: syscalls and faults of EL0 tasks, interrupts, and reports of
//! anything the kernel did not expect of itself.
//!
//! Entered from `entry.S` with IRQs masked; the kernel is not preemptible. Handlers of
//! lower-level exceptions never return: they end in `task::run_current` (resume the task
//! or the next one) — the stack is reset at every return to EL0.

use bulkhead_sys::{Error, MessageInfo, Syscall};
use core::sync::atomic::{AtomicU32, Ordering};
use kcore::esr::{Esr, ExceptionClass};
use kcore::logwire::{check_task_frame, task_tag, MAX_TASK_FRAME};

use crate::arch::cpu::{self, UserContext};
use crate::arch::regs::sysreg_read;
use crate::arch::{gic, psci, timer};
use crate::task::{self, End, RUNNER};

/// SGI the boot core sends to check that a core takes interrupts.
pub const SGI_PING: u32 = 1;
/// SGI a core answers a ping with.
pub const SGI_PONG: u32 = 2;
/// Pongs the boot core received.
pub static PONGS: AtomicU32 = AtomicU32::new(0);

fn access(esr: Esr) -> &'static str {
    match esr.class() {
        ExceptionClass::InstrAbortLowerEl | ExceptionClass::InstrAbortSameEl => "instruction fetch",
        _ if esr.is_write() => "write",
        _ => "read",
    }
}

/// The kernel's report of a fault or unexpected exception.
fn report(who: &str, what: &str, ctx_elr: u64, ctx_spsr: u64) {
    let esr = Esr(sysreg_read!("esr_el2"));
    let far = sysreg_read!("far_el2");
    let hpfar = sysreg_read!("hpfar_el2");
    let class = esr.class();
    match esr.fault() {
        Some(f) => defmt::warn!(
            "{=str} {=str}: {=str} (EC {=u8:#x}, ISS {=u32:#x}): {=str} at level {=u8}, {=str} at FAR {=u64:#x} (IPA {=u64:#x}), ELR {=u64:#x}, SPSR {=u64:#x}, core {=usize}",
            who, what, class.name(), esr.ec(), esr.iss(), f.name(), f.level().unwrap_or(0),
            access(esr),
            far, (hpfar >> 4) << 12 | (far & 0xfff), ctx_elr, ctx_spsr, cpu::index()
        ),
        None => defmt::warn!(
            "{=str} {=str}: {=str} (EC {=u8:#x}, ISS {=u32:#x}), ELR {=u64:#x}, SPSR {=u64:#x}, core {=usize}",
            who, what, class.name(), esr.ec(), esr.iss(), ctx_elr, ctx_spsr, cpu::index()
        ),
    }
}

/// Ends the current task after a fault and moves on.
fn kill_current(ctx: &UserContext, what: &str) -> ! {
    let mut r = RUNNER.lock();
    let name = r.current.as_ref().map_or("?", |t| t.name);
    report("task", name, ctx.elr, ctx.spsr);
    defmt::warn!(
        "task {=str} killed by a fault ({=str}); the kernel carries on",
        name,
        what
    );
    r.end_current(End::Faulted);
    r.load_next();
    task::run_current(r)
}

/// Synchronous exception from EL0.
#[no_mangle]
extern "C" fn bh_lower_sync(ctx: *mut UserContext) -> ! {
    // SAFETY: entry.S passes the current task's context, saved just now; the task is
    // stopped and only this core touches its context.
    let ctx = unsafe { &mut *ctx };
    let esr = Esr(sysreg_read!("esr_el2"));
    match esr.class() {
        ExceptionClass::Svc64 => syscall(ctx),
        ExceptionClass::DataAbortLowerEl => kill_current(ctx, "data abort"),
        ExceptionClass::InstrAbortLowerEl => kill_current(ctx, "instruction abort"),
        ExceptionClass::Unknown => kill_current(ctx, "undefined instruction"),
        _ => kill_current(ctx, "unexpected exception"),
    }
}

fn syscall(ctx: &mut UserContext) -> ! {
    let mut r = RUNNER.lock();
    let Some(t) = r.current.as_mut() else {
        drop(r);
        panic!("syscall with no current task");
    };
    if !t.seen_syscall {
        t.seen_syscall = true;
        // SPSR_EL2.M[3:0] says where the call came from; 0b0000 is EL0t.
        if ctx.spsr & 0xf == 0 {
            defmt::info!("task {=str}: first syscall, from EL0", t.name);
        }
    }
    let ret = match Syscall::from_raw(ctx.x[7]) {
        Some(Syscall::DebugLog) => debug_log(t, ctx.x[0], ctx.x[1]),
        Some(Syscall::Call) => {
            let mr = [ctx.x[2], ctx.x[3], ctx.x[4], ctx.x[5]];
            crate::cspace::invoke(&t.cspace, ctx.x[0], MessageInfo(ctx.x[1]), mr)
        }
        Some(Syscall::DebugSlot) => match crate::cspace::describe(&t.cspace, ctx.x[0], ctx.x[1]) {
            Ok((cap, addr, parent)) => {
                ctx.x[1] = cap[0];
                ctx.x[2] = cap[1];
                ctx.x[3] = addr;
                ctx.x[4] = parent.unwrap_or(u64::MAX);
                Ok(())
            }
            Err(e) => Err(e),
        },
        Some(Syscall::Exit) => {
            r.end_current(End::Exited(ctx.x[0]));
            r.load_next();
            task::run_current(r)
        }
        None => Err(Error::UnknownSyscall),
    };
    ctx.x[0] = match ret {
        Ok(()) => 0,
        Err(e) => e as u64,
    };
    task::run_current(r)
}

fn debug_log(t: &task::Task, addr: u64, len: u64) -> Result<(), Error> {
    if len == 0 || len > MAX_TASK_FRAME as u64 {
        return Err(Error::BadLength);
    }
    let mut buf = [0u8; MAX_TASK_FRAME];
    let frame = &mut buf[..len as usize];
    if !task::copy_from_task(t, addr, frame) {
        return Err(Error::BadAddress);
    }
    check_task_frame(frame).map_err(|_| Error::InvalidArgument)?;
    crate::log::write_task_frame(task_tag(t.slot), frame);
    Ok(())
}

/// IRQ while EL0 ran.
#[no_mangle]
extern "C" fn bh_lower_irq(_ctx: *mut UserContext) -> ! {
    handle_irqs();
    task::run_current(RUNNER.lock())
}

/// FIQ from EL0 (never routed here on purpose).
#[no_mangle]
extern "C" fn bh_lower_fiq(ctx: *mut UserContext) -> ! {
    // SAFETY: as in `bh_lower_sync`.
    kill_current(unsafe { &*ctx }, "FIQ")
}

/// SError from EL0.
#[no_mangle]
extern "C" fn bh_lower_serror(ctx: *mut UserContext) -> ! {
    // SAFETY: as in `bh_lower_sync`.
    kill_current(unsafe { &*ctx }, "SError")
}

/// IRQ taken in the kernel (only while idle or waiting with IRQs unmasked).
#[no_mangle]
extern "C" fn bh_kernel_irq(_frame: *mut u64) {
    handle_irqs();
}

fn handle_irqs() {
    loop {
        let id = gic::ack();
        if id >= gic::SPECIAL {
            break;
        }
        let me = cpu::this();
        match id {
            26 => {
                timer::arm_next();
                me.ticks.fetch_add(1, Ordering::Relaxed);
            }
            SGI_PING => {
                me.sgis.fetch_add(1, Ordering::Relaxed);
                defmt::info!(
                    "core {=usize}: SGI {=u32} from core 0, answering",
                    me.index,
                    id
                );
                gic::send_sgi(SGI_PONG, cpu::get(0).mpidr.load(Ordering::Relaxed));
            }
            SGI_PONG => {
                PONGS.fetch_add(1, Ordering::Relaxed);
            }
            other => defmt::warn!(
                "core {=usize}: unexpected interrupt {=u32}",
                me.index,
                other
            ),
        }
        gic::eoi(id);
    }
}

/// Synchronous exception in the kernel itself: always a kernel bug.
#[no_mangle]
extern "C" fn bh_kernel_sync(frame: *mut u64) {
    // SAFETY: entry.S passes its 23-word frame on this core's stack (x0..x18, x29,
    // x30, ELR, SPSR).
    let f = unsafe { core::slice::from_raw_parts(frame, 23) };
    defmt::error!("KERNEL EXCEPTION on core {=usize}", cpu::index());
    report("kernel", "exception", f[21], f[22]);
    psci::exit(3)
}

const VECTOR_NAMES: [&str; 16] = [
    "sync, current EL with SP_EL0",
    "IRQ, current EL with SP_EL0",
    "FIQ, current EL with SP_EL0",
    "SError, current EL with SP_EL0",
    "sync, current EL",
    "IRQ, current EL",
    "FIQ, current EL",
    "SError, current EL",
    "sync, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "sync, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];

/// An exception through a vector the kernel never expects.
#[no_mangle]
extern "C" fn bh_unexpected(kind: u64, _frame: *mut u64) {
    let name = VECTOR_NAMES.get(kind as usize).copied().unwrap_or("?");
    defmt::error!(
        "KERNEL EXCEPTION on core {=usize}: unexpected vector ({=str})",
        cpu::index(),
        name
    );
    report(
        "kernel",
        "exception",
        sysreg_read!("elr_el2"),
        sysreg_read!("spsr_el2"),
    );
    psci::exit(4)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!(
        "KERNEL PANIC on core {=usize}: {}",
        cpu::index(),
        defmt::Display2Format(info)
    );
    psci::exit(101)
}
