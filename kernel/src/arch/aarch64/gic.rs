//! The physical interrupt controller: GICv3 (distributor, redistributors, system-register
//! CPU interface; Arm IHI 0069) or GICv2 (distributor and memory-mapped CPU interface, as
//! the GIC-400 of the ZynqMP; Arm IHI 0048B), as the board says. The choice is a
//! constant of the board, so each kernel build contains one driver's paths only.

use core::ptr::{read_volatile, write_volatile};
use kcore::board::{Board, Gic};

use super::regs::{isb, sysreg_read, sysreg_write};

const GICD_CTLR: usize = 0x0000;
const GICD_TYPER: usize = 0x0004;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ICENABLER: usize = 0x0180;
const GICD_CTLR_RWP: u32 = 1 << 31;
/// ARE | EnableGrp1 | EnableGrp0 (single security state, GICD_CTLR.DS = 1).
const GICD_CTLR_ENABLE: u32 = (1 << 4) | (1 << 1) | 1;

const GICR_STRIDE: u64 = 0x2_0000;
const GICR_TYPER: usize = 0x0008;
const GICR_WAKER: usize = 0x0014;
const GICR_SGI: usize = 0x1_0000;
const GICR_IGROUPR0: usize = GICR_SGI + 0x0080;
const GICR_ISENABLER0: usize = GICR_SGI + 0x0100;
const GICR_ICENABLER0: usize = GICR_SGI + 0x0180;
const GICR_IPRIORITYR: usize = GICR_SGI + 0x0400;

/// INTIDs at and above this are special (spurious etc.).
pub const SPECIAL: u32 = 1020;

fn rd(base: u64, off: usize) -> u32 {
    // SAFETY: a GIC register inside the board's device range, mapped Device-nGnRE.
    unsafe { read_volatile((base as usize + off) as *const u32) }
}
fn wr(base: u64, off: usize, v: u32) {
    // SAFETY: as in `rd`.
    unsafe { write_volatile((base as usize + off) as *mut u32, v) }
}
fn rd64(base: u64, off: usize) -> u64 {
    // SAFETY: as in `rd`; GICR_TYPER is a 64-bit register.
    unsafe { read_volatile((base as usize + off) as *const u64) }
}

fn bases() -> Option<(u64, u64)> {
    match crate::ThisBoard::GIC {
        Gic::V3 { gicd, gicr } => Some((gicd, gicr)),
        Gic::V2 { .. } => None,
    }
}

/// True if the board's interrupt controller is a GICv2 (no ICC_*/ICH_* system registers).
pub const IS_V2: bool = matches!(crate::ThisBoard::GIC, Gic::V2 { .. });

/// Why the GIC could not be brought up.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub enum GicError {
    /// The board's GIC variant does not match the driver path taken (a kernel bug).
    WrongVariant,
    /// No redistributor matches this core's affinity.
    NoRedistributor,
}

/// Distributor set-up (boot core, once). GICv3: all SPIs disabled and Group 1, affinity
/// routing on. GICv2: all SPIs disabled and Group 0 (signalled as IRQ). Returns the
/// number of interrupt lines.
pub fn init_distributor() -> Result<u32, GicError> {
    if IS_V2 {
        return v2::init_distributor();
    }
    let (gicd, _) = bases().ok_or(GicError::WrongVariant)?;
    wr(gicd, GICD_CTLR, 0);
    while rd(gicd, GICD_CTLR) & GICD_CTLR_RWP != 0 {}
    let lines = ((rd(gicd, GICD_TYPER) & 0x1f) + 1) * 32;
    for i in 1..(lines as usize / 32) {
        wr(gicd, GICD_ICENABLER + 4 * i, !0);
        wr(gicd, GICD_IGROUPR + 4 * i, !0);
    }
    wr(gicd, GICD_CTLR, GICD_CTLR_ENABLE);
    while rd(gicd, GICD_CTLR) & GICD_CTLR_RWP != 0 {}
    Ok(lines)
}

fn this_redistributor(gicr: u64) -> Option<u64> {
    let m = sysreg_read!("mpidr_el1");
    let aff = (((m >> 32) & 0xff) << 24) | (m & 0xff_ffff);
    let mut rd_base = gicr;
    for _ in 0..256 {
        let typer = rd64(rd_base, GICR_TYPER);
        if typer >> 32 == aff {
            return Some(rd_base);
        }
        if typer & (1 << 4) != 0 {
            return None; // GICR_TYPER.Last
        }
        rd_base += GICR_STRIDE;
    }
    None
}

/// This core's redistributor and CPU interface; enables the given PPIs/SGIs.
pub fn init_this_cpu(enable: &[u32]) -> Result<(), GicError> {
    if IS_V2 {
        return v2::init_this_cpu(enable);
    }
    let (_, gicr) = bases().ok_or(GicError::WrongVariant)?;
    let r = this_redistributor(gicr).ok_or(GicError::NoRedistributor)?;
    // Wake the redistributor: clear ProcessorSleep, wait for ChildrenAsleep to clear.
    wr(r, GICR_WAKER, rd(r, GICR_WAKER) & !(1 << 1));
    while rd(r, GICR_WAKER) & (1 << 2) != 0 {}
    wr(r, GICR_ICENABLER0, !0);
    wr(r, GICR_IGROUPR0, !0);
    for i in 0..8 {
        wr(r, GICR_IPRIORITYR + 4 * i, 0x8080_8080);
    }
    let mut mask = 0u32;
    for &id in enable {
        if id < 32 {
            mask |= 1 << id;
        }
    }
    wr(r, GICR_ISENABLER0, mask);
    // CPU interface: system registers on (ICC_SRE_EL2.SRE | Enable for lower levels).
    sysreg_write!("s3_4_c12_c9_5", sysreg_read!("s3_4_c12_c9_5") | 0b1001);
    isb();
    sysreg_write!("s3_0_c4_c6_0", 0xf0); // ICC_PMR_EL1: let priorities < 0xf0 through
    sysreg_write!("s3_0_c12_c12_3", 0); // ICC_BPR1_EL1
    sysreg_write!("s3_0_c12_c12_4", 0); // ICC_CTLR_EL1: EOImode 0
    sysreg_write!("s3_0_c12_c12_7", 1); // ICC_IGRPEN1_EL1
    isb();
    Ok(())
}

/// Acknowledges the highest-priority pending interrupt (ICC_IAR1_EL1, GICC_IAR); returns
/// the raw acknowledge value, which [`intid`] turns into the interrupt ID and [`eoi`]
/// takes back.
pub fn ack() -> u32 {
    if IS_V2 {
        return v2::ack();
    }
    sysreg_read!("s3_0_c12_c12_0") as u32
}

/// The interrupt ID in an acknowledge value (GICv2 adds the SGI's source CPU in bits
/// 12:10).
pub fn intid(raw: u32) -> u32 {
    if IS_V2 {
        raw & 0x3ff
    } else {
        raw
    }
}

/// Ends (drops priority and deactivates) an acknowledged interrupt, given the raw value
/// [`ack`] returned (ICC_EOIR1_EL1, GICC_EOIR).
pub fn eoi(raw: u32) {
    if IS_V2 {
        return v2::eoi(raw);
    }
    sysreg_write!("s3_0_c12_c12_1", raw as u64);
}

/// Sends SGI `intid` to the core with affinity `mpidr` (ICC_SGI1R_EL1, GICD_SGIR).
pub fn send_sgi(intid: u32, mpidr: u64) {
    if IS_V2 {
        return v2::send_sgi(intid, mpidr);
    }
    let aff0 = mpidr & 0xf;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    let v = (aff3 << 48) | (aff2 << 32) | ((intid as u64 & 0xf) << 24) | (aff1 << 16) | (1 << aff0);
    super::regs::dsb_ish();
    sysreg_write!("s3_0_c12_c11_5", v);
    isb();
}

const GICD_ISENABLER: usize = 0x0100;
const GICD_IROUTER: usize = 0x6000;

fn wr64(base: u64, off: usize, v: u64) {
    // SAFETY: as in `rd`; GICD_IROUTER<n> is a 64-bit register.
    unsafe { write_volatile((base as usize + off) as *mut u64, v) }
}

/// Enables or disables interrupt `intid`: a PPI on this core's redistributor, an SPI in
/// the distributor (routed to this core).
pub fn set_enabled(intid: u32, on: bool) {
    if IS_V2 {
        return v2::set_enabled(intid, on);
    }
    let Some((gicd, gicr)) = bases() else { return };
    let bit = 1u32 << (intid % 32);
    if intid < 32 {
        let Some(r) = this_redistributor(gicr) else {
            return;
        };
        wr(r, if on { GICR_ISENABLER0 } else { GICR_ICENABLER0 }, bit);
    } else {
        if on {
            let m = sysreg_read!("mpidr_el1");
            let aff = (m & 0xff_ffff) | (((m >> 32) & 0xff) << 32);
            wr64(gicd, GICD_IROUTER + 8 * intid as usize, aff);
        }
        let reg = if on { GICD_ISENABLER } else { GICD_ICENABLER };
        wr(gicd, reg + 4 * (intid as usize / 32), bit);
    }
}

/// The GICv2 driver: distributor and CPU interface, both memory-mapped. Every interrupt
/// is Group 0, signalled as IRQ (GICC_CTLR.FIQEn = 0); without the Security Extensions
/// (QEMU's ZynqMP with secure=off) that is the only group the CPU interface acknowledges
/// with EOImode 0 and AckCtl 0. (Arm IHI 0048B chapter 4.)
mod v2 {
    use super::{
        rd, wr, Gic, GicError, GICD_CTLR, GICD_ICENABLER, GICD_IGROUPR, GICD_ISENABLER, GICD_TYPER,
    };
    use kcore::board::Board;

    const GICD_IPRIORITYR: usize = 0x0400;
    const GICD_ITARGETSR: usize = 0x0800;
    const GICD_SGIR: usize = 0x0f00;
    const GICC_CTLR: usize = 0x0000;
    const GICC_PMR: usize = 0x0004;
    const GICC_BPR: usize = 0x0008;
    const GICC_IAR: usize = 0x000c;
    const GICC_EOIR: usize = 0x0010;
    /// EnableGrp0 | EnableGrp1 (both groups, IRQ; FIQEn and AckCtl clear).
    const GICC_CTLR_ENABLE: u32 = 0b11;
    /// EnableGrp0 | EnableGrp1.
    const GICD_CTLR_ENABLE_V2: u32 = 0b11;

    fn bases() -> (u64, u64) {
        match crate::ThisBoard::GIC {
            Gic::V2 { gicd, gicc, .. } => (gicd, gicc),
            Gic::V3 { .. } => (0, 0),
        }
    }

    fn checked() -> Result<(u64, u64), GicError> {
        match bases() {
            (0, 0) => Err(GicError::WrongVariant),
            b => Ok(b),
        }
    }

    pub fn init_distributor() -> Result<u32, GicError> {
        let (gicd, _) = checked()?;
        wr(gicd, GICD_CTLR, 0);
        let lines = ((rd(gicd, GICD_TYPER) & 0x1f) + 1) * 32;
        for i in 1..(lines as usize / 32) {
            wr(gicd, GICD_ICENABLER + 4 * i, !0);
            wr(gicd, GICD_IGROUPR + 4 * i, 0);
        }
        wr(gicd, GICD_CTLR, GICD_CTLR_ENABLE_V2);
        Ok(lines)
    }

    pub fn init_this_cpu(enable: &[u32]) -> Result<(), GicError> {
        let (gicd, gicc) = checked()?;
        // SGIs and PPIs: banked per CPU in the distributor's first registers.
        wr(gicd, GICD_ICENABLER, !0);
        wr(gicd, GICD_IGROUPR, 0);
        for i in 0..8 {
            wr(gicd, GICD_IPRIORITYR + 4 * i, 0x8080_8080);
        }
        let mut mask = 0u32;
        for &id in enable {
            if id < 32 {
                mask |= 1 << id;
            }
        }
        wr(gicd, GICD_ISENABLER, mask);
        wr(gicc, GICC_PMR, 0xf0);
        wr(gicc, GICC_BPR, 0);
        wr(gicc, GICC_CTLR, GICC_CTLR_ENABLE);
        Ok(())
    }

    pub fn ack() -> u32 {
        rd(bases().1, GICC_IAR)
    }

    pub fn eoi(raw: u32) {
        wr(bases().1, GICC_EOIR, raw);
    }

    /// CPU interface number of the core with affinity `mpidr`: its Aff0 (one cluster).
    fn target_bit(mpidr: u64) -> u32 {
        1 << (mpidr & 0x7)
    }

    pub fn send_sgi(intid: u32, mpidr: u64) {
        let gicd = bases().0;
        crate::arch::regs::dsb_ish();
        // TargetListFilter 0 (the list), CPUTargetList, NSATT 0, SGIINTID.
        wr(gicd, GICD_SGIR, (target_bit(mpidr) << 16) | (intid & 0xf));
    }

    pub fn set_enabled(intid: u32, on: bool) {
        let gicd = bases().0;
        let bit = 1u32 << (intid % 32);
        if intid >= 32 && on {
            // Route the SPI to this core: GICD_ITARGETSR0 reads as this CPU's own bit.
            let me = rd(gicd, GICD_ITARGETSR) & 0xff;
            let reg = GICD_ITARGETSR + (intid as usize & !3);
            let shift = 8 * (intid % 4);
            let v = (rd(gicd, reg) & !(0xff << shift)) | (me << shift);
            wr(gicd, reg, v);
        }
        let reg = if on { GICD_ISENABLER } else { GICD_ICENABLER };
        wr(gicd, reg + 4 * (intid as usize / 32), bit);
    }
}
