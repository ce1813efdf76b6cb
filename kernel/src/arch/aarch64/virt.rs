//! Virtualization registers: a guest's EL1 context, the GICv3 virtual CPU interface, the
//! FP/SIMD registers, and stage-2 TLB maintenance for any VMID.
//!
//! The register lists here are the whole of what a guest can observe of a core at EL1
//! (Arm ARM D1 "The AArch64 system level programmers' model" and, for the GIC, the GICv3
//! architecture specification, IHI 0069, chapter 12 "ICH_* registers").

use super::regs::{isb, sysreg_read, sysreg_write};

/// Number of saved guest system registers (indices are `bulkhead_sys::vcpu_reg`).
pub const EL1_REGS: usize = 26;

/// Saves the guest's EL1 system registers, virtual timer and EL2 view registers
/// (VMPIDR_EL2, CNTVOFF_EL2) into `r`, then stops the virtual timer so that it cannot
/// fire for whoever runs next.
pub fn save_el1(r: &mut [u64; EL1_REGS]) {
    r[0] = sysreg_read!("sctlr_el1");
    r[1] = sysreg_read!("ttbr0_el1");
    r[2] = sysreg_read!("ttbr1_el1");
    r[3] = sysreg_read!("tcr_el1");
    r[4] = sysreg_read!("mair_el1");
    r[5] = sysreg_read!("amair_el1");
    r[6] = sysreg_read!("contextidr_el1");
    r[7] = sysreg_read!("tpidr_el1");
    r[8] = sysreg_read!("tpidrro_el0");
    r[9] = sysreg_read!("vbar_el1");
    r[10] = sysreg_read!("cpacr_el1");
    r[11] = sysreg_read!("cntkctl_el1");
    r[12] = sysreg_read!("sp_el1");
    r[13] = sysreg_read!("elr_el1");
    r[14] = sysreg_read!("spsr_el1");
    r[15] = sysreg_read!("esr_el1");
    r[16] = sysreg_read!("far_el1");
    r[17] = sysreg_read!("afsr0_el1");
    r[18] = sysreg_read!("afsr1_el1");
    r[19] = sysreg_read!("par_el1");
    r[20] = sysreg_read!("tpidr_el0");
    r[21] = sysreg_read!("csselr_el1");
    r[22] = sysreg_read!("cntv_ctl_el0");
    r[23] = sysreg_read!("cntv_cval_el0");
    r[24] = sysreg_read!("vmpidr_el2");
    r[25] = sysreg_read!("cntvoff_el2");
    // The guest's timer must not interrupt the next thread (its state is saved above).
    sysreg_write!("cntv_ctl_el0", 0);
}

/// Loads a guest's EL1 state saved by [`save_el1`] (or written by its VMM).
pub fn restore_el1(r: &[u64; EL1_REGS]) {
    // SCTLR_EL1 and the translation registers only take effect at EL1, which nothing
    // runs at until the eret into this guest: no ordering with EL2 code is needed.
    sysreg_write!("sctlr_el1", r[0]);
    sysreg_write!("ttbr0_el1", r[1]);
    sysreg_write!("ttbr1_el1", r[2]);
    sysreg_write!("tcr_el1", r[3]);
    sysreg_write!("mair_el1", r[4]);
    sysreg_write!("amair_el1", r[5]);
    sysreg_write!("contextidr_el1", r[6]);
    sysreg_write!("tpidr_el1", r[7]);
    sysreg_write!("tpidrro_el0", r[8]);
    sysreg_write!("vbar_el1", r[9]);
    sysreg_write!("cpacr_el1", r[10]);
    sysreg_write!("cntkctl_el1", r[11]);
    sysreg_write!("sp_el1", r[12]);
    sysreg_write!("elr_el1", r[13]);
    sysreg_write!("spsr_el1", r[14]);
    sysreg_write!("esr_el1", r[15]);
    sysreg_write!("far_el1", r[16]);
    sysreg_write!("afsr0_el1", r[17]);
    sysreg_write!("afsr1_el1", r[18]);
    sysreg_write!("par_el1", r[19]);
    sysreg_write!("tpidr_el0", r[20]);
    sysreg_write!("csselr_el1", r[21]);
    sysreg_write!("vmpidr_el2", r[24]);
    sysreg_write!("cntvoff_el2", r[25]);
    sysreg_write!("cntv_cval_el0", r[23]);
    sysreg_write!("cntv_ctl_el0", r[22]);
}

/// Words of saved virtual-CPU-interface state: ICH_HCR_EL2, ICH_VMCR_EL2, ICH_AP0R0_EL2,
/// ICH_AP1R0_EL2, then the list registers.
pub const VGIC_WORDS: usize = 4 + 16;

/// Number of list registers this core implements (ICH_VTR_EL2.ListRegs + 1).
pub fn list_registers() -> usize {
    if super::gic::IS_V2 {
        return 0; // no ICH_* registers: the GICv2 vGIC (GICH MMIO) is not written yet
    }
    (sysreg_read!("s3_4_c12_c11_1") & 0x1f) as usize + 1
}

macro_rules! lr_access {
    ($n:expr, $v:expr, $save:expr) => {
        match $n {
            0 => lr_access!(@ "s3_4_c12_c12_0", $v, $save),
            1 => lr_access!(@ "s3_4_c12_c12_1", $v, $save),
            2 => lr_access!(@ "s3_4_c12_c12_2", $v, $save),
            3 => lr_access!(@ "s3_4_c12_c12_3", $v, $save),
            4 => lr_access!(@ "s3_4_c12_c12_4", $v, $save),
            5 => lr_access!(@ "s3_4_c12_c12_5", $v, $save),
            6 => lr_access!(@ "s3_4_c12_c12_6", $v, $save),
            7 => lr_access!(@ "s3_4_c12_c12_7", $v, $save),
            8 => lr_access!(@ "s3_4_c12_c13_0", $v, $save),
            9 => lr_access!(@ "s3_4_c12_c13_1", $v, $save),
            10 => lr_access!(@ "s3_4_c12_c13_2", $v, $save),
            11 => lr_access!(@ "s3_4_c12_c13_3", $v, $save),
            12 => lr_access!(@ "s3_4_c12_c13_4", $v, $save),
            13 => lr_access!(@ "s3_4_c12_c13_5", $v, $save),
            14 => lr_access!(@ "s3_4_c12_c13_6", $v, $save),
            _ => lr_access!(@ "s3_4_c12_c13_7", $v, $save),
        }
    };
    (@ $name:literal, $v:expr, $save:expr) => {
        if $save {
            *$v = sysreg_read!($name)
        } else {
            sysreg_write!($name, *$v)
        }
    };
}

/// Reads list register `n`.
pub fn read_lr(n: usize) -> u64 {
    let mut v = 0;
    lr_access!(n, &mut v, true);
    v
}

/// Writes list register `n`.
pub fn write_lr(n: usize, mut v: u64) {
    lr_access!(n, &mut v, false);
}

/// Saves the virtual CPU interface of the guest leaving this core and disables it.
pub fn save_vgic(g: &mut [u64; VGIC_WORDS]) {
    if super::gic::IS_V2 {
        return;
    }
    g[0] = sysreg_read!("s3_4_c12_c11_0");
    g[1] = sysreg_read!("s3_4_c12_c11_7");
    g[2] = sysreg_read!("s3_4_c12_c8_0");
    g[3] = sysreg_read!("s3_4_c12_c9_0");
    for n in 0..list_registers().min(16) {
        g[4 + n] = read_lr(n);
        write_lr(n, 0);
    }
    sysreg_write!("s3_4_c12_c11_0", 0);
}

/// Loads a guest's virtual CPU interface; ICH_HCR_EL2.En is forced on.
pub fn restore_vgic(g: &[u64; VGIC_WORDS]) {
    if super::gic::IS_V2 {
        return;
    }
    sysreg_write!("s3_4_c12_c11_7", g[1]);
    sysreg_write!("s3_4_c12_c8_0", g[2]);
    sysreg_write!("s3_4_c12_c9_0", g[3]);
    for n in 0..list_registers().min(16) {
        write_lr(n, g[4 + n]);
    }
    sysreg_write!("s3_4_c12_c11_0", g[0] | 1);
}

/// Empty list registers (ICH_ELRSR_EL2), one bit per register.
pub fn empty_lrs() -> u64 {
    if super::gic::IS_V2 {
        return 0;
    }
    sysreg_read!("s3_4_c12_c11_5")
}

/// Writes HCR_EL2 (the trap and routing controls of the thread about to run).
pub fn set_hcr(v: u64) {
    sysreg_write!("hcr_el2", v);
}

/// MDCR_EL2 trap bits while a guest runs: debug registers (TDA), the OS lock and
/// double-lock registers (TDOSA), debug ROM registers (TDRA) and, except in test builds
/// (whose benchmarks read the cycle counter from the guest), the PMU (TPM, TPMCR). A
/// guest's accesses then reach its VMM as system-register exits.
const MDCR_GUEST_TRAPS: u64 = (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | if cfg!(feature = "test-build") {
        0
    } else {
        (1 << 6) | (1 << 5)
    };

/// Sets MDCR_EL2's guest traps on or off (HPMN and the other fields stay).
pub fn trap_debug(guest: bool) {
    let v = sysreg_read!("mdcr_el2");
    sysreg_write!(
        "mdcr_el2",
        if guest {
            v | MDCR_GUEST_TRAPS
        } else {
            v & !MDCR_GUEST_TRAPS
        }
    );
}

/// The EL1 controls native EL0 threads depend on: FP/SIMD enabled (CPACR_EL1.FPEN), which
/// a guest that ran on this core may have left disabled.
pub fn native_el1() {
    sysreg_write!("cpacr_el1", 3 << 20);
}

/// Writes CNTHCTL_EL2 (EL1 access to the physical counter and timer).
pub fn set_cnthctl(v: u64) {
    sysreg_write!("cnthctl_el2", v);
}

/// Per core: CPTR_EL2.TFP is set (kept here so that the common case costs no system
/// register read). Boot leaves it clear (`entry.S`).
static TFP: [core::sync::atomic::AtomicBool; super::cpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; super::cpu::MAX_CPUS];

/// Sets or clears CPTR_EL2.TFP (trap FP/SIMD use of lower levels to EL2).
pub fn trap_fp(on: bool) {
    use core::sync::atomic::Ordering::Relaxed;
    let c = super::cpu::index();
    if TFP[c].load(Relaxed) == on {
        return;
    }
    let v = sysreg_read!("cptr_el2");
    sysreg_write!("cptr_el2", if on { v | (1 << 10) } else { v & !(1 << 10) });
    isb();
    TFP[c].store(on, Relaxed);
}

extern "C" {
    fn bh_fp_save(area: *mut u64);
    fn bh_fp_restore(area: *const u64);
}

/// Words of FP/SIMD state: q0..q31 (64 words), FPCR, FPSR.
pub const FP_WORDS: usize = 66;

/// Saves this core's FP/SIMD registers (a thread's, loaded lazily) into `area`.
pub fn fp_save(area: &mut [u64; FP_WORDS]) {
    trap_fp(false);
    // SAFETY: `area` is 528 writable, 8-aligned bytes; the routine (entry.S) stores the
    // 32 vector registers, FPCR and FPSR there and touches nothing else.
    unsafe { bh_fp_save(area.as_mut_ptr()) }
}

/// Loads FP/SIMD registers from `area`.
pub fn fp_restore(area: &[u64; FP_WORDS]) {
    trap_fp(false);
    // SAFETY: `area` is 528 readable bytes; the routine only loads registers from it.
    unsafe { bh_fp_restore(area.as_ptr()) }
}

/// Runs `f` with VTTBR_EL2 = `vttbr` (so that TLB maintenance by VMID applies to it),
/// then puts the previous value back. EL2's own translation does not use VTTBR_EL2.
fn with_vttbr<R>(vttbr: u64, f: impl FnOnce() -> R) -> R {
    let old = sysreg_read!("vttbr_el2");
    if old != vttbr {
        sysreg_write!("vttbr_el2", vttbr);
        isb();
    }
    let r = f();
    if old != vttbr {
        sysreg_write!("vttbr_el2", old);
        isb();
    }
    r
}

/// Invalidates the translation of one IPA page of the address space `vttbr` on every
/// core (stage 2 by IPA, then every stage-1 entry of the VMID that may have been built
/// from it) and waits for completion (Arm ARM D8.16, "TLB maintenance": TLBI IPAS2E1IS,
/// DSB ISH, TLBI VMALLE1IS, DSB ISH).
pub fn tlbi_ipa(vttbr: u64, ipa: u64) {
    with_vttbr(vttbr, || {
        // SAFETY: TLB invalidation has no effect on memory; the barriers order it after
        // the preceding descriptor store and make it complete before we go on.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi ipas2e1is, {}",
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                in(reg) ipa >> 12,
                options(nostack, preserves_flags)
            )
        }
    })
}

/// Invalidates every stage-1 and stage-2 entry (walk caches included) of the VMID of
/// `vttbr` on every core and waits for completion.
pub fn tlbi_vmid(vttbr: u64) {
    with_vttbr(vttbr, || {
        // SAFETY: as in `tlbi_ipa`.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            )
        }
    })
}

/// Makes descriptor stores visible to the table walks of all cores (before a new entry
/// is relied on by a guest that is about to run).
pub fn dsb_ishst() {
    // SAFETY: a barrier has no memory effects of its own.
    unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) }
}

/// Masks the virtual timer's interrupt (CNTV_CTL_EL0.IMASK); returns the previous
/// control value.
pub fn vtimer_mask() -> u64 {
    let c = sysreg_read!("cntv_ctl_el0");
    sysreg_write!("cntv_ctl_el0", c | 2);
    c
}
