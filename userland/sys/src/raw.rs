//! The `svc` stubs (target only).

use crate::{Error, Syscall};

/// Raw two-argument syscall.
#[inline(always)]
fn syscall2(n: Syscall, a0: u64, a1: u64) -> u64 {
    let ret: u64;
    // SAFETY: `svc #0` enters the kernel, which reads x0, x1 and x7, writes only x0 and
    // returns to the next instruction; it touches no memory of ours except to read the
    // buffer the caller passed, which the kernel validates.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inlateout("x0") a0 => ret,
            in("x1") a1,
            in("x7") n as u64,
            options(nostack, preserves_flags),
        );
    }
    ret
}

fn result(code: u64) -> Result<(), Error> {
    match Error::from_raw(code) {
        None if code == 0 => Ok(()),
        Some(e) => Err(e),
        None => Err(Error::InvalidArgument),
    }
}

/// Hands one encoded log frame to the kernel.
pub fn debug_log(frame: &[u8]) -> Result<(), Error> {
    result(syscall2(
        Syscall::DebugLog,
        frame.as_ptr() as u64,
        frame.len() as u64,
    ))
}

/// Raw log call with unchecked arguments (for tests of the kernel's checks).
pub fn debug_log_raw(addr: u64, len: u64) -> Result<(), Error> {
    result(syscall2(Syscall::DebugLog, addr, len))
}

/// Raw call of any syscall number (for tests of the kernel's checks).
pub fn raw_call(n: u64, a0: u64, a1: u64) -> u64 {
    let ret: u64;
    // SAFETY: as in `syscall2`; an unknown number only makes the kernel return an error.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inlateout("x0") a0 => ret,
            in("x1") a1,
            in("x7") n,
            options(nostack, preserves_flags),
        );
    }
    ret
}

/// Ends the calling task with `status`.
pub fn exit(status: u64) -> ! {
    // SAFETY: the exit syscall never returns to this task.
    unsafe {
        core::arch::asm!("svc #0", in("x0") status, in("x7") Syscall::Exit as u64, options(noreturn, nostack));
    }
}

/// Invokes the capability at `cptr` with `info` and four message registers.
pub fn call(cptr: u64, info: crate::MessageInfo, mr: [u64; 4]) -> Result<(), Error> {
    let ret: u64;
    // SAFETY: `svc #0` with the Call number: the kernel reads x0..x5 and x7, writes only
    // x0 and touches none of our memory.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inlateout("x0") cptr => ret,
            in("x1") info.0,
            in("x2") mr[0],
            in("x3") mr[1],
            in("x4") mr[2],
            in("x5") mr[3],
            in("x7") Syscall::Call as u64,
            options(nostack, preserves_flags),
        );
    }
    result(ret)
}

/// Invokes the capability at `cptr` like [`call`] and returns what the invocation
/// reports in x1 and x2 (e.g. a register value or a pool's counts).
pub fn call_ret(cptr: u64, info: crate::MessageInfo, mr: [u64; 4]) -> Result<[u64; 2], Error> {
    let (ret, r1, r2): (u64, u64, u64);
    // SAFETY: `svc #0` with the Call number: the kernel reads x0..x5 and x7, writes x0..x2
    // (x1, x2 hold values only for invocations that return some; the kernel leaves them
    // as they were otherwise) and touches none of our memory.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inlateout("x0") cptr => ret,
            inlateout("x1") info.0 => r1,
            inlateout("x2") mr[0] => r2,
            in("x3") mr[1],
            in("x4") mr[2],
            in("x5") mr[3],
            in("x7") Syscall::Call as u64,
            options(nostack, preserves_flags),
        );
    }
    result(ret).map(|()| [r1, r2])
}

/// What [`debug_slot`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInfo {
    /// The encoded cap (see `kcore::cap::Cap::encode`).
    pub cap: [u64; 2],
    /// The slot's address.
    pub addr: u64,
    /// The parent's slot address, if any.
    pub parent: Option<u64>,
}

/// Describes the slot at (`index`, `depth`) in the caller's CSpace.
pub fn debug_slot(index: u64, depth: u64) -> Result<SlotInfo, Error> {
    let (r0, r1, r2, r3, r4): (u64, u64, u64, u64, u64);
    // SAFETY: `svc #0` with the DebugSlot number: the kernel reads x0, x1 and x7 and
    // writes x0..x4; no memory is touched.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inlateout("x0") index => r0,
            inlateout("x1") depth => r1,
            lateout("x2") r2,
            lateout("x3") r3,
            lateout("x4") r4,
            in("x7") Syscall::DebugSlot as u64,
            options(nostack, preserves_flags),
        );
    }
    result(r0)?;
    Ok(SlotInfo {
        cap: [r1, r2],
        addr: r3,
        parent: if r4 == u64::MAX { None } else { Some(r4) },
    })
}

/// IPC operations the kernel's same-core fast path completed on the caller's core since
/// boot (test builds only; others answer `UnknownSyscall`).
pub fn debug_fast_path_count() -> Result<u64, Error> {
    let (r0, r1): (u64, u64);
    // SAFETY: `svc #0` with the DebugFastPathCount number: the kernel reads x7 and writes
    // x0 and x1; no memory is touched.
    unsafe {
        core::arch::asm!(
            "svc #0",
            lateout("x0") r0,
            lateout("x1") r1,
            in("x7") Syscall::DebugFastPathCount as u64,
            options(nostack, preserves_flags),
        );
    }
    result(r0)?;
    Ok(r1)
}

/// A message: info word and four registers; on receipt also the sender's badge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Msg {
    /// Message info (label, length).
    pub info: u64,
    /// Message registers 0..3.
    pub mr: [u64; 4],
    /// Badge of the sender's cap (received messages only).
    pub badge: u64,
}

/// An IPC syscall: `n` with `x0` = `cptr` and the message; returns the error word and the
/// message found in the registers afterwards.
pub fn ipc(n: Syscall, cptr: u64, m: &Msg) -> (u64, Msg) {
    let (r0, r1, r2, r3, r4, r5, r6): (u64, u64, u64, u64, u64, u64, u64);
    // SAFETY: `svc #0` with an IPC syscall number: the kernel reads x0..x5 and x7 and
    // writes x0..x6; it touches none of our memory.
    unsafe {
        core::arch::asm!(
            "svc #0",
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
        r0,
        Msg {
            info: r1,
            mr: [r2, r3, r4, r5],
            badge: r6,
        },
    )
}

/// Gives up the rest of the time slice.
pub fn yield_now() {
    let _ = ipc(Syscall::Yield, 0, &Msg::default());
}
