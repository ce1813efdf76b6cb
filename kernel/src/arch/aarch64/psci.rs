//! PSCI calls to the firmware (PSCI 1.1, Arm DEN 0022), over the board's conduit.

use core::sync::atomic::{AtomicBool, Ordering};
use kcore::board::{Board, PsciConduit};

const PSCI_VERSION: u64 = 0x8400_0000;
const CPU_ON_64: u64 = 0xc400_0003;
const SYSTEM_OFF: u64 = 0x8400_0008;

fn call(func: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    match crate::ThisBoard::PSCI {
        PsciConduit::Smc => {
            let ret: u64;
            // SAFETY: an SMC Calling Convention call to the firmware; it preserves x4+
            // and our memory (x0..x3 are declared clobbered through in/out).
            unsafe {
                core::arch::asm!("smc #0",
                    inlateout("x0") func => ret, inlateout("x1") a1 => _,
                    inlateout("x2") a2 => _, inlateout("x3") a3 => _,
                    options(nostack));
            }
            ret as i64
        }
    }
}

/// The firmware's PSCI version (major << 16 | minor).
pub fn version() -> u32 {
    call(PSCI_VERSION, 0, 0, 0) as u32
}

/// Starts the core with affinity `mpidr` at `entry` (physical) with x0 = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), i64> {
    match call(CPU_ON_64, mpidr, entry, context) {
        0 => Ok(()),
        e => Err(e),
    }
}

/// Powers the machine off.
pub fn system_off() -> ! {
    call(SYSTEM_OFF, 0, 0, 0);
    super::halt()
}

static EXITING: AtomicBool = AtomicBool::new(false);

/// Ends the run with `status`. Status 0 is a PSCI SYSTEM_OFF (QEMU exits with 0). Any
/// other status goes through semihosting SYS_EXIT on boards that say QEMU runs them with
/// semihosting on, so the runner sees it; if that traps (semihosting off), the second
/// call lands here again and powers off.
pub fn exit(status: u32) -> ! {
    // ADP_Stopped_ApplicationExit and the status, as the AArch64 SYS_EXIT block.
    let block: [u64; 2] = [0x20026, status as u64];
    let first = !EXITING.swap(true, Ordering::SeqCst);
    if status != 0 && first && crate::ThisBoard::SEMIHOSTING_EXIT {
        // SAFETY: a semihosting call (`hlt #0xf000`, op 0x18 = SYS_EXIT): QEMU exits. If
        // semihosting is off it is an undefined instruction, whose report ends here.
        unsafe {
            core::arch::asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack));
        }
    }
    system_off()
}
