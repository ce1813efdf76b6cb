//! The kernel's own EL2 stage-1 translation: an identity map in 1 GiB blocks.
//!
//! One level-1 table (TCR_EL2.T0SZ = 25: 39-bit VA, walks start at level 1). Device
//! ranges of the board are Device-nGnRE and execute-never; RAM (from the DTB) is Normal
//! write-back, inner shareable. Everything else is unmapped, so a stray kernel access
//! faults and is reported. Built once by the boot core before any other core starts and
//! never changed afterwards; each core then enables it with the same registers.
//! (Arm ARM D8.3 descriptor formats, D8.2.5 TCR_ELx fields, D19.2 SCTLR_EL2.)

use core::cell::UnsafeCell;
use kcore::addr::PhysRange;
use kcore::board::Board;

use super::regs::{isb, sysreg_write, tlbi_el2_local};

const GIB: u64 = 1 << 30;
/// MAIR_EL2: attr0 Device-nGnRnE, attr1 Device-nGnRE, attr2 Normal WB RA/WA.
const MAIR: u64 = (0x04 << 8) | (0xff << 16);
const ATTR_DEVICE: u64 = 1 << 2;
const ATTR_NORMAL: u64 = 2 << 2;
const BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
/// AP[1] is RES1 in the EL2 regime; AP[2] = 0 → read/write.
const AP_RW_EL2: u64 = 1 << 6;
const XN: u64 = 1 << 54;
/// TCR_EL2: T0SZ = 25, IRGN0/ORGN0 = WB-WA, SH0 = inner, TG0 = 4 KiB, PS = 40 bits,
/// RES1 bits 31 and 23.
const TCR: u64 =
    (1 << 31) | (1 << 23) | (0b010 << 16) | (0b11 << 12) | (0b01 << 10) | (0b01 << 8) | 25;
/// SCTLR_EL2: RES1 bits, M (MMU), C (data cache), SA (stack alignment), I (icache).
const SCTLR: u64 = 0x30c5_0830 | 1 | (1 << 2) | (1 << 3) | (1 << 12);

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; 512]>);
// SAFETY: written only by the boot core before the MMU and other cores use it.
unsafe impl Sync for Table {}

static L1: Table = Table(UnsafeCell::new([0; 512]));

/// Fills the table: board device ranges and the given RAM ranges, 1 GiB granules.
/// Call once, on the boot core, before any core enables the MMU.
pub fn build(ram: &[PhysRange]) {
    // SAFETY: single writer (boot core, before the other cores start); no reader yet.
    let t = unsafe { &mut *L1.0.get() };
    for d in crate::ThisBoard::DEVICE_RANGES {
        let mut a = d.base & !(GIB - 1);
        while a < d.base + d.size && ((a / GIB) as usize) < t.len() {
            t[(a / GIB) as usize] = a | BLOCK | AF | ATTR_DEVICE | AP_RW_EL2 | XN;
            a += GIB;
        }
    }
    for r in ram {
        let mut a = r.start.0 & !(GIB - 1);
        while a < r.end.0 && ((a / GIB) as usize) < t.len() {
            t[(a / GIB) as usize] = a | BLOCK | AF | ATTR_NORMAL | SH_INNER | AP_RW_EL2;
            a += GIB;
        }
    }
}

/// Turns on this core's EL2 MMU and caches with the table from [`build`].
pub fn enable() {
    tlbi_el2_local();
    sysreg_write!("mair_el2", MAIR);
    sysreg_write!("tcr_el2", TCR);
    sysreg_write!("ttbr0_el2", L1.0.get() as u64);
    super::regs::dsb_ish();
    isb();
    // The identity map covers the code running now, so the switch is seamless.
    sysreg_write!("sctlr_el2", SCTLR);
    isb();
}
