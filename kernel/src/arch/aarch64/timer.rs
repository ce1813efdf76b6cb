//! The EL2 physical timer (CNTHP), the kernel's tick on every core.

use super::regs::{isb, sysreg_read, sysreg_write};

/// Ticks per second.
pub const HZ: u64 = 100;

/// Arms the timer for the next tick (CNTHP_TVAL_EL2) and enables it (CNTHP_CTL_EL2).
pub fn arm_next() {
    let freq = sysreg_read!("cntfrq_el0");
    sysreg_write!("s3_4_c14_c2_0", freq / HZ);
    sysreg_write!("s3_4_c14_c2_1", 1); // ENABLE, not masked
    isb();
}

/// Starts ticking on this core.
pub fn start() {
    arm_next();
}
