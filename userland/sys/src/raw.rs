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
