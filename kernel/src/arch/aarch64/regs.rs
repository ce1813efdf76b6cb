//! System-register access. Registers that `aarch64-cpu` lacks (CNTHP_*, ICC_*_EL1 but
//! ICC_CTLR_EL1, TLBI operations) are reached by encoded name through `read!`/`write!`.

/// Reads a system register by name or `s3_x_cx_cx_x` encoding.
macro_rules! sysreg_read {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no memory effects; the register is
        // readable at EL2 (the callers name only such registers).
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Writes a system register by name or encoding.
macro_rules! sysreg_write {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the callers write only EL2-owned control registers with values that
        // keep the kernel's own translation and vectors intact (each call site says why).
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

pub(crate) use {sysreg_read, sysreg_write};

/// Masks IRQs on this core, returning the previous DAIF.
pub fn mask_irqs() -> u64 {
    let daif = sysreg_read!("daif");
    // SAFETY: masking interrupts has no memory effects.
    unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack, preserves_flags)) };
    daif
}

/// Restores a DAIF value saved by [`mask_irqs`].
pub fn restore_irqs(daif: u64) {
    sysreg_write!("daif", daif);
}

/// Unmasks IRQs, waits for one, masks them again (used while the boot core waits).
pub fn wait_for_irq() {
    // SAFETY: IRQs taken here run the kernel IRQ handler, which returns; no memory
    // effects of our own.
    unsafe {
        core::arch::asm!(
            "msr daifclr, #2",
            "wfi",
            "msr daifset, #2",
            options(nomem, nostack)
        )
    };
}

/// Full-system barrier after page-table or TLB changes visible to other cores.
pub fn dsb_ish() {
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
}

/// Instruction synchronisation barrier.
pub fn isb() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Invalidates every stage-1 and stage-2 TLB entry of the VMID currently in VTTBR_EL2,
/// on every core of the inner-shareable domain, and waits for completion.
pub fn tlbi_vmid_all_cores() {
    dsb_ish();
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe { core::arch::asm!("tlbi vmalls12e1is", options(nostack, preserves_flags)) };
    dsb_ish();
    isb();
}

/// Invalidates this core's EL2 TLB entries.
pub fn tlbi_el2_local() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe { core::arch::asm!("tlbi alle2", options(nostack, preserves_flags)) };
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::NSH);
    isb();
}

/// Current counter value (CNTPCT_EL0) and frequency.
pub fn counter() -> (u64, u64) {
    isb();
    (sysreg_read!("cntpct_el0"), sysreg_read!("cntfrq_el0"))
}

/// Microseconds since the counter started.
pub fn uptime_us() -> u64 {
    let (c, f) = counter();
    if f == 0 {
        return 0;
    }
    (c / f) * 1_000_000 + (c % f) * 1_000_000 / f
}
