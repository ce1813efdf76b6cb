//! Exception handlers: syscalls and faults of EL0 tasks, interrupts, and reports of
//! anything the kernel did not expect of itself.
//!
//! Entered from `entry.S` with IRQs masked; the kernel is not preemptible. Handlers of
//! lower-level exceptions never return: they end in `task::run_current` (resume the task
//! or the next one) — the stack is reset at every return to EL0.

use bulkhead_sys::{fault, Error, MessageInfo, Syscall};
use core::sync::atomic::{AtomicU32, Ordering};
use kcore::esr::{Esr, ExceptionClass};
use kcore::logwire::{check_task_frame, task_tag, MAX_TASK_FRAME};

use crate::arch::cpu::{self, UserContext};
use crate::arch::regs::sysreg_read;
use crate::arch::{gic, psci, timer};
use crate::cspace;
use crate::ipcbuf::IpcMem;
use crate::sched::{self, KObj};
use crate::task::{self, End, RUNNER};
use bulkhead_sys::cap::rights;
use kcore::cap::Cap;
use kcore::cap::SlotMem as _;
use kcore::thread::{self, tcb, ObjMem};

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
    let same_el = matches!(
        class,
        ExceptionClass::DataAbortSameEl | ExceptionClass::InstrAbortSameEl
    );
    match esr.fault() {
        // The kernel's own aborts are stage-1 EL2 faults: no IPA to report.
        Some(f) if same_el => defmt::warn!(
            "{=str} {=str}: {=str} (EC {=u8:#x}, ISS {=u32:#x}): {=str} at level {=u8}, {=str} at {=u64:#x}, ELR {=u64:#x}, SPSR {=u64:#x}, core {=usize}",
            who, what, class.name(), esr.ec(), esr.iss(), f.name(), f.level().unwrap_or(0),
            access(esr), far, ctx_elr, ctx_spsr, cpu::index()
        ),
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

/// Handles a fault of the running thread. With a fault handler (an endpoint named in its
/// TCB) the fault becomes a message to it and the thread waits for the reply. Without
/// one, a boot task's first thread takes its whole task down; any other thread is
/// stopped alone.
fn fault(regs: &Trap, what: &str, label: u64) -> ! {
    let cur = sched::current();
    let esr = sysreg_read!("esr_el2");
    let far = sysreg_read!("far_el2");
    let msg = [MessageInfo::new(label, 4).0, regs.elr, far, esr, 0];
    if deliver_fault(cur, msg) {
        sched::resume();
    }
    let mut r = RUNNER.lock();
    let slot = KObj.rd(cur + tcb::TASK) as usize;
    let name = r
        .running
        .iter()
        .find(|t| t.slot == slot)
        .map_or("?", |t| t.name);
    if r.task_of(cur).is_some() {
        report("task", name, regs.elr, regs.spsr);
        defmt::warn!(
            "task {=str} killed by a fault ({=str}); the kernel carries on",
            name,
            what
        );
        r.end(cur, End::Faulted);
        task::run_current(r);
    }
    drop(r);
    report("thread of task", name, regs.elr, regs.spsr);
    defmt::warn!(
        "thread {=u64:#x} of task {=str} stopped by a fault ({=str})",
        cur,
        name,
        what
    );
    sched::stop(cur, Error::Aborted as u64);
    sched::resume()
}

/// Sends a fault message to `t`'s fault endpoint, if it has a usable one.
fn deliver_fault(t: u64, msg: [u64; 5]) -> bool {
    let cptr = KObj.rd(t + tcb::FAULT_EP);
    if cptr == 0 {
        return false;
    }
    if crate::fastpath::fault(t, cptr, msg) {
        return true;
    }
    sched::ipc(|m, w| match endpoint_in(m, t, cptr, rights::WRITE) {
        Ok((ep, badge, _)) => {
            thread::send_fault(m, t, ep, badge, msg, w);
            true
        }
        Err(_) => false,
    })
}

/// What a trap handler needs of the saved registers: arguments and syscall number
/// (x0..x7), where it came from (ELR) and its state (SPSR). Copied once; from then on the
/// TCB is touched only through `KObj`, so no reference to it is held while it changes.
struct Trap {
    x: [u64; 8],
    elr: u64,
    spsr: u64,
}

fn trap_regs(ctx: *const UserContext) -> Trap {
    // SAFETY: entry.S passes the running thread's saved registers (the start of its TCB,
    // or this core's scratch context), just written, valid for reads; the fields are read
    // by value and no reference outlives this function.
    // Volatile reads, one register at a time: a plain copy of the array becomes a call to
    // the byte-wise `memcpy` of this soft-float target, a hundred instructions on every
    // kernel entry.
    unsafe {
        Trap {
            x: core::array::from_fn(|i| core::ptr::addr_of!((*ctx).x[i]).read_volatile()),
            elr: core::ptr::addr_of!((*ctx).elr).read(),
            spsr: core::ptr::addr_of!((*ctx).spsr).read(),
        }
    }
}

/// Synchronous exception from EL0.
#[no_mangle]
extern "C" fn bh_lower_sync(ctx: *mut UserContext) -> ! {
    crate::vm::enter();
    let regs = trap_regs(ctx);
    let cur = sched::current();
    if cur == 0 {
        // The thread was stopped from another core while it ran here: drop the trap
        // (its registers went to the scratch area) and schedule.
        sched::resume();
    }
    let esr = Esr(sysreg_read!("esr_el2"));
    if esr.class() == ExceptionClass::FpSimdAccess {
        sched::fp_trap();
        sched::resume();
    }
    if crate::vcpu::of(cur) != 0 {
        guest_exit(cur, &regs, esr);
    }
    match esr.class() {
        ExceptionClass::Svc64 => syscall(&regs),
        ExceptionClass::DataAbortLowerEl => fault(&regs, "data abort", fault::DATA_ABORT),
        ExceptionClass::InstrAbortLowerEl => {
            fault(&regs, "instruction abort", fault::INSTRUCTION_ABORT)
        }
        ExceptionClass::Unknown => fault(&regs, "undefined instruction", fault::UNDEFINED),
        _ => fault(&regs, "unexpected exception", fault::OTHER),
    }
}

/// An exit of a guest (a VCPU thread at EL1). Stage-2 translation faults inside its
/// bound memory regions are resolved here without leaving the kernel; everything else
/// becomes a fault message to the VCPU thread's handler (its VMM), whose reply resumes
/// the guest.
fn guest_exit(cur: u64, regs: &Trap, esr: Esr) -> ! {
    let far = sysreg_read!("far_el2");
    let hpfar = sysreg_read!("hpfar_el2");
    let ipa = ((hpfar >> 4) << 12) | (far & 0xfff);
    let x = &regs.x;
    let msg = match esr.class() {
        c @ (ExceptionClass::DataAbortLowerEl | ExceptionClass::InstrAbortLowerEl) => {
            let exec = c == ExceptionClass::InstrAbortLowerEl;
            let resolved = match esr.fault() {
                Some(kcore::esr::FaultKind::Translation(_)) => {
                    crate::vm::resolve_fault(cur, ipa, esr.is_write(), exec)
                }
                Some(kcore::esr::FaultKind::Permission(_)) if !exec => {
                    crate::vm::resolve_permission_fault(cur, ipa, esr.is_write())
                }
                _ => false,
            };
            if resolved {
                sched::resume();
            }
            let value = if esr.is_write() && esr.isv() && esr.srt() != 31 {
                KObj.rd(cur + tcb::reg(esr.srt() as u64))
            } else {
                0
            };
            let label = if exec {
                fault::VM_INSTRUCTION_ABORT
            } else {
                fault::VM_DATA_ABORT
            };
            [MessageInfo::new(label, 4).0, regs.elr, ipa, esr.0, value]
        }
        ExceptionClass::Hvc64 => [
            MessageInfo::new(fault::HYPERCALL, 4).0,
            x[0],
            x[1],
            x[2],
            x[3],
        ],
        ExceptionClass::Smc64 => {
            // A trapped SMC returns to itself; the emulated call returns past it.
            KObj.wr(cur + tcb::CTX + 32 * 8, regs.elr + 4);
            [MessageInfo::new(fault::SMC, 4).0, x[0], x[1], x[2], x[3]]
        }
        ExceptionClass::SysRegTrap => {
            let iss = esr.iss() as u64;
            let rt = (iss >> 5) & 0x1f;
            // ISS bit 0: 1 = read (MRS), 0 = write (MSR).
            let value = if iss & 1 == 0 && rt != 31 {
                KObj.rd(cur + tcb::reg(rt))
            } else {
                0
            };
            [
                MessageInfo::new(fault::SYSREG, 4).0,
                regs.elr,
                iss,
                esr.0,
                value,
            ]
        }
        _ => [MessageInfo::new(fault::OTHER, 4).0, regs.elr, ipa, esr.0, 0],
    };
    sched::unload_current_guest();
    if deliver_fault(cur, msg) {
        sched::resume();
    }
    report("guest", "exit", regs.elr, regs.spsr);
    defmt::warn!(
        "VCPU thread {=u64:#x} has no fault handler for this exit; stopped",
        cur
    );
    sched::stop(cur, Error::Aborted as u64);
    sched::resume()
}

fn set(t: u64, reg: u64, v: u64) {
    KObj.wr(t + tcb::reg(reg), v);
}

fn code(r: Result<(), Error>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => e as u64,
    }
}

fn ipc_send(cur: u64, cptr: u64, call: bool, block: bool) {
    sched::ipc(|m, w| send_in(m, w, cur, cptr, call, block));
}

/// A Send or Call under the IPC locks: the endpoint is looked up with the capability lock
/// that the IPC holds anyway.
fn send_in(
    m: &mut IpcMem<'_>,
    w: &mut dyn FnMut(&mut IpcMem<'_>, u64),
    cur: u64,
    cptr: u64,
    call: bool,
    block: bool,
) {
    match endpoint_in(m, cur, cptr, rights::WRITE) {
        Ok((ep, badge, r)) => {
            // A capability in the message travels only with the Grant right.
            m.wr(cur + tcb::SEND_GRANT, (r & rights::GRANT != 0) as u64);
            thread::send(m, cur, ep, badge, call, block, w);
        }
        Err(e) => m.wr(cur + tcb::reg(0), e as u64),
    }
}

/// The endpoint at `cptr` in `t`'s CSpace, if it carries `right`, looked up under the
/// capability lock the IPC already holds: (address, badge, rights).
fn endpoint_in(m: &IpcMem<'_>, t: u64, cptr: u64, right: u8) -> Result<(u64, u64, u8), Error> {
    let root = m.caps.read(t + tcb::CSPACE_SLOT).cap;
    let slot = kcore::cap::lookup(
        &*m.caps,
        &root,
        kcore::cap::Addr {
            index: cptr,
            depth: 64,
        },
    )?;
    match m.caps.read(slot).cap {
        Cap::Endpoint {
            addr,
            rights,
            badge,
        } if rights & right != 0 => Ok((addr, badge, rights)),
        _ => Err(Error::InvalidCapability),
    }
}

fn ipc_recv(cur: u64, cptr: u64, block: bool) {
    sched::ipc(|m, w| match endpoint_in(m, cur, cptr, rights::READ) {
        Ok((ep, _, _)) => {
            thread::recv(m, cur, ep, block, w);
        }
        Err(e) => m.wr(cur + tcb::reg(0), e as u64),
    });
}

fn syscall(regs: &Trap) -> ! {
    let cur = sched::current();
    let x = &regs.x;
    defmt::trace!(
        "syscall {=u64} from {=u64:#x}: x0 {=u64:#x} x1 {=u64:#x}",
        x[7],
        cur,
        x[0],
        x[1]
    );
    // The first syscall of a boot task's first thread is logged once; checking for it
    // costs one atomic, not the boot-task lock, on every syscall.
    let slot = (KObj.rd(cur + tcb::TASK) as usize).min(task::FIRST_SYSCALL_PENDING.len() - 1);
    if task::FIRST_SYSCALL_PENDING[slot].load(core::sync::atomic::Ordering::Relaxed) == cur
        && task::FIRST_SYSCALL_PENDING[slot]
            .compare_exchange(
                cur,
                0,
                core::sync::atomic::Ordering::Relaxed,
                core::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        let r = RUNNER.lock();
        // SPSR_EL2.M[3:0] says where the call came from; 0b0000 is EL0t.
        if let Some(t) = r.task_of(cur).filter(|_| regs.spsr & 0xf == 0) {
            defmt::info!("task {=str}: first syscall, from EL0", t.name);
        }
    }
    match Syscall::from_raw(x[7]) {
        Some(Syscall::DebugLog) => {
            let res = debug_log(cur, slot, x[0], x[1]);
            set(cur, 0, code(res));
        }
        Some(Syscall::Exit) => {
            let mut r = RUNNER.lock();
            if r.task_of(cur).is_some() {
                r.end(cur, End::Exited(x[0]));
                task::run_current(r);
            }
            drop(r);
            defmt::info!("thread {=u64:#x} exited with status {=u64}", cur, x[0]);
            sched::stop(cur, 0);
        }
        Some(Syscall::Call) if crate::fastpath::call(cur, x[0]) => {}
        Some(Syscall::Call) => {
            let (cap, mut caps) = cspace::cap_of_locked(cur, x[0]);
            if let Ok(Cap::Endpoint { .. }) = cap {
                // An endpoint: the IPC goes on under the capability lock the lookup took.
                sched::ipc_with(&mut caps, |m, w| send_in(m, w, cur, x[0], true, true));
            } else {
                // Anything else is an invocation, which takes the lock itself.
                drop(caps);
                match cspace::invoke(cur, x[0], MessageInfo(x[1]), [x[2], x[3], x[4], x[5]]) {
                    Ok(ret) => {
                        set(cur, 0, 0);
                        if let Some([a, b]) = ret {
                            set(cur, 1, a);
                            set(cur, 2, b);
                        }
                    }
                    Err(e) => set(cur, 0, e as u64),
                }
            }
        }
        Some(Syscall::DebugSlot | Syscall::DebugFastPathCount) if !cfg!(feature = "test-build") => {
            set(cur, 0, Error::UnknownSyscall as u64)
        }
        Some(Syscall::DebugFastPathCount) => {
            set(cur, 0, 0);
            set(cur, 1, crate::fastpath::count());
        }
        Some(Syscall::DebugSlot) => match cspace::describe(cur, x[0], x[1]) {
            Ok((cap, addr, parent)) => {
                set(cur, 0, 0);
                set(cur, 1, cap[0]);
                set(cur, 2, cap[1]);
                set(cur, 3, addr);
                set(cur, 4, parent.unwrap_or(u64::MAX));
            }
            Err(e) => set(cur, 0, e as u64),
        },
        Some(Syscall::Send) => ipc_send(cur, x[0], false, true),
        Some(Syscall::NBSend) => ipc_send(cur, x[0], false, false),
        Some(Syscall::Recv) => ipc_recv(cur, x[0], true),
        Some(Syscall::NBRecv) => ipc_recv(cur, x[0], false),
        Some(Syscall::Reply) => {
            sched::ipc(|m, w| thread::reply(m, cur, w));
            set(cur, 0, 0);
        }
        Some(Syscall::ReplyRecv) if crate::fastpath::reply_recv(cur, x[0]) => {}
        Some(Syscall::ReplyRecv) => {
            // One critical section for both halves (a VMM's every exit goes through here).
            sched::ipc(|m, w| {
                thread::reply(m, cur, w);
                match endpoint_in(m, cur, x[0], rights::READ) {
                    Ok((ep, _, _)) => {
                        thread::recv(m, cur, ep, true, w);
                    }
                    Err(e) => m.wr(cur + tcb::reg(0), e as u64),
                }
            });
        }
        Some(Syscall::Signal) => match cspace::cap_of(cur, x[0]) {
            Ok(Cap::Notification {
                addr,
                rights,
                badge,
            }) if rights & rights::WRITE != 0 => {
                sched::ipc(|m, w| thread::signal(m, addr, badge, w));
                set(cur, 0, 0);
            }
            Ok(_) => set(cur, 0, Error::InvalidCapability as u64),
            Err(e) => set(cur, 0, e as u64),
        },
        Some(n @ (Syscall::Wait | Syscall::Poll)) => match cspace::cap_of(cur, x[0]) {
            Ok(Cap::Notification { addr, rights, .. }) if rights & rights::READ != 0 => {
                sched::ipc(|m, _| thread::wait(m, cur, addr, n == Syscall::Wait));
            }
            Ok(_) => set(cur, 0, Error::InvalidCapability as u64),
            Err(e) => set(cur, 0, e as u64),
        },
        Some(Syscall::Yield) => {
            set(cur, 0, 0);
            sched::yield_slice();
        }
        None => {
            // With a fault handler, an unknown syscall is a fault it may emulate;
            // without one it is an error return.
            let msg = [
                MessageInfo::new(fault::UNKNOWN_SYSCALL, 2).0,
                regs.elr,
                x[7],
                0,
                0,
            ];
            if !deliver_fault(cur, msg) {
                set(cur, 0, Error::UnknownSyscall as u64);
            }
        }
    }
    sched::resume()
}

/// DebugLog of thread `t` of the boot task in payload slot `slot`: the frame is read from
/// the thread's own address space and tagged with the task's log tag.
fn debug_log(t: u64, slot: usize, addr: u64, len: u64) -> Result<(), Error> {
    if len == 0 || len > MAX_TASK_FRAME as u64 {
        return Err(Error::BadLength);
    }
    let mut buf = [0u8; MAX_TASK_FRAME];
    let frame = &mut buf[..len as usize];
    let root = kcore::addr::PhysAddr(KObj.rd(t + tcb::VTTBR) & 0x0000_ffff_ffff_fffe);
    if root.0 == 0 || !task::copy_from_space(root, addr, frame) {
        return Err(Error::BadAddress);
    }
    check_task_frame(frame).map_err(|_| Error::InvalidArgument)?;
    crate::log::write_task_frame(task_tag(slot), frame);
    Ok(())
}

/// IRQ while EL0 ran.
#[no_mangle]
extern "C" fn bh_lower_irq(_ctx: *mut UserContext) -> ! {
    crate::vm::enter();
    handle_irqs();
    sched::resume()
}

/// FIQ from EL0 (never routed here on purpose).
#[no_mangle]
extern "C" fn bh_lower_fiq(ctx: *mut UserContext) -> ! {
    crate::vm::enter();
    // SAFETY: as in `bh_lower_sync`.
    fault(&trap_regs(ctx), "FIQ", fault::OTHER)
}

/// SError from EL0.
#[no_mangle]
extern "C" fn bh_lower_serror(ctx: *mut UserContext) -> ! {
    crate::vm::enter();
    // SAFETY: as in `bh_lower_sync`.
    fault(&trap_regs(ctx), "SError", fault::OTHER)
}

/// IRQ taken in the kernel (only while idle or waiting with IRQs unmasked).
#[no_mangle]
extern "C" fn bh_kernel_irq(_frame: *mut u64) {
    crate::vm::enter();
    handle_irqs();
    sched::after_kernel_irq();
    // Back to waiting (idle, or a boot-time wait): outside the kernel for QSBR again.
    crate::vm::exit();
}

fn handle_irqs() {
    loop {
        let raw = gic::ack();
        let id = gic::intid(raw);
        if id >= gic::SPECIAL {
            break;
        }
        let me = cpu::this();
        match id {
            26 => {
                timer::arm_next();
                me.ticks.fetch_add(1, Ordering::Relaxed);
                sched::tick();
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
            // The guest's virtual timer (only enabled while a guest runs here).
            27 => crate::vcpu::vtimer_fired(sched::current()),
            // The exit path reschedules anyway; the SGI only brought this core here.
            sched::SGI_RESCHED => {}
            other => {
                if !crate::irq::deliver(other) {
                    defmt::warn!(
                        "core {=usize}: interrupt {=u32} has no handler; masked",
                        me.index,
                        other
                    );
                }
            }
        }
        gic::eoi(raw);
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
