//! Stage-2 translation tables: descriptor format and a lock-free walker.
//!
//! Format: VMSAv8-64 stage-2, 4 KiB granule (Arm ARM D8.3 "Translation table descriptor
//! formats"), a 40-bit IPA space starting at level 1 with two concatenated level-1 tables
//! (VTCR_EL2.T0SZ = 24, SL0 = 1), so the root is 8 KiB and has 1024 entries. Leaves are
//! 1 GiB blocks (level 1), 2 MiB blocks (level 2) or 4 KiB pages (level 3).
//!
//! What exists (`docs/design/stage2.md` states the protocol in full):
//!
//! - Descriptors: [`table_desc`], [`leaf_desc`], [`decode`], [`index`], [`span`].
//! - Installs (rule 2), for faults and VMM maps: [`map_leaf`] (any level) and [`map_page`].
//!   A missing table or a leaf is installed by one `compare_exchange(0 → new, AcqRel)`
//!   into a zero entry, after the table was zeroed, so a walker that loads the descriptor
//!   with Acquire also sees the zeroes; the loser of a race hands its table back and
//!   continues with the winner's. No TLB maintenance: an invalid entry is never cached by
//!   the MMU (Arm ARM D8.16, "Translation Lookaside Buffers").
//! - Break-before-make (rules 3 to 6), with TLB maintenance and table retirement through
//!   the caller's [`Maintenance`]: [`unmap_page`], [`unmap_range`] / [`unmap_range_with`]
//!   (pages and blocks, skipping empty subtrees), [`collapse`] / [`collapse_with`] (a
//!   subtree or nothing becomes a block; the subtree is locked entry by entry and retired),
//!   [`split`] (a block becomes a table of smaller leaves), and [`teardown_live`] (a tree
//!   other cores may still walk). The changed entry is broken by
//!   `compare_exchange(old → LOCKED, AcqRel)`, the translation invalidated on every core,
//!   and the new value made with `store(new, Release)`. A writer that meets a LOCKED entry
//!   returns a `Locked` error (retry later; a fault handler returns to the guest), except
//!   that the subtree locking of a collapse or live teardown waits for a writer caught
//!   inside the subtree to finish (it never blocks, so the wait is bounded).
//! - Reads: [`translate`] (Acquire loads, never writes).
//! - [`teardown`]: the whole tree at once, for an address space no core can walk.
//!
//! Unlinked tables are never freed here: [`Maintenance::retire`] hands them to QSBR
//! ([`crate::qsbr`]), because walkers that loaded the old descriptor may still read them.
//!
//! Table memory is reached through [`TableMem`], so the same code runs on the kernel's
//! identity map, on host test memory, and in loom models (`loom_tests`, `loom_bbm_tests`;
//! under `--cfg loom` whole-table scans visit only the first two entries of each table, so
//! that every interleaving can be explored).

use crate::addr::{Ipa, PhysAddr, PAGE_SIZE};
#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

/// Entries per 4 KiB table.
pub const ENTRIES: usize = 512;
/// Entries in the concatenated level-1 root (two tables).
pub const ROOT_ENTRIES: usize = 1024;
/// Size of the root in bytes (and its alignment).
pub const ROOT_SIZE: u64 = 2 * PAGE_SIZE;
/// Bits of IPA the tables translate.
pub const IPA_BITS: u32 = 40;
/// Level the walk starts at.
pub const START_LEVEL: u32 = 1;
/// VTCR_EL2 for this format: T0SZ = 24, SL0 = 1 (level 1), IRGN0/ORGN0 = write-back
/// write-allocate, SH0 = inner shareable, TG0 = 4 KiB, PS = 40 bits, RES1 bit 31.
pub const VTCR: u64 =
    (1 << 31) | (0b010 << 16) | (0b11 << 12) | (0b01 << 10) | (0b01 << 8) | (0b01 << 6) | 24;

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
const S2AP_SHIFT: u32 = 6;
const MEMATTR_SHIFT: u32 = 2;
const XN: u64 = 1 << 54;
/// Software bit of an invalid entry: a writer owns it between break and make.
pub const LOCKED: u64 = 1 << 55;
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Memory type of a mapping (stage-2 MemAttr, Arm ARM D8.5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal, inner and outer write-back cacheable (MemAttr 0b1111).
    Normal,
    /// Device-nGnRE (MemAttr 0b0001).
    Device,
}

/// Access rights of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl Perms {
    /// Read and execute.
    pub const RX: Perms = Perms {
        read: true,
        write: false,
        exec: true,
    };
    /// Read only.
    pub const R: Perms = Perms {
        read: true,
        write: false,
        exec: false,
    };
    /// Read and write.
    pub const RW: Perms = Perms {
        read: true,
        write: true,
        exec: false,
    };
}

/// A decoded descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    /// Nothing mapped.
    Invalid,
    /// Invalid and owned by a writer between break and make: walkers back off.
    Locked,
    /// Next-level table.
    Table(PhysAddr),
    /// Page (level 3) or block (levels 1, 2).
    Leaf {
        /// Output address.
        pa: PhysAddr,
        /// Rights.
        perms: Perms,
        /// Memory type.
        mem: MemType,
    },
}

/// Encodes a table descriptor.
pub const fn table_desc(pa: PhysAddr) -> u64 {
    (pa.0 & OA_MASK) | TABLE_OR_PAGE | VALID
}

/// Encodes a leaf descriptor at `level` (3 = page, 1 or 2 = block).
pub const fn leaf_desc(level: u32, pa: PhysAddr, perms: Perms, mem: MemType) -> u64 {
    let ap = (perms.read as u64) | ((perms.write as u64) << 1);
    let attr = match mem {
        MemType::Normal => 0b1111,
        MemType::Device => 0b0001,
    };
    let kind = if level == 3 { TABLE_OR_PAGE } else { 0 };
    let xn = if perms.exec { 0 } else { XN };
    (pa.0 & OA_MASK)
        | kind
        | VALID
        | AF
        | SH_INNER
        | (ap << S2AP_SHIFT)
        | (attr << MEMATTR_SHIFT)
        | xn
}

/// Decodes a descriptor found at `level`.
pub const fn decode(level: u32, d: u64) -> Desc {
    if d & VALID == 0 {
        return if d & LOCKED != 0 {
            Desc::Locked
        } else {
            Desc::Invalid
        };
    }
    let is_table_bit = d & TABLE_OR_PAGE != 0;
    if level < 3 && is_table_bit {
        return Desc::Table(PhysAddr(d & OA_MASK));
    }
    if level == 3 && !is_table_bit {
        return Desc::Invalid; // reserved encoding at level 3
    }
    let ap = (d >> S2AP_SHIFT) & 3;
    let mem = if (d >> MEMATTR_SHIFT) & 0xf == 0b1111 {
        MemType::Normal
    } else {
        MemType::Device
    };
    Desc::Leaf {
        pa: PhysAddr(d & OA_MASK),
        perms: Perms {
            read: ap & 1 != 0,
            write: ap & 2 != 0,
            exec: d & XN == 0,
        },
        mem,
    }
}

/// Index of `ipa` in the table at `level`.
pub const fn index(level: u32, ipa: Ipa) -> usize {
    let shift = 12 + 9 * (3 - level);
    let mask = if level == START_LEVEL {
        ROOT_ENTRIES - 1
    } else {
        ENTRIES - 1
    };
    ((ipa.0 >> shift) as usize) & mask
}

/// Access to table memory.
pub trait TableMem {
    /// The entry `index` of the table at `table`. `index` may reach into the second page
    /// of a concatenated root.
    fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64;
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MapError {
    /// The IPA is beyond the translated range or not page aligned.
    BadIpa,
    /// Something is already mapped there.
    AlreadyMapped,
    /// A block mapping covers the address.
    BlockInTheWay,
    /// No memory for a table.
    NoMemory,
    /// An entry on the way is locked by another writer: retry later (a fault handler
    /// returns to the guest, which faults again).
    Locked,
}

/// Why an unmap failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UnmapError {
    /// The IPA is beyond the translated range or not page aligned.
    BadIpa,
    /// Nothing is mapped there.
    NotMapped,
    /// A block mapping covers the address.
    BlockInTheWay,
    /// Another writer holds an entry on the way.
    Locked,
}

/// Where new tables come from.
pub trait TableAlloc {
    /// A zeroed table page, or `None` when out of memory.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Takes back a table that lost an install race (never linked anywhere).
    fn free_table(&mut self, table: PhysAddr);
}

/// Bytes one entry at `level` maps: 1 GiB at level 1, 2 MiB at level 2, 4 KiB at level 3.
pub const fn span(level: u32) -> u64 {
    1 << (12 + 9 * (3 - level))
}

/// Entries of a table at `level`: the concatenated root has two pages' worth.
pub const fn entries(level: u32) -> usize {
    if level == START_LEVEL {
        ROOT_ENTRIES
    } else {
        ENTRIES
    }
}

/// Entries a whole-table scan (range unmap, subtree locking, split's fill, live teardown)
/// visits: all of them, except in loom models, whose tables are cut to their first two
/// entries so that every interleaving can be explored (the models only use IPAs whose
/// indices fall there).
#[cfg(not(loom))]
const fn scan_entries(level: u32) -> usize {
    entries(level)
}
#[cfg(loom)]
const fn scan_entries(_level: u32) -> usize {
    2
}

/// Maps one leaf at `level`: a 1 GiB block (level 1), a 2 MiB block (level 2) or a 4 KiB
/// page (level 3), translating `ipa..ipa + span(level)` to `pa..`.
///
/// Missing tables on the way are taken from `tables` and installed by
/// `compare_exchange(0 → table, AcqRel, Acquire)`: the Release half publishes the table's
/// zeroes to every walker that loads the descriptor with Acquire; the loser of a race hands
/// its table back through [`TableAlloc::free_table`] and continues with the winner's. The
/// leaf is installed the same way into a zero entry, so no TLB maintenance is needed (an
/// invalid entry is never cached, Arm ARM D8.16). For the MMU's own walks (which are not
/// ordered by the Release) the kernel's `alloc_table` must end with `DSB ISHST` after
/// zeroing, as `docs/design/stage2.md` rule 2 asks.
///
/// Errors: [`MapError::BadIpa`] when `level` is not 1..=3, `ipa` or `pa` is not aligned to
/// the leaf's size, `ipa` is beyond the 40-bit IPA space or `pa` beyond 48 bits;
/// [`MapError::AlreadyMapped`] when the entry holds a leaf or a table (a block is never
/// laid over a table: use [`collapse`]); [`MapError::BlockInTheWay`] when a bigger block
/// covers `ipa`; [`MapError::Locked`] when an entry on the way is owned by another writer
/// (retry; a fault handler returns to the guest); [`MapError::NoMemory`] when a table was
/// needed and `tables` had none. Tables installed on the way stay linked on error.
#[allow(clippy::too_many_arguments)]
pub fn map_leaf<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    ipa: Ipa,
    level: u32,
    pa: PhysAddr,
    perms: Perms,
    ty: MemType,
    tables: &mut dyn TableAlloc,
) -> Result<(), MapError> {
    if !(START_LEVEL..=3).contains(&level)
        || ipa.0 >> IPA_BITS != 0
        || !ipa.is_aligned(span(level))
        || !pa.is_aligned(span(level))
        || pa.0 & !OA_MASK != 0
    {
        return Err(MapError::BadIpa);
    }
    let mut table = root;
    for l in START_LEVEL..level {
        let pte = mem.pte(table, index(l, ipa));
        let cur = pte.load(Ordering::Acquire);
        table = match decode(l, cur) {
            Desc::Table(next) => next,
            Desc::Leaf { .. } => return Err(MapError::BlockInTheWay),
            Desc::Locked => return Err(MapError::Locked),
            Desc::Invalid => {
                let new = tables.alloc_table().ok_or(MapError::NoMemory)?;
                // Release publishes the zeroed table to walkers that see the descriptor;
                // Acquire on failure makes the winner's table readable.
                match pte.compare_exchange(
                    cur,
                    table_desc(new),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => new,
                    Err(winner) => {
                        tables.free_table(new);
                        match decode(l, winner) {
                            Desc::Table(next) => next,
                            Desc::Leaf { .. } => return Err(MapError::BlockInTheWay),
                            // A locked (invalid but non-zero) entry: let the caller retry.
                            Desc::Locked | Desc::Invalid => return Err(MapError::Locked),
                        }
                    }
                }
            }
        };
    }
    let pte = mem.pte(table, index(level, ipa));
    // Release publishes the frame's contents (zeroed or loaded by the kernel) with the leaf.
    pte.compare_exchange(
        0,
        leaf_desc(level, pa, perms, ty),
        Ordering::AcqRel,
        Ordering::Acquire,
    )
    .map(|_| ())
    .map_err(|winner| match decode(level, winner) {
        Desc::Locked => MapError::Locked,
        _ => MapError::AlreadyMapped,
    })
}

/// Maps one 4 KiB page: [`map_leaf`] at level 3 (same protocol and errors; `pa` must be
/// page aligned).
pub fn map_page<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    ipa: Ipa,
    pa: PhysAddr,
    perms: Perms,
    ty: MemType,
    tables: &mut dyn TableAlloc,
) -> Result<(), MapError> {
    map_leaf(mem, root, ipa, 3, pa, perms, ty, tables)
}

/// Unmaps one 4 KiB page: break (CAS the leaf to LOCKED), `tlbi(ipa)` (which must
/// invalidate the IPA on every core and wait for completion), make (store zero). Returns
/// the page's physical address.
pub fn unmap_page<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    ipa: Ipa,
    tlbi: &mut dyn FnMut(Ipa),
) -> Result<PhysAddr, UnmapError> {
    if ipa.0 >> IPA_BITS != 0 || !ipa.is_aligned(PAGE_SIZE) {
        return Err(UnmapError::BadIpa);
    }
    let mut table = root;
    for level in START_LEVEL..3 {
        match decode(
            level,
            mem.pte(table, index(level, ipa)).load(Ordering::Acquire),
        ) {
            Desc::Table(next) => table = next,
            Desc::Leaf { .. } => return Err(UnmapError::BlockInTheWay),
            Desc::Locked => return Err(UnmapError::Locked),
            Desc::Invalid => return Err(UnmapError::NotMapped),
        }
    }
    let pte = mem.pte(table, index(3, ipa));
    let cur = pte.load(Ordering::Acquire);
    let Desc::Leaf { pa, .. } = decode(3, cur) else {
        return Err(if decode(3, cur) == Desc::Locked {
            UnmapError::Locked
        } else {
            UnmapError::NotMapped
        });
    };
    // Break: from here on this writer owns the entry and walkers see it invalid.
    if pte
        .compare_exchange(cur, LOCKED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(UnmapError::Locked);
    }
    tlbi(ipa);
    // Make: the entry may be installed again.
    pte.store(0, Ordering::Release);
    Ok(pa)
}

/// Translates `ipa`: the physical address and the leaf's rights, if mapped.
pub fn translate<M: TableMem>(mem: &M, root: PhysAddr, ipa: Ipa) -> Option<(PhysAddr, Perms)> {
    if ipa.0 >> IPA_BITS != 0 {
        return None;
    }
    let mut table = root;
    for level in START_LEVEL..=3 {
        let d = mem.pte(table, index(level, ipa)).load(Ordering::Acquire);
        match decode(level, d) {
            Desc::Invalid | Desc::Locked => return None,
            Desc::Table(next) => table = next,
            Desc::Leaf { pa, perms, .. } => {
                return Some((PhysAddr(pa.0 + (ipa.0 & (span(level) - 1))), perms));
            }
        }
    }
    None
}

/// Tears the whole tree down: every leaf's output page goes to `leaf`, then every
/// table below the root goes to `table`; all entries end up zero. Only for an address
/// space that no core runs any more (its TLB entries must be invalidated by the caller).
pub fn teardown<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    leaf: &mut dyn FnMut(PhysAddr),
    table: &mut dyn FnMut(PhysAddr),
) {
    fn visit<M: TableMem>(
        mem: &M,
        t: PhysAddr,
        level: u32,
        n: usize,
        leaf: &mut dyn FnMut(PhysAddr),
        table: &mut dyn FnMut(PhysAddr),
    ) {
        for i in 0..n {
            let pte = mem.pte(t, i);
            match decode(level, pte.swap(0, Ordering::AcqRel)) {
                Desc::Invalid | Desc::Locked => {}
                Desc::Leaf { pa, .. } => leaf(pa),
                Desc::Table(next) => {
                    visit(mem, next, level + 1, ENTRIES, leaf, table);
                    table(next);
                }
            }
        }
    }
    visit(mem, root, START_LEVEL, ROOT_ENTRIES, leaf, table);
}

mod bbm;
pub use bbm::*;
mod dirty;
pub use dirty::{relax_write, write_protect_range};

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, not(loom)))]
mod unmap_tests;

#[cfg(all(test, not(loom)))]
mod test_util;

#[cfg(all(test, not(loom)))]
mod bbm_tests;

#[cfg(all(test, not(loom)))]
mod prop_tests;

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(all(test, loom))]
mod loom_bbm_tests;
