//! The kernel's own EL2 stage-1 translation: an identity map.
//!
//! One level-1 table (TCR_EL2.T0SZ = 25: 39-bit VA, walks start at level 1) of 1 GiB
//! blocks. Device ranges of the board are Device-nGnRE and execute-never; RAM (from the
//! DTB) is Normal write-back, inner shareable, read/write and execute-never. The GiB that
//! holds the kernel image is split (a level-2 table of 2 MiB blocks, and level-3 tables of
//! pages around the image) so the image is W^X: text read/execute, rodata read-only,
//! data, bss and stacks read/write, nothing else executable. Everything else is unmapped,
//! so a stray kernel access faults and is reported. Built once by the boot core before any other core starts and
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
/// AP[2] = 1 → read-only.
const AP_RO_EL2: u64 = 0b11 << 6;
const TABLE: u64 = 0b11;
const PAGE: u64 = 0b11;
const MIB2: u64 = 2 << 20;
/// Level-3 tables for the image: the 2 MiB regions of the image that hold a section
/// boundary or a stack guard page need one each; regions wholly inside one section are
/// 2 MiB blocks (a large boot payload in rodata costs no tables).
const IMAGE_L3: usize = 8;
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
static L2: Table = Table(UnsafeCell::new([0; 512]));
static L3: [Table; IMAGE_L3] = [const { Table(UnsafeCell::new([0; 512])) }; IMAGE_L3];

extern "C" {
    static __stacks_start: u8;
    static __kernel_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

const NORMAL_RW: u64 = AF | ATTR_NORMAL | SH_INNER | AP_RW_EL2 | XN;

/// Splits the GiB holding the kernel image so the image is mapped W^X.
fn split_kernel_gib(l1: &mut [u64; 512]) {
    let start = core::ptr::addr_of!(__kernel_start) as u64;
    let rodata = core::ptr::addr_of!(__rodata_start) as u64;
    let data = core::ptr::addr_of!(__data_start) as u64;
    let end = core::ptr::addr_of!(__kernel_end) as u64;
    let gib = start & !(GIB - 1);
    assert!(end - gib <= GIB, "kernel image crosses a GiB boundary");
    let first_2m = (start - gib) / MIB2;
    let last_2m = (end - 1 - gib) / MIB2;
    let stacks = core::ptr::addr_of!(__stacks_start) as u64;
    // SAFETY: single writer (boot core, before any core enables the MMU).
    let l2 = unsafe { &mut *L2.0.get() };
    for (j, e) in l2.iter_mut().enumerate() {
        *e = (gib + j as u64 * MIB2) | BLOCK | NORMAL_RW;
    }
    let mut k = 0;
    for j in first_2m..=last_2m {
        let base = gib + j * MIB2;
        let inside = |lo: u64, hi: u64| base >= lo && base + MIB2 <= hi;
        let guard = (0..super::cpu::MAX_CPUS as u64).any(|c| {
            let g = stacks + c * super::cpu::STACK_SIZE;
            g >= base && g < base + MIB2
        });
        if inside(rodata, data) {
            l2[j as usize] = base | BLOCK | AF | ATTR_NORMAL | SH_INNER | AP_RO_EL2 | XN;
            continue;
        }
        if inside(data, end) && !guard {
            continue; // read/write block, as filled above
        }
        assert!(k < IMAGE_L3, "kernel image has too many section boundaries");
        // SAFETY: as above.
        let l3 = unsafe { &mut *L3[k].0.get() };
        for (p, e) in l3.iter_mut().enumerate() {
            let a = base + p as u64 * 4096;
            let attrs = if a >= start && a < rodata {
                AF | ATTR_NORMAL | SH_INNER | AP_RO_EL2 // text: read, execute
            } else if a >= rodata && a < data {
                AF | ATTR_NORMAL | SH_INNER | AP_RO_EL2 | XN // rodata
            } else {
                NORMAL_RW
            };
            *e = a | PAGE | attrs;
        }
        // The guard page below each core's stack stays unmapped: an overflow faults.
        for c in 0..super::cpu::MAX_CPUS as u64 {
            let g = stacks + c * super::cpu::STACK_SIZE;
            if g >= base && g < base + MIB2 {
                l3[((g - base) / 4096) as usize] = 0;
            }
        }
        l2[j as usize] = L3[k].0.get() as u64 | TABLE;
        k += 1;
    }
    l1[(gib / GIB) as usize] = L2.0.get() as u64 | TABLE;
}

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
            t[(a / GIB) as usize] = a | BLOCK | NORMAL_RW;
            a += GIB;
        }
    }
    split_kernel_gib(t);
}

/// Cleans and invalidates the kernel's writable data (data, bss, tables, stacks) to the
/// point of coherency, before other cores start: a core starting with its MMU and caches
/// off reads memory directly (it must see what the boot core wrote through its cache), and
/// writes its first stack frames there (no stale line may then shadow them once its
/// caches are on). Arm ARM D7.4 "Cache maintenance", DC CIVAC by line (CTR_EL0.DminLine).
pub fn clean_for_secondaries() {
    let start = core::ptr::addr_of!(__data_start) as u64;
    let end = core::ptr::addr_of!(__kernel_end) as u64;
    let line = 4u64 << ((super::regs::sysreg_read!("ctr_el0") >> 16) & 0xf);
    let mut a = start & !(line - 1);
    while a < end {
        // SAFETY: cache maintenance of a range of the kernel's own image, which is mapped;
        // it changes no memory contents.
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += line;
    }
    super::regs::dsb_ish();
    // SAFETY: a barrier has no memory effects of its own; full-system, so the cleaned
    // lines have reached memory before any core is started.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
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
