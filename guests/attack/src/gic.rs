//! Attacks 2 and 3: the VMM's GICv3 distributor and redistributors (GICv3 architecture
//! specification, IHI 0069, chapter 12) fed writes aimed at things the VM does not have,
//! and SGI floods through ICC_SGI1R_EL1 (trapped to the VMM, which injects the SGI into
//! the target vCPUs).
//!
//! What the VMM does, and so what is checked: registers of interrupts beyond the
//! implemented range (GICD_TYPER.ITLinesNumber) read as zero and ignore writes (RAZ/WI,
//! as the specification makes them); GICD_IROUTER<n> of an implemented SPI keeps any
//! affinity, an implemented PE or not (the register is read/write; an interrupt routed
//! to no PE is simply not forwarded); GICD_CTLR keeps only its implemented bits; the
//! redistributor frames exist only for the VM's vCPUs, and an access past the last
//! (whose GICR_TYPER.Last is set) is an external abort like any other address with no
//! device; an access without an instruction syndrome (a store pair) cannot be emulated
//! and is an external abort.

use crate::arch::{self, trapped};
use crate::console::verdict;
use bulkhead_sys::vm_layout::{GICD, GICR};

const CTLR: u64 = 0x0000;
const TYPER: u64 = 0x0004;
const IGROUPR: u64 = 0x0080;
const ISENABLER: u64 = 0x0100;
const ISPENDR: u64 = 0x0200;
const IPRIORITYR: u64 = 0x0400;
const ICFGR: u64 = 0x0c00;
const SGIR: u64 = 0x0f00;
const IROUTER: u64 = 0x6000;
/// Redistributor frame stride and registers (RD_base, then SGI_base at + 64 KiB).
const RD_STRIDE: u64 = 0x2_0000;
const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const GICR_ISENABLER0: u64 = 0x1_0100;

/// The SGI the attacks send themselves.
pub const SGI_SELF: u64 = 3;
/// The virtual timer's interrupt.
pub const VTIMER: u64 = 27;

fn d32(off: u64) -> u32 {
    arch::read32(GICD + off)
}

fn w32(off: u64, v: u32) {
    arch::write32(GICD + off, v)
}

/// Acknowledges and ends every interrupt pending for this vCPU, giving the VMM and the
/// kernel a chance (an exit) to hand over queued ones between rounds; returns how often
/// `intid` was acknowledged and how many other interrupts were.
pub fn drain(intid: u64) -> (u64, u64) {
    let (mut mine, mut others) = (0, 0);
    let mut quiet = 0;
    while quiet < 2 {
        let mut got = false;
        loop {
            let i = arch::ack();
            if i >= 1020 {
                break;
            }
            arch::eoi(i);
            got = true;
            if i == intid {
                mine += 1;
            } else {
                others += 1;
            }
        }
        quiet = if got { 0 } else { quiet + 1 };
        // An exit: the kernel moves queued interrupts into list registers on the way back.
        arch::hvc(crate::psci::VERSION, 0, 0, 0);
    }
    (mine, others)
}

/// An ICC_SGI1R_EL1 value: SGI `intid` to Aff3.Aff2.Aff1.<target list>.
pub fn sgi1r(intid: u64, aff3: u64, aff2: u64, aff1: u64, targets: u64) -> u64 {
    (aff3 << 48) | (aff2 << 32) | (intid << 24) | (aff1 << 16) | targets
}

/// Waits (WFI) until `intid` is pending, up to `us` microseconds; true if it came.
pub fn wait_for(intid: u64, us: u64) -> bool {
    let t0 = arch::now();
    while arch::micros_since(t0) < us {
        let i = arch::ack();
        if i < 1020 {
            arch::eoi(i);
            if i == intid {
                return true;
            }
        }
        arch::wfi();
    }
    false
}

/// Attack 2: invalid distributor and redistributor accesses.
pub fn run(vcpus: u64) {
    let lines = 32 * ((d32(TYPER) as u64 & 0x1f) + 1);

    // Every register of INTIDs `lines`..1019: written all-ones, read back.
    let mut writes = 0u64;
    let mut nonzero = 0u64;
    let mut faults = 0u64;
    let mut hit = |off: u64| {
        if trapped(|| w32(off, u32::MAX)).is_some() {
            faults += 1;
        }
        writes += 1;
        if d32(off) != 0 {
            nonzero += 1;
        }
    };
    for n in lines / 32..32 {
        hit(IGROUPR + 4 * n);
        hit(ISENABLER + 4 * n);
        hit(ISPENDR + 4 * n);
    }
    for n in (lines / 4)..255 {
        hit(IPRIORITYR + 4 * n);
    }
    for n in (lines / 16)..64 {
        hit(ICFGR + 4 * n);
    }
    // SGIs and PPIs are the redistributors' (GICD_ISENABLER0 is RAZ/WI with ARE set).
    hit(ISENABLER);
    verdict(
        "gic-spi-range",
        lines >= 64 && nonzero == 0 && faults == 0,
        format_args!(
            "GICD_TYPER says {} lines; {} writes to registers of INTIDs {}..1019 read back 0, no abort",
            lines, writes, lines
        ),
        "RAZ/WI for interrupts beyond ITLinesNumber",
    );

    // IROUTER: an implemented SPI routed to a vCPU that does not exist keeps the value;
    // IROUTER of an SPI beyond the range and of SGIs/PPIs (reserved) are RAZ/WI.
    let spi = 33u64;
    let nobody = 7u64; // Aff0 7: this VM has fewer vCPUs
    arch::write64(GICD + IROUTER + 8 * spi, nobody);
    let kept = arch::read64(GICD + IROUTER + 8 * spi);
    let far_spi = 1000u64;
    arch::write64(GICD + IROUTER + 8 * far_spi, nobody);
    arch::write64(GICD + IROUTER, nobody);
    let beyond = arch::read64(GICD + IROUTER + 8 * far_spi) | arch::read64(GICD + IROUTER);
    arch::write64(GICD + IROUTER + 8 * spi, 0);
    verdict(
        "gic-irouter",
        kept == nobody && beyond == 0,
        format_args!(
            "IROUTER({}) <- Aff0 {} (no such vCPU) reads back {:#x}; IROUTER({}) and IROUTER(0) read {:#x}",
            spi, nobody, kept, far_spi, beyond
        ),
        "the affinity kept (not forwarded) and RAZ/WI beyond the SPIs",
    );

    // GICD_CTLR garbage: only EnableGrp0/1 and ARE_NS stick, DS reads as one, RWP clear.
    w32(CTLR, u32::MAX);
    let ctlr = d32(CTLR);
    w32(CTLR, 0x12);
    let after = d32(CTLR);
    verdict(
        "gic-ctlr",
        ctlr & !0x53 == 0 && ctlr & (1 << 31) == 0 && after == 0x52,
        format_args!(
            "GICD_CTLR <- 0xffffffff reads {:#x}; <- 0x12 reads {:#x}",
            ctlr, after
        ),
        "only the implemented bits (0x53 at most), RWP clear",
    );

    // GICD_SGIR is a GICv2 register: RAZ/WI with affinity routing; no SGI may come of it.
    w32(SGIR, (2 << 24) | SGI_SELF as u32);
    let sgir = d32(SGIR);
    let (got, others) = drain(SGI_SELF);
    verdict(
        "gic-sgir",
        sgir == 0 && got == 0 && others == 0,
        format_args!(
            "GICD_SGIR write (a GICv2 SGI to itself) reads {:#x}; {} SGIs arrived",
            sgir,
            got + others
        ),
        "RAZ/WI and no SGI",
    );

    // Redistributor frames of vCPUs this VM does not have.
    let mut aborts = 0;
    let mut tries = 0;
    for cpu in [vcpus, vcpus + 1, 7] {
        let rd = GICR + cpu * RD_STRIDE;
        for f in [
            trapped(|| {
                arch::read64(rd + GICR_TYPER);
            }),
            trapped(|| arch::write32(rd + GICR_WAKER, 0)),
            trapped(|| arch::write32(rd + GICR_ISENABLER0, u32::MAX)),
        ] {
            tries += 1;
            if let Some(f) = f {
                if f.is_sea(0x25) {
                    aborts += 1;
                }
            }
        }
    }
    let last = arch::read64(GICR + (vcpus - 1) * RD_STRIDE + GICR_TYPER);
    verdict(
        "gic-redist",
        aborts == tries && last & (1 << 4) != 0,
        format_args!(
            "{} accesses to redistributor frames of vCPUs {}, {}, 7: {} external aborts; vCPU {}'s GICR_TYPER {:#x} has Last",
            tries,
            vcpus,
            vcpus + 1,
            aborts,
            vcpus - 1,
            last
        ),
        "an external abort for each (no device there), Last set on the final frame",
    );

    // A store pair to the distributor: no syndrome, no emulation.
    let p = trapped(|| arch::store_pair32(GICD + ISENABLER + 4, u32::MAX));
    verdict(
        "gic-no-syndrome",
        matches!(p, Some(f) if f.is_sea(0x25)),
        format_args!(
            "stp to GICD_ISENABLER1: external abort (ESR {:#x})",
            p.map_or(0, |f| f.esr)
        ),
        "a synchronous external abort (EC 0x25, DFSC 0x10)",
    );

    // Still served: an SGI to itself and its virtual timer arrive.
    arch::sgi1r(sgi1r(SGI_SELF, 0, 0, 0, 1 << arch::cpu()));
    let sgi = wait_for(SGI_SELF, 100_000);
    arch::timer_in(arch::ticks_us(1000));
    let timer = wait_for(VTIMER, 1_000_000);
    arch::timer_off();
    verdict(
        "gic-still-works",
        sgi && timer,
        format_args!(
            "afterwards SGI {} to itself {}, its virtual timer (INTID {}) {}",
            SGI_SELF,
            if sgi { "arrived" } else { "did not arrive" },
            VTIMER,
            if timer { "fired" } else { "did not fire" }
        ),
        "both delivered",
    );
}

/// How many SGIs each flood sends.
pub const FLOOD: u64 = 5000;

/// Attack 3: SGI floods, to itself and to vCPUs that do not exist.
pub fn flood(vcpus: u64) {
    let me = arch::cpu() as u64;
    let t0 = arch::now();
    for _ in 0..FLOOD {
        arch::sgi1r(sgi1r(SGI_SELF, 0, 0, 0, 1 << me));
    }
    let us = arch::micros_since(t0);
    let (got, others) = drain(SGI_SELF);
    verdict(
        "sgi-flood-self",
        got >= 1 && others == 0,
        format_args!(
            "{} SGIs to itself in {} ms, all trapped and answered; SGI {} acknowledged {} times",
            FLOOD,
            us / 1000,
            SGI_SELF,
            got
        ),
        "the SGI delivered (at least once) and nothing else",
    );
    verdict(
        "sgi-coalesce",
        got == 1,
        format_args!(
            "SGI {} acknowledged {} time(s) after {} sent while it was pending",
            SGI_SELF, got, FLOOD
        ),
        "once: an edge that is already pending stays one pending interrupt",
    );

    // Targets outside the VM: list bits of missing vCPUs, other Aff1/Aff2/Aff3 clusters.
    let targets = [
        sgi1r(SGI_SELF, 0, 0, 0, 1 << vcpus),
        sgi1r(SGI_SELF, 0, 0, 0, 1 << 15),
        sgi1r(SGI_SELF, 0, 0, 1, 1 << me),
        sgi1r(SGI_SELF, 0, 1, 0, 1 << me),
        sgi1r(SGI_SELF, 1, 0, 0, 1 << me),
    ];
    let t0 = arch::now();
    for i in 0..FLOOD {
        arch::sgi1r(targets[(i % targets.len() as u64) as usize]);
    }
    let us = arch::micros_since(t0);
    let (got, others) = drain(SGI_SELF);
    verdict(
        "sgi-flood-absent",
        got == 0 && others == 0,
        format_args!(
            "{} SGIs to vCPUs {} and 15 and to Aff1/Aff2/Aff3 = 1 in {} ms: {} reached this vCPU",
            FLOOD,
            vcpus,
            us / 1000,
            got + others
        ),
        "every one dropped",
    );
}
