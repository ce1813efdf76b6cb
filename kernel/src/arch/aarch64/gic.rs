//! The physical interrupt controller: GICv3 (distributor, redistributors, system-register
//! CPU interface). GICv2 boards are described by the board trait and rejected at boot
//! until their driver lands. (Arm IHI 0069, GICv3/v4 architecture specification.)

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

/// Why the GIC could not be brought up.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub enum GicError {
    /// The board has a GICv2; its driver is not written yet.
    Gicv2Unsupported,
    /// No redistributor matches this core's affinity.
    NoRedistributor,
}

/// Distributor set-up (boot core, once): all SPIs disabled and Group 1, affinity routing on.
pub fn init_distributor() -> Result<u32, GicError> {
    let (gicd, _) = bases().ok_or(GicError::Gicv2Unsupported)?;
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
    let (_, gicr) = bases().ok_or(GicError::Gicv2Unsupported)?;
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

/// Acknowledges the highest-priority pending interrupt (ICC_IAR1_EL1).
pub fn ack() -> u32 {
    sysreg_read!("s3_0_c12_c12_0") as u32
}

/// Ends (drops priority and deactivates) an acknowledged interrupt (ICC_EOIR1_EL1).
pub fn eoi(intid: u32) {
    sysreg_write!("s3_0_c12_c12_1", intid as u64);
}

/// Sends SGI `intid` to the core with affinity `mpidr` (ICC_SGI1R_EL1).
pub fn send_sgi(intid: u32, mpidr: u64) {
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
