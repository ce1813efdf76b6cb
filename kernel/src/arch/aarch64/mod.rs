//! AArch64 at EL2 (non-VHE): entry, vectors, system registers, MMU, GIC, timer, PSCI.
//!
//! Every `unsafe` block of the kernel lives under this module (and `mem.rs` for the
//! identity-mapped physical memory), each with its `SAFETY:` argument.

pub mod cpu;
pub mod gic;
pub mod mmu;
pub mod psci;
pub mod regs;
pub mod timer;
pub mod uart;
pub mod virt;

core::arch::global_asm!(include_str!("entry.S"));

extern "C" {
    fn bh_resume_user(ctx: *const cpu::UserContext) -> !;
    fn bh_idle(stack_top: u64) -> !;
    /// Secondary cores start here (PSCI CPU_ON entry point).
    pub fn bh_secondary_entry();
    /// Start of the exception vector table.
    pub static bh_vectors: u8;
}

/// Returns to the lower level whose state is `ctx`, and never comes back here.
///
/// The stack is reset, so nothing on it survives.
pub fn resume_user(ctx: &cpu::UserContext) -> ! {
    // SAFETY: `ctx` is a valid, fully initialised context (a reference); the assembly
    // reads it before resetting the stack to this core's top (from TPIDR_EL2, set at
    // boot), and the state it restores is that of a lower EL, so the kernel's own
    // invariants are untouched.
    unsafe { bh_resume_user(ctx) }
}

/// Idles this core until an interrupt says otherwise; never returns.
pub fn idle() -> ! {
    let top = cpu::this().stack_top;
    // SAFETY: resets the stack to this core's own top; nothing on the abandoned stack is
    // referenced again (this function never returns).
    unsafe { bh_idle(top) }
}

/// Stops this core for good with interrupts masked.
pub fn halt() -> ! {
    loop {
        regs::mask_irqs();
        aarch64_cpu::asm::wfe();
    }
}
