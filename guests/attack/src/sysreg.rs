//! Attack 5: system-register accesses a guest must not get to act on.
//!
//! - Data-cache maintenance by set/way (DC ISW, CSW, CISW) acts on caches every VM
//!   shares: the kernel traps it (HCR_EL2.TSW) and the VMM treats it as done. Checked:
//!   no exception reaches the guest.
//! - Debug registers (MDCR_EL2.TDA), the OS lock (TDOSA), the debug ROM address (TDRA)
//!   and, outside test builds, the PMU (TPM, TPMCR) and ACTLR_EL1 (HCR_EL2.TACR) trap to
//!   the VMM, which makes them read as zero and ignore writes. Checked: what was written
//!   does not read back, and the cycle counter does not count.
//! - The EL1 physical timer (CNTHCTL_EL2.EL1PCEN clear): RAZ/WI in the VMM; the physical
//!   counter stays readable (EL1PCTEN).
//! - EL2 registers and instructions at EL1 (CNTVOFF_EL2, HCR_EL2, VTTBR_EL2, ESR_EL2,
//!   VBAR_EL2, ICH_LR0_EL2, TLBI ALLE2) are UNDEFINED (Arm ARM D1.4: without
//!   HCR_EL2.NV they do not exist below EL2): an exception with EC 0x00 taken to EL1,
//!   and the virtual counter's offset stays what it was.
//! - An exception return from EL1 to EL2 is illegal (Arm ARM D1.11.5): the PE stays at
//!   EL1 and takes an Illegal Execution state exception (EC 0x0e).

use crate::arch::{self, sysreg, sysreg_write, trapped, Fault};
use crate::console::verdict;

/// Names for a line, `a, b`, or `none`.
struct Names<'a>(&'a [&'a str]);

impl core::fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

fn no_exception(f: impl FnOnce()) -> bool {
    trapped(f).is_none()
}

fn undefined(f: Option<Fault>) -> bool {
    matches!(f, Some(f) if f.ec() == 0)
}

/// Runs attack 5.
pub fn run() {
    let mut ok = true;
    for sw in [0u64, 0x8000_0002, 0xffff_fffe] {
        ok &= no_exception(|| {
            // SAFETY: set/way maintenance is trapped to the hypervisor (HCR_EL2.TSW),
            // which treats it as done; even if executed it only cleans or invalidates
            // lines of a cache level, and this program's memory is all Device-typed
            // (its MMU is off), so no dirty line of ours can be lost.
            unsafe {
                core::arch::asm!("dc isw, {0}", "dc csw, {0}", "dc cisw, {0}", in(reg) sw,
                    options(nostack))
            }
        });
    }
    verdict(
        "set-way",
        ok,
        format_args!("DC ISW, CSW, CISW with 3 set/way values: completed, no exception"),
        "no exception (trapped by HCR_EL2.TSW and treated as done)",
    );

    // Debug: write values that would stick on hardware, read them back.
    let checks: [(&str, &dyn Fn() -> u64); 8] = [
        ("MDSCR_EL1", &|| {
            sysreg_write!("mdscr_el1", (1 << 15) | (1 << 13));
            sysreg!("mdscr_el1")
        }),
        ("DBGBVR0/BCR0_EL1", &|| {
            sysreg_write!("dbgbvr0_el1", 0x4000_0000);
            sysreg_write!("dbgbcr0_el1", 0x1e7);
            sysreg!("dbgbvr0_el1") | sysreg!("dbgbcr0_el1")
        }),
        ("DBGWVR0/WCR0_EL1", &|| {
            sysreg_write!("dbgwvr0_el1", 0x4000_0000);
            sysreg_write!("dbgwcr0_el1", 0x1ff7);
            sysreg!("dbgwvr0_el1") | sysreg!("dbgwcr0_el1")
        }),
        ("OSLAR/OSLSR_EL1", &|| {
            sysreg_write!("oslar_el1", 1);
            // OSLM (bits 3 and 0) describes the lock's model, OSLK (bit 1) its state.
            sysreg!("oslsr_el1") & !0b1001
        }),
        ("OSDLR_EL1", &|| {
            sysreg_write!("osdlr_el1", 1);
            sysreg!("osdlr_el1")
        }),
        ("MDRAR_EL1", &|| sysreg!("mdrar_el1")),
        ("DBGCLAIMSET/CLR_EL1", &|| {
            sysreg_write!("dbgclaimset_el1", 0xff);
            sysreg!("dbgclaimclr_el1")
        }),
        ("MDCCINT_EL1", &|| {
            sysreg_write!("mdccint_el1", 1 << 30);
            sysreg!("mdccint_el1")
        }),
    ];
    // Each must read as zero (the VMM's RAZ/WI) or be UNDEFINED (a register the CPU
    // model lacks: QEMU's cortex-a57 has no claim-tag registers); a value that sticks
    // means the guest reached the hardware's debug logic.
    let (mut raz, mut sticks) = (0, 0);
    let mut undef: [&str; 8] = [""; 8];
    let mut n_undef = 0;
    for (name, f) in checks {
        let before = arch::exceptions();
        let v = f();
        if arch::exceptions() == before {
            if v == 0 {
                raz += 1;
            } else {
                sticks += 1;
            }
        } else if arch::last().ec() == 0 {
            undef[n_undef] = name;
            n_undef += 1;
        } else {
            sticks += 1;
        }
    }
    verdict(
        "debug-regs",
        sticks == 0 && raz >= 6,
        format_args!(
            "{} debug/OS-lock registers written and read: {} read as zero, {} UNDEFINED ({}), {} kept a value",
            checks.len(),
            raz,
            n_undef,
            Names(&undef[..n_undef]),
            sticks
        ),
        "trapped to the VMM (reads as zero, writes ignored) or UNDEFINED",
    );

    // PMU: enable the cycle counter and watch it.
    let mut pmu_faults = 0;
    let before = arch::exceptions();
    let pmcr = sysreg!("pmcr_el0");
    sysreg_write!("pmcr_el0", 1); // E
    sysreg_write!("pmcntenset_el0", 1 << 31);
    sysreg_write!("pmuserenr_el0", 0xf);
    let c0 = sysreg!("pmccntr_el0");
    for _ in 0..1000 {
        core::hint::spin_loop();
    }
    let c1 = sysreg!("pmccntr_el0");
    pmu_faults += arch::exceptions() - before;
    sysreg_write!("pmcr_el0", 0);
    verdict(
        "pmu",
        pmcr == 0 && c0 == 0 && c1 == 0 && pmu_faults == 0,
        format_args!(
            "PMCR_EL0 {:#x}; cycle counter {} then {} after enabling it; {} exceptions",
            pmcr, c0, c1, pmu_faults
        ),
        "trapped to the VMM: reads as zero (no counters), writes ignored",
    );

    let before = arch::exceptions();
    sysreg_write!("actlr_el1", u64::MAX);
    let actlr = sysreg!("actlr_el1");
    let f = arch::exceptions() - before;
    verdict(
        "actlr",
        actlr == 0 && f == 0,
        format_args!("ACTLR_EL1 <- all ones reads {:#x}; {} exceptions", actlr, f),
        "trapped by HCR_EL2.TACR: RAZ/WI",
    );

    let before = arch::exceptions();
    sysreg_write!("cntp_cval_el0", 0);
    sysreg_write!("cntp_ctl_el0", 1);
    let ctl = sysreg!("cntp_ctl_el0");
    let p0 = sysreg!("cntpct_el0");
    let p1 = sysreg!("cntpct_el0");
    let f = arch::exceptions() - before;
    sysreg_write!("cntp_ctl_el0", 0);
    verdict(
        "phys-timer",
        ctl == 0 && p1 >= p0 && p0 != 0 && f == 0,
        format_args!(
            "CNTP_CTL_EL0 <- enabled, expired reads {:#x}; CNTPCT_EL0 reads {:#x}; {} exceptions",
            ctl, p0, f
        ),
        "the physical timer RAZ/WI (trapped), its counter readable",
    );

    // EL2 state from EL1.
    let offset = |_: ()| sysreg!("cntvct_el0").wrapping_sub(sysreg!("cntpct_el0")) as i64;
    let off0 = offset(());
    let attempts = [
        trapped(|| sysreg_write!("cntvoff_el2", 0x1234_5678_9abc)),
        trapped(|| {
            sysreg!("cntvoff_el2");
        }),
        trapped(|| {
            sysreg!("hcr_el2");
        }),
        trapped(|| sysreg_write!("hcr_el2", 0)),
        trapped(|| {
            sysreg!("vttbr_el2");
        }),
        trapped(|| sysreg_write!("vttbr_el2", 0)),
        trapped(|| {
            sysreg!("esr_el2");
        }),
        trapped(|| sysreg_write!("vbar_el2", 0)),
        trapped(|| {
            sysreg!("s3_4_c12_c12_0");
        }),
        trapped(|| sysreg_write!("s3_4_c12_c12_0", (1 << 62) | 27)),
        trapped(|| {
            // SAFETY: an EL2 TLB maintenance instruction: UNDEFINED at EL1 (taken to
            // our vector table); it has no memory effects either way.
            unsafe { core::arch::asm!("tlbi alle2", options(nostack)) }
        }),
    ];
    let off1 = offset(());
    let undef = attempts.iter().filter(|f| undefined(**f)).count();
    // The two counters are read one after the other: allow for the time between.
    let drift = (off1 - off0).unsigned_abs();
    verdict(
        "el2-regs",
        undef == attempts.len() && drift < arch::ticks_us(100_000),
        format_args!(
            "{} EL2 accesses (CNTVOFF_EL2 write and read, HCR/VTTBR/ESR/VBAR_EL2, ICH_LR0_EL2, TLBI ALLE2): {} UNDEFINED; virtual counter offset unchanged",
            attempts.len(),
            undef
        ),
        "each UNDEFINED at EL1 (EC 0x00)",
    );

    let e = trapped(arch::eret_to_el2);
    verdict(
        "eret-el2",
        matches!(e, Some(f) if f.ec() == 0x0e),
        format_args!("ERET to EL2h from EL1: ESR {:#x}", e.map_or(0, |f| f.esr)),
        "an illegal exception return: Illegal Execution state exception (EC 0x0e) at EL1",
    );
}
