//! `init`, the first native task. For now it greets and exits; its other modes are
//! self-tests that make the kernel handle a misbehaving EL0 task (the kernel must report
//! the fault, end the task and run on).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod task {
    use bulkhead_sys::{task_mode, Error};

    extern crate bulkhead_rt;

    /// An address no task has mapped (beyond every task's layout, inside the 40-bit IPA).
    const UNMAPPED: u64 = 0x10_0000_0000;

    #[no_mangle]
    fn task_main(mode: u64) -> u64 {
        match mode {
            task_mode::HELLO => hello(),
            task_mode::FAULT_READ => {
                defmt::info!("reading unmapped address {=u64:#x}", UNMAPPED);
                // SAFETY: deliberately invalid: the kernel must turn the fault into a
                // report and end this task; the read never completes.
                let v = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
                defmt::error!("read of an unmapped address returned {=u64}", v);
                1
            }
            task_mode::FAULT_WRITE_CODE => {
                let code = task_main as *const () as u64;
                defmt::info!("writing to my own code at {=u64:#x}", code);
                // SAFETY: deliberately invalid (code is mapped read/execute only).
                unsafe { core::ptr::write_volatile(code as *mut u32, 0) };
                defmt::error!("write to read-only code succeeded");
                1
            }
            task_mode::FAULT_UNDEF => {
                defmt::info!("executing an undefined instruction");
                // SAFETY: `udf` raises an undefined-instruction exception and nothing else.
                unsafe { core::arch::asm!("udf #0x42") };
                defmt::error!("undefined instruction returned");
                1
            }
            task_mode::FAULT_EXEC => {
                defmt::info!("jumping to unmapped address {=u64:#x}", UNMAPPED);
                // SAFETY: deliberately invalid: the instruction fetch faults and the kernel
                // ends the task.
                unsafe { core::arch::asm!("blr {}", in(reg) UNMAPPED) };
                defmt::error!("jump to an unmapped address returned");
                1
            }
            task_mode::BAD_SYSCALLS => bad_syscalls(),
            other => {
                defmt::error!("unknown mode {=u64}", other);
                2
            }
        }
    }

    fn hello() -> u64 {
        // Floating point works at EL0 (the kernel leaves FP/SIMD untrapped for tasks).
        let x = core::hint::black_box(1.5f64) * 4.0;
        defmt::info!("init running at EL0 (stage-2 only), FP ok: {=f64}", x);
        defmt::info!("hello from init; exiting with status 0");
        0
    }

    fn expect(what: &str, got: Result<(), Error>, want: Error) -> bool {
        let ok = got == Err(want);
        if ok {
            defmt::info!("{=str}: rejected as expected", what);
        } else {
            defmt::error!(
                "{=str}: wrong result (want error {=u64})",
                what,
                want as u64
            );
        }
        ok
    }

    fn bad_syscalls() -> u64 {
        use bulkhead_sys::{debug_log_raw, raw_call};
        let good = [1u8, 2, 3, 0];
        let mut ok = true;
        ok &= expect("log from address 0", debug_log_raw(0, 8), Error::BadAddress);
        ok &= expect(
            "log from an unmapped address",
            debug_log_raw(UNMAPPED, 8),
            Error::BadAddress,
        );
        ok &= expect(
            "log that wraps the address space",
            debug_log_raw(u64::MAX - 3, 8),
            Error::BadAddress,
        );
        ok &= expect(
            "log of length 0",
            debug_log_raw(good.as_ptr() as u64, 0),
            Error::BadLength,
        );
        ok &= expect(
            "log of length 1 MiB",
            debug_log_raw(good.as_ptr() as u64, 1 << 20),
            Error::BadLength,
        );
        let no_delim = [1u8, 2, 3];
        ok &= expect(
            "frame without delimiter",
            debug_log_raw(no_delim.as_ptr() as u64, 3),
            Error::InvalidArgument,
        );
        let forged = [1u8, 0, 2, 0];
        ok &= expect(
            "frame with an embedded delimiter",
            debug_log_raw(forged.as_ptr() as u64, 4),
            Error::InvalidArgument,
        );
        let r = raw_call(0xdead, 0, 0);
        ok &= expect(
            "unknown syscall",
            Error::from_raw(r).map_or(Ok(()), Err),
            Error::UnknownSyscall,
        );
        // This system's kernel is built without the test-only syscalls.
        ok &= expect(
            "DebugSlot in a non-test build",
            bulkhead_sys::debug_slot(1, 64).map(|_| ()),
            Error::UnknownSyscall,
        );
        if ok {
            defmt::info!("every bad syscall got its documented error");
            0
        } else {
            1
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("init is a Bulkhead EL0 task: build and run it with `cargo xtask run`");
    std::process::exit(2);
}
