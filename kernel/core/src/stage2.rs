//! Stage-2 translation tables: descriptor format and a lock-free walker.
//!
//! Format: VMSAv8-64 stage-2, 4 KiB granule (Arm ARM D8.3 "Translation table descriptor
//! formats"), a 40-bit IPA space starting at level 1 with two concatenated level-1 tables
//! (VTCR_EL2.T0SZ = 24, SL0 = 1), so the root is 8 KiB and has 1024 entries.
//!
//! Concurrency protocol (the subset needed so far; `docs/design/stage2.md` states it in
//! full): readers load entries with `Acquire`; a missing table is installed by one
//! `compare_exchange(0 → table, AcqRel)` after the new table was zeroed, so a walker that
//! sees the table descriptor also sees the zeroes; the loser of that race hands its table
//! back and continues with the winner's. A leaf is installed the same way. Nothing here
//! changes a valid entry into another valid one (break-before-make arrives with unmap and
//! collapse), so no TLB maintenance is needed for installs: an invalid entry is never
//! cached by the MMU (Arm ARM D8.16, "Translation Lookaside Buffers").
//!
//! Table memory is reached through [`TableMem`], so the same code runs on the kernel's
//! identity map and on host test memory.

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

/// Maps one 4 KiB page.
pub fn map_page<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    ipa: Ipa,
    pa: PhysAddr,
    perms: Perms,
    ty: MemType,
    tables: &mut dyn TableAlloc,
) -> Result<(), MapError> {
    if ipa.0 >> IPA_BITS != 0 || !ipa.is_aligned(PAGE_SIZE) {
        return Err(MapError::BadIpa);
    }
    let mut table = root;
    for level in START_LEVEL..3 {
        let pte = mem.pte(table, index(level, ipa));
        let cur = pte.load(Ordering::Acquire);
        table = match decode(level, cur) {
            Desc::Table(next) => next,
            Desc::Leaf { .. } => return Err(MapError::BlockInTheWay),
            Desc::Locked => return Err(MapError::Locked),
            Desc::Invalid => {
                let new = tables.alloc_table().ok_or(MapError::NoMemory)?;
                // Release publishes the zeroed table to walkers that see the descriptor.
                match pte.compare_exchange(
                    cur,
                    table_desc(new),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => new,
                    Err(winner) => {
                        tables.free_table(new);
                        match decode(level, winner) {
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
    let pte = mem.pte(table, index(3, ipa));
    pte.compare_exchange(
        0,
        leaf_desc(3, pa, perms, ty),
        Ordering::AcqRel,
        Ordering::Acquire,
    )
    .map(|_| ())
    .map_err(|winner| match decode(3, winner) {
        Desc::Locked => MapError::Locked,
        _ => MapError::AlreadyMapped,
    })
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
                let span = 1u64 << (12 + 9 * (3 - level));
                return Some((PhysAddr(pa.0 + (ipa.0 & (span - 1))), perms));
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Host memory: a set of 4 KiB pages, addressed by fake physical addresses.
    struct FakeMem {
        pages: Vec<Box<[AtomicU64; ENTRIES]>>,
        free: RefCell<Vec<PhysAddr>>,
    }
    const BASE: u64 = 0x8000_0000;

    impl FakeMem {
        fn new(n: usize) -> Self {
            let pages = (0..n)
                .map(|_| Box::new(core::array::from_fn(|_| AtomicU64::new(0))))
                .collect();
            // Pages 0 and 1 are the root; the rest are free.
            let free = (2..n as u64)
                .rev()
                .map(|i| PhysAddr(BASE + i * PAGE_SIZE))
                .collect();
            FakeMem {
                pages,
                free: RefCell::new(free),
            }
        }
        fn root(&self) -> PhysAddr {
            PhysAddr(BASE)
        }
    }

    impl TableMem for FakeMem {
        fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
            let byte = table.0 - BASE + index as u64 * 8;
            &self.pages[(byte / PAGE_SIZE) as usize][((byte % PAGE_SIZE) / 8) as usize]
        }
    }

    struct Pool<'a>(&'a FakeMem);
    impl TableAlloc for Pool<'_> {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            self.0.free.borrow_mut().pop()
        }
        fn free_table(&mut self, t: PhysAddr) {
            self.0.free.borrow_mut().push(t)
        }
    }

    fn map(m: &FakeMem, ipa: u64, pa: u64, perms: Perms) -> Result<(), MapError> {
        map_page(
            m,
            m.root(),
            Ipa(ipa),
            PhysAddr(pa),
            perms,
            MemType::Normal,
            &mut Pool(m),
        )
    }

    #[test]
    fn vtcr_matches_the_measured_value() {
        // The value measured to work on QEMU virt (FACTS.md).
        assert_eq!(VTCR, 0x8002_3558);
    }

    #[test]
    fn descriptors_round_trip() {
        for level in 1..=3 {
            for perms in [Perms::RX, Perms::R, Perms::RW] {
                for mem in [MemType::Normal, MemType::Device] {
                    let pa = PhysAddr(0x1234_5000 & !((1u64 << (12 + 9 * (3 - level))) - 1));
                    let d = leaf_desc(level, pa, perms, mem);
                    assert_eq!(decode(level, d), Desc::Leaf { pa, perms, mem });
                }
            }
        }
        assert_eq!(
            decode(2, table_desc(PhysAddr(0x5000))),
            Desc::Table(PhysAddr(0x5000))
        );
        assert_eq!(decode(1, 0), Desc::Invalid);
        assert_eq!(decode(3, 0b01), Desc::Invalid);
    }

    #[test]
    fn maps_translates_and_tears_down() {
        let m = FakeMem::new(16);
        map(&m, 0x40_0000, 0x9000_0000, Perms::RX).unwrap();
        map(&m, 0x40_1000, 0x9000_1000, Perms::RW).unwrap();
        assert_eq!(
            map(&m, 0x40_1000, 0x9000_2000, Perms::RW),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            map(&m, 0x40_1001, 0x9000_2000, Perms::RW),
            Err(MapError::BadIpa)
        );
        assert_eq!(
            map(&m, 1 << 40, 0x9000_2000, Perms::RW),
            Err(MapError::BadIpa)
        );
        assert_eq!(
            translate(&m, m.root(), Ipa(0x40_0123)),
            Some((PhysAddr(0x9000_0123), Perms::RX))
        );
        assert_eq!(translate(&m, m.root(), Ipa(0x40_2000)), None);
        // IPA in the root's second page (bit 39 set).
        map(&m, 0x80_0000_0000, 0x9000_3000, Perms::R).unwrap();
        assert_eq!(
            translate(&m, m.root(), Ipa(0x80_0000_0008)),
            Some((PhysAddr(0x9000_3008), Perms::R))
        );
        let (mut leaves, mut tables) = (Vec::new(), Vec::new());
        teardown(&m, m.root(), &mut |p| leaves.push(p), &mut |t| {
            tables.push(t)
        });
        assert_eq!(leaves.len(), 3);
        assert_eq!(tables.len(), 4);
        assert_eq!(translate(&m, m.root(), Ipa(0x40_0000)), None);
    }

    #[test]
    fn out_of_tables_is_an_error() {
        let m = FakeMem::new(3);
        assert_eq!(map(&m, 0x1000, 0x1000, Perms::R), Err(MapError::NoMemory));
    }

    proptest! {
        #[test]
        fn agrees_with_a_reference_map(ops in proptest::collection::vec((0u64..64, 0u64..4096, 0u8..3), 1..100)) {
            let m = FakeMem::new(128);
            let mut reference: HashMap<u64, (u64, Perms)> = HashMap::new();
            for (page, frame, p) in ops {
                // Spread IPAs over several level-1 and level-2 entries.
                let ipa = (page % 8) << 30 | (page / 8) << 21 | (page % 3) << 12;
                let perms = [Perms::RX, Perms::R, Perms::RW][p as usize];
                let res = map(&m, ipa, frame << 12, perms);
                match reference.entry(ipa) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        prop_assert_eq!(res, Err(MapError::AlreadyMapped));
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        prop_assert_eq!(res, Ok(()));
                        v.insert((frame << 12, perms));
                    }
                }
            }
            for (ipa, (pa, perms)) in &reference {
                prop_assert_eq!(translate(&m, m.root(), Ipa(*ipa + 8)), Some((PhysAddr(pa + 8), *perms)));
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod unmap_tests {
    use super::*;
    use std::collections::HashMap;

    /// Sparse host table memory: entries created on first use.
    #[derive(Default)]
    struct Sparse(std::sync::Mutex<HashMap<(u64, usize), &'static AtomicU64>>);
    impl TableMem for Sparse {
        fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
            let mut m = self.0.lock().unwrap();
            m.entry((table.0, index))
                .or_insert_with(|| Box::leak(Box::new(AtomicU64::new(0))))
        }
    }
    struct Pool(Vec<PhysAddr>);
    impl TableAlloc for Pool {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            self.0.pop()
        }
        fn free_table(&mut self, t: PhysAddr) {
            self.0.push(t)
        }
    }

    #[test]
    fn unmap_breaks_invalidates_and_makes() {
        let m = Sparse::default();
        let root = PhysAddr(0x1000_0000);
        let mut pool = Pool((1..8).map(|i| PhysAddr(0x2000_0000 + i * 4096)).collect());
        map_page(
            &m,
            root,
            Ipa(0x4000),
            PhysAddr(0x9000),
            Perms::RW,
            MemType::Normal,
            &mut pool,
        )
        .unwrap();
        let mut flushed = Vec::new();
        // The TLB invalidation runs while the entry is locked (between break and make).
        let r = unmap_page(&m, root, Ipa(0x4000), &mut |ipa| {
            flushed.push(ipa);
            assert_eq!(translate(&m, root, Ipa(0x4000)), None);
            assert_eq!(
                map_page(
                    &m,
                    root,
                    Ipa(0x4000),
                    PhysAddr(0xa000),
                    Perms::RW,
                    MemType::Normal,
                    &mut Pool(vec![])
                ),
                Err(MapError::Locked),
                "a writer meeting a locked entry backs off"
            );
        });
        assert_eq!(r, Ok(PhysAddr(0x9000)));
        assert_eq!(flushed, vec![Ipa(0x4000)]);
        assert_eq!(
            unmap_page(&m, root, Ipa(0x4000), &mut |_| {}),
            Err(UnmapError::NotMapped)
        );
        assert_eq!(
            unmap_page(&m, root, Ipa(0x4001), &mut |_| {}),
            Err(UnmapError::BadIpa)
        );
        // After make the page can be mapped again.
        map_page(
            &m,
            root,
            Ipa(0x4000),
            PhysAddr(0xb000),
            Perms::R,
            MemType::Normal,
            &mut pool,
        )
        .unwrap();
        assert_eq!(
            translate(&m, root, Ipa(0x4000)),
            Some((PhysAddr(0xb000), Perms::R))
        );
    }
}

/// Model checks of the walker (`RUSTFLAGS="--cfg loom" cargo test -p kcore --lib --release
/// loom`).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use std::collections::HashMap;

    const ROOT: PhysAddr = PhysAddr(0x10_0000);
    const IPA: Ipa = Ipa(0x4000);

    /// Table memory with exactly the entries a walk of `IPA` touches, in `tables`.
    struct Mem(HashMap<(u64, usize), AtomicU64>);
    impl Mem {
        fn new(tables: &[u64]) -> Self {
            let mut m = HashMap::new();
            m.insert((ROOT.0, index(1, IPA)), AtomicU64::new(0));
            for &t in tables {
                for level in [2, 3] {
                    m.insert((t, index(level, IPA)), AtomicU64::new(0));
                }
            }
            Mem(m)
        }
    }
    impl TableMem for Mem {
        fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
            &self.0[&(table.0, index)]
        }
    }
    struct Pool(Vec<PhysAddr>, Vec<PhysAddr>);
    impl TableAlloc for Pool {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            self.0.pop()
        }
        fn free_table(&mut self, t: PhysAddr) {
            self.1.push(t)
        }
    }

    /// Two cores fault on the same page at once: exactly one installs it, the other sees
    /// it mapped (or locked, never with that protocol: only installs here); every table
    /// that lost a race goes back to its pool.
    #[test]
    fn concurrent_faults_on_one_page() {
        loom::model(|| {
            let m = Arc::new(Mem::new(&[0x20_0000, 0x20_1000, 0x30_0000, 0x30_1000]));
            let t = {
                let m = m.clone();
                thread::spawn(move || {
                    let mut p = Pool(vec![PhysAddr(0x20_1000), PhysAddr(0x20_0000)], vec![]);
                    let r = map_page(
                        &*m,
                        ROOT,
                        IPA,
                        PhysAddr(0xa000),
                        Perms::RW,
                        MemType::Normal,
                        &mut p,
                    );
                    (r, 2 - p.0.len() - p.1.len())
                })
            };
            let mut p = Pool(vec![PhysAddr(0x30_1000), PhysAddr(0x30_0000)], vec![]);
            let mine = map_page(
                &*m,
                ROOT,
                IPA,
                PhysAddr(0xb000),
                Perms::RW,
                MemType::Normal,
                &mut p,
            );
            let (theirs, their_linked) = t.join().unwrap();
            let my_linked = 2 - p.0.len() - p.1.len();
            assert!(
                mine.is_ok() ^ theirs.is_ok(),
                "exactly one install wins: {mine:?} {theirs:?}"
            );
            assert!(matches!(
                (mine, theirs),
                (Ok(()), Err(MapError::AlreadyMapped)) | (Err(MapError::AlreadyMapped), Ok(()))
            ));
            // Two tables (levels 2 and 3) are linked in all, whoever made them.
            assert_eq!(
                my_linked + their_linked,
                2,
                "a table leaked or was linked twice"
            );
            let want = if mine.is_ok() { 0xb000 } else { 0xa000 };
            assert_eq!(translate(&*m, ROOT, IPA).map(|x| x.0), Some(PhysAddr(want)));
        });
    }

    /// A fault races an unmap of the same page: the fault either finds the old mapping, or
    /// the locked entry and backs off, or installs after the unmap finished; the final
    /// state matches what each side was told, and no walker ever sees a half state.
    #[test]
    fn fault_racing_unmap() {
        loom::model(|| {
            let m = Arc::new(Mem::new(&[0x20_0000, 0x20_1000]));
            {
                let mut p = Pool(vec![PhysAddr(0x20_1000), PhysAddr(0x20_0000)], vec![]);
                map_page(
                    &*m,
                    ROOT,
                    IPA,
                    PhysAddr(0xa000),
                    Perms::RW,
                    MemType::Normal,
                    &mut p,
                )
                .unwrap();
            }
            let t = {
                let m = m.clone();
                thread::spawn(move || {
                    let mut p = Pool(vec![], vec![]);
                    map_page(
                        &*m,
                        ROOT,
                        IPA,
                        PhysAddr(0xb000),
                        Perms::RW,
                        MemType::Normal,
                        &mut p,
                    )
                })
            };
            let seen_during_break = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let u = unmap_page(&*m, ROOT, IPA, &mut |_| {
                seen_during_break.store(translate(&*m, ROOT, IPA).is_some(), Ordering::Relaxed);
            });
            let f = t.join().unwrap();
            assert_eq!(u, Ok(PhysAddr(0xa000)), "the unmap owns the old mapping");
            assert!(
                !seen_during_break.load(Ordering::Relaxed),
                "a walker saw the broken entry as mapped"
            );
            let now = translate(&*m, ROOT, IPA).map(|x| x.0);
            match f {
                Ok(()) => assert_eq!(now, Some(PhysAddr(0xb000))),
                Err(MapError::AlreadyMapped) | Err(MapError::Locked) => assert_eq!(now, None),
                Err(e) => panic!("unexpected {e:?}"),
            }
        });
    }
}
