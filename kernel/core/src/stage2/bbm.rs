//! Changing and removing valid entries: break-before-make (`docs/design/stage2.md` rules
//! 3 to 6) for range unmap, collapse into a block, split of a block, and the teardown of a
//! tree other cores may still walk.
//!
//! Every operation here follows the same three steps on the entry it changes:
//!
//! 1. **Break**: `compare_exchange(old, LOCKED, AcqRel, Acquire)`. The winner owns the
//!    entry; every other walker and writer sees it invalid (and a writer backs off with a
//!    `Locked` error). Acquire on success makes the old entry's table (if any) readable.
//! 2. **Invalidate** through [`Maintenance`]: [`Maintenance::tlbi_ipa`] for a leaf,
//!    [`Maintenance::tlbi_vmid`] for a table entry (walk caches may hold anything below it).
//! 3. **Make**: `store(new, Release)`, or `store(0, Release)` to leave it unmapped. Release
//!    publishes a new table's entries (split) to walkers that load the descriptor with
//!    Acquire.
//!
//! Tables unlinked by a break are **retired**, never freed here: a walker that loaded the
//! table entry before the break may still read them until a QSBR grace period has passed
//! ([`crate::qsbr`]).

use super::{
    decode, entries, index, leaf_desc, scan_entries, span, table_desc, AtomicU64, Desc, Ipa,
    MemType, Ordering, Perms, PhysAddr, TableAlloc, TableMem, UnmapError, ENTRIES, IPA_BITS,
    LOCKED, OA_MASK, PAGE_SIZE, START_LEVEL, TABLE_OR_PAGE, VALID,
};

/// TLB maintenance and reclamation, supplied by the caller: the kernel implements it with
/// TLBI instructions and its QSBR retire list, tests with recorders.
///
/// Every method is called while the entry concerned is broken (invalid in memory), after
/// the break's `compare_exchange` and before the make's store.
pub trait Maintenance {
    /// Invalidates the translation of the leaf at `ipa` (`level` 3: a page; 1 or 2: a block,
    /// whose whole range must go) on every core of the inner shareable domain and waits for
    /// completion. The kernel does `TLBI IPAS2E1IS` (IPA >> 12, with a level hint), `DSB
    /// ISH`, `TLBI VMALLE1IS` (stage-1 entries built on the old translation), `DSB ISH`.
    fn tlbi_ipa(&mut self, ipa: Ipa, level: u32);
    /// Invalidates every TLB and walk-cache entry of this VMID on every core and waits
    /// (`TLBI VMALLS12E1IS`, `DSB ISH`): needed after breaking a table entry.
    fn tlbi_vmid(&mut self);
    /// Takes an unlinked table: it is unreachable from the root, every one of its entries
    /// is LOCKED, and the invalidation that drops it from the MMUs' walk caches has
    /// completed. It must not be reused before a QSBR grace period that starts now.
    fn retire(&mut self, table: PhysAddr);
}

/// Why a collapse failed. Nothing was changed in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CollapseError {
    /// `level` is not 1 or 2, `ipa` or `pa` is not aligned to the block size, or out of
    /// range.
    BadIpa,
    /// The entry already holds a block.
    AlreadyMapped,
    /// A bigger block covers the address.
    BlockInTheWay,
    /// A table on the way to the entry is missing (nothing is mapped there: use
    /// [`super::map_leaf`], which installs tables).
    NoTable,
    /// An entry on the way, or the entry itself, is owned by another writer: retry.
    Locked,
}

/// Why a split failed. Nothing was changed in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SplitError {
    /// `level` is not 1 or 2, or the IPA is beyond the translated range.
    BadIpa,
    /// No block of that level covers the address (nothing, a table, or a bigger block).
    NotABlock,
    /// An entry on the way, or the block's entry, is owned by another writer: retry.
    Locked,
    /// No memory for the new table.
    NoMemory,
}

/// Where a read-only walk to a level stopped.
enum Stop {
    /// An entry on the way was invalid.
    Missing,
    /// A block leaf on the way covers the address.
    Block,
    /// An entry on the way is owned by another writer.
    Locked,
}

/// Walks (loads with Acquire) to the table holding `ipa`'s entry at `level`.
fn walk_to<M: TableMem>(mem: &M, root: PhysAddr, ipa: Ipa, level: u32) -> Result<PhysAddr, Stop> {
    let mut table = root;
    for l in START_LEVEL..level {
        match decode(l, mem.pte(table, index(l, ipa)).load(Ordering::Acquire)) {
            Desc::Table(next) => table = next,
            Desc::Leaf { .. } => return Err(Stop::Block),
            Desc::Locked => return Err(Stop::Locked),
            Desc::Invalid => return Err(Stop::Missing),
        }
    }
    Ok(table)
}

/// Waits a moment for another writer to finish its break-before-make.
fn backoff() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// True for a LOCKED entry (invalid, software lock bit set).
const fn is_locked(d: u64) -> bool {
    d & VALID == 0 && d & LOCKED != 0
}

/// Locks `pte` for good (it is in a subtree that was already made unreachable) and returns
/// what it held. An entry that another writer holds LOCKED is waited for: that writer
/// entered the subtree before it was cut off and is between its own break and make, which
/// never blocks, so the wait is bounded. The CAS is AcqRel: its Acquire half makes a table
/// that was linked here readable.
fn lock_entry(pte: &AtomicU64) -> u64 {
    let mut cur = pte.load(Ordering::Acquire);
    loop {
        if is_locked(cur) {
            backoff();
            cur = pte.load(Ordering::Acquire);
            continue;
        }
        match pte.compare_exchange(cur, LOCKED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return cur,
            Err(now) => cur = now,
        }
    }
}

/// Locks every entry of `table` (at `level`, mapping from `base`), top-down: an entry is
/// locked first, and the table it held (now owned by this writer, since the CAS that
/// locked it returned it) is locked next, so every table ever linked into the subtree is
/// found, and nothing can be linked into it afterwards. Each table below `table` is
/// retired once it and everything below it is locked; `table` itself is left to the
/// caller. Leaves go to `leaf` (IPA, level, output address). Returns the tables retired.
fn lock_table<M: TableMem>(
    mem: &M,
    table: PhysAddr,
    level: u32,
    base: u64,
    m: &mut dyn Maintenance,
    leaf: &mut dyn FnMut(Ipa, u32, PhysAddr),
) -> usize {
    let mut retired = 0;
    for i in 0..scan_entries(level) {
        let at = base + i as u64 * span(level);
        match decode(level, lock_entry(mem.pte(table, i))) {
            Desc::Table(next) => {
                retired += lock_table(mem, next, level + 1, at, m, leaf);
                m.retire(next);
                retired += 1;
            }
            Desc::Leaf { pa, .. } => leaf(Ipa(at), level, pa),
            Desc::Invalid | Desc::Locked => {}
        }
    }
    retired
}

/// Removes every leaf (page or block) inside `[start, start + len)`: [`unmap_range_with`]
/// without the report of what was removed.
pub fn unmap_range<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    start: Ipa,
    len: u64,
    m: &mut dyn Maintenance,
) -> Result<usize, UnmapError> {
    unmap_range_with(mem, root, start, len, m, &mut |_, _, _| {})
}

/// Removes every leaf (page or block) inside `[start, start + len)`, in ascending IPA
/// order, each by break (`compare_exchange(leaf → LOCKED, AcqRel)`), [`Maintenance::tlbi_ipa`]
/// and make (`store(0, Release)`), then reports it to `leaf` (IPA, level, output address):
/// its translation is gone from every TLB by then, but kernel code that translated the IPA
/// before may still use the frame until a grace period has passed. Tables stay linked.
/// Empty subtrees are skipped a whole invalid entry at a time, so a sparse range costs what
/// is mapped in it, not its size. Returns the number of leaves removed.
///
/// Errors: [`UnmapError::BadIpa`] when `start` or `len` is not page aligned or the range
/// reaches beyond the 40-bit IPA space; [`UnmapError::BlockInTheWay`] when a block lies
/// only partly inside the range; [`UnmapError::Locked`] when an entry met is owned by
/// another writer (retry: what was already removed is skipped quickly). On either of the
/// last two, every leaf below the offending entry's IPA was removed (and reported) and
/// nothing at or above it was changed.
pub fn unmap_range_with<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    start: Ipa,
    len: u64,
    m: &mut dyn Maintenance,
    leaf: &mut dyn FnMut(Ipa, u32, PhysAddr),
) -> Result<usize, UnmapError> {
    let end = start.0.checked_add(len).ok_or(UnmapError::BadIpa)?;
    if !start.is_aligned(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) || end > 1 << IPA_BITS {
        return Err(UnmapError::BadIpa);
    }
    let mut removed = 0;
    if len != 0 {
        let mut w = RangeUnmap {
            start: start.0,
            end,
            m,
            leaf,
            removed: &mut removed,
        };
        w.table(mem, root, START_LEVEL, 0)?;
    }
    Ok(removed)
}

/// State of one range unmap.
struct RangeUnmap<'a> {
    start: u64,
    end: u64,
    m: &'a mut dyn Maintenance,
    leaf: &'a mut dyn FnMut(Ipa, u32, PhysAddr),
    removed: &'a mut usize,
}

impl RangeUnmap<'_> {
    /// Unmaps the part of the range inside `table` (at `level`, mapping from `base`; the
    /// caller made sure the two overlap).
    fn table<M: TableMem>(
        &mut self,
        mem: &M,
        table: PhysAddr,
        level: u32,
        base: u64,
    ) -> Result<(), UnmapError> {
        let sz = span(level);
        let first = (self.start.max(base) - base) / sz;
        let last = ((self.end - base).div_ceil(sz)).min(scan_entries(level) as u64);
        if level == 3 {
            return self.pages(mem, table, base, first, last);
        }
        for i in first..last {
            let at = base + i * sz;
            let pte = mem.pte(table, i as usize);
            let mut cur = pte.load(Ordering::Acquire);
            loop {
                match decode(level, cur) {
                    Desc::Invalid => break,
                    Desc::Locked => return Err(UnmapError::Locked),
                    Desc::Table(next) => {
                        self.table(mem, next, level + 1, at)?;
                        break;
                    }
                    Desc::Leaf { pa, .. } => {
                        if at < self.start || at + sz > self.end {
                            return Err(UnmapError::BlockInTheWay);
                        }
                        // Break. On failure the entry changed under us: look again.
                        if let Err(now) =
                            pte.compare_exchange(cur, LOCKED, Ordering::AcqRel, Ordering::Acquire)
                        {
                            cur = now;
                            continue;
                        }
                        self.m.tlbi_ipa(Ipa(at), level);
                        // Make: unmapped; the entry may be installed again.
                        pte.store(0, Ordering::Release);
                        *self.removed += 1;
                        (self.leaf)(Ipa(at), level, pa);
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

impl RangeUnmap<'_> {
    /// The page entries `first..last` of level-3 `table` (mapping from `base`): break
    /// every mapped one, invalidate once, make them all. With more than
    /// [`BATCH_TLBI_OVER`] pages broken the invalidation is one [`Maintenance::tlbi_vmid`]
    /// instead of one [`Maintenance::tlbi_ipa`] each (a large unmap costs one broadcast
    /// per table, not per page); break-before-make holds for every entry either way.
    fn pages<M: TableMem>(
        &mut self,
        mem: &M,
        table: PhysAddr,
        base: u64,
        first: u64,
        last: u64,
    ) -> Result<(), UnmapError> {
        let mut broken = [0u64; ENTRIES / 64];
        let mut pas = [0u64; ENTRIES];
        let mut count = 0;
        let mut result = Ok(());
        'entries: for i in first..last {
            let pte = mem.pte(table, i as usize);
            let mut cur = pte.load(Ordering::Acquire);
            loop {
                match decode(3, cur) {
                    Desc::Invalid => break,
                    Desc::Locked => {
                        result = Err(UnmapError::Locked);
                        break 'entries;
                    }
                    Desc::Table(_) => break,
                    Desc::Leaf { pa, .. } => {
                        // Break. On failure the entry changed under us: look again.
                        if let Err(now) =
                            pte.compare_exchange(cur, LOCKED, Ordering::AcqRel, Ordering::Acquire)
                        {
                            cur = now;
                            continue;
                        }
                        broken[i as usize / 64] |= 1 << (i % 64);
                        pas[i as usize] = pa.0;
                        count += 1;
                        break;
                    }
                }
            }
        }
        if count > BATCH_TLBI_OVER {
            self.m.tlbi_vmid();
        } else {
            for i in first..last {
                if broken[i as usize / 64] & (1 << (i % 64)) != 0 {
                    self.m.tlbi_ipa(Ipa(base + i * PAGE_SIZE), 3);
                }
            }
        }
        for i in first..last {
            if broken[i as usize / 64] & (1 << (i % 64)) != 0 {
                // Make: unmapped; the entry may be installed again.
                mem.pte(table, i as usize).store(0, Ordering::Release);
                *self.removed += 1;
                (self.leaf)(Ipa(base + i * PAGE_SIZE), 3, PhysAddr(pas[i as usize]));
            }
        }
        result
    }
}

/// Pages broken in one table above which a range unmap invalidates the whole VMID once.
pub const BATCH_TLBI_OVER: usize = 16;

/// Replaces whatever the entry of `level` covering `ipa` holds by a block: [`collapse_with`]
/// without the report of the leaves that went.
#[allow(clippy::too_many_arguments)]
pub fn collapse<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    ipa: Ipa,
    level: u32,
    pa: PhysAddr,
    perms: Perms,
    ty: MemType,
    m: &mut dyn Maintenance,
) -> Result<(), CollapseError> {
    collapse_with(mem, root, ipa, level, pa, perms, ty, m, &mut |_, _, _| {})
}

/// Replaces whatever the entry of `level` (1: 1 GiB, 2: 2 MiB) covering `ipa` holds — a
/// table subtree, or nothing — by a block leaf mapping `pa` (`docs/design/stage2.md` rule
/// 6).
///
/// - An empty entry gets the block by `compare_exchange(0 → block, AcqRel)` (rule 2: no
///   invalidation, an invalid entry is never cached).
/// - A table entry is broken (`compare_exchange(table → LOCKED, AcqRel)`), then
///   [`Maintenance::tlbi_vmid`] drops the subtree from every walk cache. Every entry of the
///   subtree is then locked for good, top-down (each `compare_exchange(x → LOCKED, AcqRel)`
///   returns the table it held, which is locked next), so no writer that walked in before
///   the break can still link a table or leaf into it; an entry that such a writer holds
///   LOCKED mid-operation is waited for (writers never block, so the wait is bounded).
///   Every table of the subtree goes to [`Maintenance::retire`] once it and all tables
///   below it are locked (the subtree's top table last); leaves found go to `leaf` (IPA,
///   level, output address). Last, the block is stored with Release.
///
/// Errors (nothing changed): [`CollapseError::BadIpa`], [`CollapseError::AlreadyMapped`]
/// (the entry holds a block), [`CollapseError::BlockInTheWay`] (a level-1 block covers a
/// level-2 request), [`CollapseError::NoTable`] (the level-1 entry above a level-2 request
/// is empty), [`CollapseError::Locked`] (another writer owns an entry on the way or the
/// entry: retry).
#[allow(clippy::too_many_arguments)]
pub fn collapse_with<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    ipa: Ipa,
    level: u32,
    pa: PhysAddr,
    perms: Perms,
    ty: MemType,
    m: &mut dyn Maintenance,
    leaf: &mut dyn FnMut(Ipa, u32, PhysAddr),
) -> Result<(), CollapseError> {
    if !(START_LEVEL..=2).contains(&level)
        || ipa.0 >> IPA_BITS != 0
        || !ipa.is_aligned(span(level))
        || !pa.is_aligned(span(level))
        || pa.0 & !OA_MASK != 0
    {
        return Err(CollapseError::BadIpa);
    }
    let table = walk_to(mem, root, ipa, level).map_err(|s| match s {
        Stop::Missing => CollapseError::NoTable,
        Stop::Block => CollapseError::BlockInTheWay,
        Stop::Locked => CollapseError::Locked,
    })?;
    let pte = mem.pte(table, index(level, ipa));
    let block = leaf_desc(level, pa, perms, ty);
    let mut cur = pte.load(Ordering::Acquire);
    loop {
        match decode(level, cur) {
            Desc::Leaf { .. } => return Err(CollapseError::AlreadyMapped),
            Desc::Locked => return Err(CollapseError::Locked),
            Desc::Invalid => {
                // Install (rule 2); the Release half publishes the block's frame contents.
                match pte.compare_exchange(cur, block, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(()),
                    Err(now) => cur = now,
                }
            }
            Desc::Table(sub) => {
                // Break; Acquire makes the subtree's entries readable.
                if let Err(now) =
                    pte.compare_exchange(cur, LOCKED, Ordering::AcqRel, Ordering::Acquire)
                {
                    cur = now;
                    continue;
                }
                m.tlbi_vmid();
                lock_table(mem, sub, level + 1, ipa.0, m, leaf);
                m.retire(sub);
                // Make.
                pte.store(block, Ordering::Release);
                return Ok(());
            }
        }
    }
}

/// Splits the block at `level` (1: 1 GiB, 2: 2 MiB) covering `ipa` into a table of
/// 512 leaves of level `level + 1` with the same attributes, mapping the same memory (for
/// dirty logging, or before unmapping part of a block).
///
/// The new table comes from `tables` and is filled first (Relaxed stores: nothing can see
/// it yet). Then break (`compare_exchange(block → LOCKED, AcqRel)`), then
/// [`Maintenance::tlbi_ipa`] for the block (whose DSB also makes the fill visible to the
/// MMUs' walks), then make: `store(table, Release)`, which publishes the fill to walkers
/// that load the descriptor with Acquire.
///
/// Errors (nothing changed): [`SplitError::BadIpa`] (`level` not 1 or 2, or `ipa` beyond
/// 40 bits), [`SplitError::NotABlock`] (no block of that level covers `ipa`),
/// [`SplitError::Locked`] (an entry on the way or the block is owned by another writer, or
/// changed between the read and the break: retry; the new table went back through
/// [`TableAlloc::free_table`]), [`SplitError::NoMemory`].
pub fn split<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    ipa: Ipa,
    level: u32,
    tables: &mut dyn TableAlloc,
    m: &mut dyn Maintenance,
) -> Result<(), SplitError> {
    if !(START_LEVEL..=2).contains(&level) || ipa.0 >> IPA_BITS != 0 {
        return Err(SplitError::BadIpa);
    }
    let table = walk_to(mem, root, ipa, level).map_err(|s| match s {
        Stop::Locked => SplitError::Locked,
        Stop::Missing | Stop::Block => SplitError::NotABlock,
    })?;
    let pte = mem.pte(table, index(level, ipa));
    let cur = pte.load(Ordering::Acquire);
    let pa = match decode(level, cur) {
        Desc::Leaf { pa, .. } => pa,
        Desc::Locked => return Err(SplitError::Locked),
        Desc::Invalid | Desc::Table(_) => return Err(SplitError::NotABlock),
    };
    let new = tables.alloc_table().ok_or(SplitError::NoMemory)?;
    let child = level + 1;
    // The block's attribute bits, unchanged; level-3 leaves (pages) set bit 1.
    let attrs = cur & !(OA_MASK | TABLE_OR_PAGE);
    let kind = if child == 3 { TABLE_OR_PAGE } else { 0 };
    for i in 0..scan_entries(child) {
        let oa = (pa.0 + i as u64 * span(child)) & OA_MASK;
        mem.pte(new, i).store(attrs | kind | oa, Ordering::Relaxed);
    }
    // Break.
    if pte
        .compare_exchange(cur, LOCKED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        tables.free_table(new);
        return Err(SplitError::Locked);
    }
    m.tlbi_ipa(Ipa(ipa.0 & !(span(level) - 1)), level);
    // Make: Release publishes the filled table.
    pte.store(table_desc(new), Ordering::Release);
    Ok(())
}

/// Tears down a tree that other cores may still be walking (a VSpace being destroyed while
/// faults or invocations on other cores may be inside it).
///
/// Each root entry is locked for good (waiting for a writer that holds it mid-operation);
/// a table entry is followed by [`Maintenance::tlbi_vmid`] (one per populated root entry)
/// and the locking of its whole subtree as in [`collapse_with`], every table of it going to
/// [`Maintenance::retire`] once it is entirely locked; a 1 GiB block in the root is
/// invalidated with [`Maintenance::tlbi_ipa`]. Leaves go to `leaf` (IPA, level, output
/// address) after their translation is invalidated; kernel code that translated before
/// may still use their frames until a grace period has passed. Returns the number of
/// tables retired.
///
/// Afterwards every root entry is LOCKED, so every walker and writer backs off. The root
/// itself is not retired here: the caller retires it (walkers may still be reading it)
/// and must not call this twice on one tree (the second call would wait for ever on the
/// first one's locks). Use [`super::teardown`] instead when no core can walk the tree.
pub fn teardown_live<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    m: &mut dyn Maintenance,
    leaf: &mut dyn FnMut(Ipa, u32, PhysAddr),
) -> usize {
    let mut retired = 0;
    debug_assert!(scan_entries(START_LEVEL) <= entries(START_LEVEL));
    for i in 0..scan_entries(START_LEVEL) {
        let at = i as u64 * span(START_LEVEL);
        match decode(START_LEVEL, lock_entry(mem.pte(root, i))) {
            Desc::Table(t) => {
                m.tlbi_vmid();
                retired += lock_table(mem, t, START_LEVEL + 1, at, m, leaf);
                m.retire(t);
                retired += 1;
            }
            Desc::Leaf { pa, .. } => {
                m.tlbi_ipa(Ipa(at), START_LEVEL);
                leaf(Ipa(at), START_LEVEL, pa);
            }
            Desc::Invalid | Desc::Locked => {}
        }
    }
    retired
}
