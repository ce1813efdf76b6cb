//! Stage-2 address spaces as capability objects: VSpaces, table pools, memory regions,
//! frame mappings, the in-kernel guest fault path and QSBR reclamation
//! (`docs/design/stage2.md` states the protocol and its memory ordering).
//!
//! Objects (all retyped from Untyped memory):
//! - **VSpace** (16 KiB): the 8 KiB concatenated stage-2 root, then metadata: its VMID,
//!   its table pool, its memory regions and the threads that run in it.
//! - **TablePool** (`2^n` bytes): page 0 is its accounting (free count, total, a bitmap
//!   of free pages), the other pages are stage-2 tables. Allocation and release are one
//!   atomic bit operation each, so faulting cores never wait on each other here.
//! - **Frame** of any power-of-two size: mapped into a VSpace or the caller's own space
//!   (FRAME_MAP), or bound as a memory region (VSPACE_BIND_REGION): faults inside a
//!   region are resolved here, on the faulting core, without a lock and without leaving
//!   the kernel.
//!
//! Locking: invocations run under the capability lock (they are serialised); the fault
//! path takes no lock at all (walks and installs by compare-and-swap). Unlinked tables
//! are freed only after a QSBR grace period: [`QS`] counts kernel entries and exits per
//! core, and a core spinning for the capability lock counts as outside (it holds no
//! table pointer then: nothing takes that lock in the middle of a walk).

use core::sync::atomic::{AtomicU64, Ordering};

use bulkhead_sys::{map_rights, Error};
use kcore::addr::{Ipa, PhysAddr, PAGE_SIZE};
use kcore::qsbr::{Qsbr, RetireList};
use kcore::stage2::{self, MapError, MemType, Perms, TableAlloc, TableMem};
use kcore::thread::{tcb, ObjMem, State};

use crate::arch::cpu::{self, MAX_CPUS};
use crate::arch::virt;
use crate::mem::{self, atomic_word, IdentityMem};
use crate::sched::{self, KObj};
use crate::sync::SpinLock;

/// Per-core kernel entry/exit counters (odd inside the kernel).
pub static QS: Qsbr<MAX_CPUS> = Qsbr::new();

/// This core entered the kernel (every exception entry from a lower level or idle).
pub fn enter() {
    QS.enter_if_outside(cpu::index());
}

/// This core leaves the kernel (return to a thread, or idle): first reclaim retired
/// tables whose grace period is over.
pub fn exit() {
    if RETIRED_COUNT.load(Ordering::Relaxed) != 0 {
        reclaim();
    }
    QS.exit_if_inside(cpu::index());
}

/// Counts this core as outside the kernel while it spins for the capability lock, if it
/// was inside (returns whether it was).
pub fn pause() -> bool {
    QS.exit_if_inside(cpu::index())
}

/// Undoes [`pause`].
pub fn unpause(was: bool) {
    if was {
        enter();
    }
}

/// Waits until every other core has been outside the kernel since this call began: no
/// walker that could see a table unlinked before the call still holds it.
pub fn synchronize() {
    let mut snap = QS.snapshot();
    snap[cpu::index()] = 0;
    while !QS.expired(&snap) {
        core::hint::spin_loop();
    }
}

/// Tables unlinked by collapse, waiting for their grace period: (table, pool).
static RETIRED: SpinLock<RetireList<(u64, u64), MAX_CPUS, 256>> = SpinLock::new(RetireList::new());
static RETIRED_COUNT: AtomicU64 = AtomicU64::new(0);

fn reclaim() {
    let mut r = RETIRED.lock();
    let n = r.reclaim(&QS, &mut |(t, pool)| release_table(pool, t));
    RETIRED_COUNT.fetch_sub(n as u64, Ordering::Relaxed);
}

fn retire_all(items: &[u64], pool: u64) {
    for &t in items {
        loop {
            let mut r = RETIRED.lock();
            if r.retire(&QS, (t, pool)).is_ok() {
                RETIRED_COUNT.fetch_add(1, Ordering::Relaxed);
                break;
            }
            drop(r);
            // Full: wait for a grace period and free what expired.
            synchronize();
            reclaim();
        }
    }
}

// ---------------------------------------------------------------------------------
// Table pools.

const POOL_FREE: u64 = 0;
const POOL_TOTAL: u64 = 8;
const POOL_READY: u64 = 16;
const POOL_BITMAP: u64 = 64;

/// Prepares a pool's accounting the first time it is used (under the capability lock).
fn pool_init(p: u64, size_bits: u32) {
    if KObj.rd(p + POOL_READY) != 0 {
        return;
    }
    let n = (1u64 << (size_bits - 12)) - 1;
    for w in 0..n.div_ceil(64) {
        let bits = if (w + 1) * 64 <= n {
            u64::MAX
        } else {
            (1u64 << (n % 64)) - 1
        };
        KObj.wr(p + POOL_BITMAP + 8 * w, bits);
    }
    KObj.wr(p + POOL_TOTAL, n);
    atomic_word(p + POOL_FREE).store(n, Ordering::Release);
    KObj.wr(p + POOL_READY, 1);
}

/// (free, total) tables of pool `p`.
pub fn pool_counts(p: u64) -> (u64, u64) {
    (
        atomic_word(p + POOL_FREE).load(Ordering::Acquire),
        KObj.rd(p + POOL_TOTAL),
    )
}

/// Takes a zeroed table from pool `p` (lock-free: one compare-and-swap on a bitmap word).
fn pool_alloc(p: u64) -> Option<PhysAddr> {
    let total = KObj.rd(p + POOL_TOTAL);
    for w in 0..total.div_ceil(64) {
        let word = atomic_word(p + POOL_BITMAP + 8 * w);
        let mut cur = word.load(Ordering::Acquire);
        while cur != 0 {
            let b = cur.trailing_zeros() as u64;
            match word.compare_exchange_weak(
                cur,
                cur & !(1 << b),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    atomic_word(p + POOL_FREE).fetch_sub(1, Ordering::Relaxed);
                    return Some(PhysAddr(p + (w * 64 + b + 1) * PAGE_SIZE));
                }
                Err(now) => cur = now,
            }
        }
    }
    None
}

/// Returns table `t` (zeroed) to pool `p`.
fn pool_free(p: u64, t: u64) {
    let i = (t - p) / PAGE_SIZE - 1;
    atomic_word(p + POOL_BITMAP + 8 * (i / 64)).fetch_or(1 << (i % 64), Ordering::AcqRel);
    atomic_word(p + POOL_FREE).fetch_add(1, Ordering::Relaxed);
}

struct PoolTables(u64);

impl TableAlloc for PoolTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let t = pool_alloc(self.0)?;
        if cfg!(feature = "test-build") {
            // Freed tables hold poison in test builds (see `release_table`).
            mem::zero_page(t);
        }
        // The zeroes (written when the table came back) reach the MMU walkers of all
        // cores before the table can be linked (docs/design/stage2.md, rule 2).
        virt::dsb_ishst();
        Some(t)
    }
    fn free_table(&mut self, table: PhysAddr) {
        pool_free(self.0, table.0)
    }
}

/// Tables of boot tasks' own address spaces come from the kernel's boot-task reserve.
struct FrameTables;

impl TableAlloc for FrameTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        mem::alloc_zeroed()
    }
    fn free_table(&mut self, table: PhysAddr) {
        mem::free(table)
    }
}

// ---------------------------------------------------------------------------------
// VSpaces.

/// Offset of the metadata page in a VSpace object.
const META: u64 = 2 * PAGE_SIZE;
const M_VMID: u64 = META;
const M_POOL: u64 = META + 8;
const M_POOL_BITS: u64 = META + 16;
const M_REGIONS: u64 = META + 0x40;
/// Memory regions per VSpace.
pub const MAX_REGIONS: u64 = 16;
const M_THREADS: u64 = META + 0x400;
/// Threads that may run in one VSpace.
pub const MAX_THREADS: u64 = 64;

const R_IPA: u64 = 0;
const R_SIZE: u64 = 8;
const R_PA: u64 = 16;
const R_FLAGS: u64 = 24;
/// The dirty bitmap's frame while the region's writes are logged (0 = not logged).
const R_BITMAP: u64 = 32;
const R_VALID: u64 = 1 << 63;
/// Writes to the region are logged in its dirty bitmap.
const R_LOG: u64 = 1 << 62;
const R_STRIDE: u64 = 48;

fn region(vs: u64, i: u64) -> u64 {
    vs + M_REGIONS + R_STRIDE * i
}

/// VMIDs of VSpace objects: 64..=255 (boot tasks use 1..=63).
const FIRST_VMID: u64 = 64;
static VMIDS: SpinLock<[u64; 4]> = SpinLock::new([0; 4]);

fn vmid_alloc() -> Option<u64> {
    let mut m = VMIDS.lock();
    for v in FIRST_VMID..256 {
        let (w, b) = ((v / 64) as usize, v % 64);
        if m[w] & (1 << b) == 0 {
            m[w] |= 1 << b;
            return Some(v);
        }
    }
    None
}

/// VMIDs no VSpace holds.
fn vmids_free() -> u64 {
    let m = VMIDS.lock();
    (256 - FIRST_VMID) - m.iter().map(|w| w.count_ones() as u64).sum::<u64>()
}

fn vmid_free(v: u64) {
    VMIDS.lock()[(v / 64) as usize] &= !(1 << (v % 64));
}

/// VTTBR_EL2 of VSpace `vs` (0 when it is not configured).
pub fn vttbr(vs: u64) -> u64 {
    let vmid = KObj.rd(vs + M_VMID);
    if vmid == 0 {
        0
    } else {
        (vmid << 48) | vs
    }
}

fn perms_of(flags: u64) -> Perms {
    Perms {
        read: flags & map_rights::READ != 0,
        write: flags & map_rights::WRITE != 0,
        exec: flags & map_rights::EXEC != 0,
    }
}

/// Guest RAM faults resolved in the kernel (all cores).
pub static FAULTS_RESOLVED: AtomicU64 = AtomicU64::new(0);

#[cfg(feature = "s2-global-lock")]
static BASELINE_LOCK: SpinLock<()> = SpinLock::new(());

/// The in-kernel fault path: a stage-2 translation fault of thread `t` at `ipa`. If the
/// address lies in a bound region of its VSpace, the page is installed (tables from the
/// pool, all by compare-and-swap) and the thread just resumes. Returns false when the
/// fault is not the kernel's to resolve (outside regions, rights, empty pool): it then
/// goes to the VMM.
pub fn resolve_fault(t: u64, ipa: u64, write: bool, exec: bool) -> bool {
    resolve(t, ipa, write, exec, false)
}

/// A stage-2 permission fault of thread `t` at `ipa`: a write to a page that dirty
/// logging write-protected, in a region that allows writes, is logged and the page made
/// writable again (relax first, then mark: see `stage2::relax_write` and the loom model
/// `dirty_fault_racing_harvest_never_loses_a_write`). Anything else goes to the VMM.
pub fn resolve_permission_fault(t: u64, ipa: u64, write: bool) -> bool {
    write && resolve(t, ipa, true, false, true)
}

fn mark_dirty(r: u64, base: u64, page: u64) {
    let bitmap = KObj.rd(r + R_BITMAP);
    if bitmap != 0 {
        let i = (page - base) / PAGE_SIZE;
        atomic_word(bitmap + 8 * (i / 64)).fetch_or(1 << (i % 64), Ordering::AcqRel);
    }
}

fn resolve(t: u64, ipa: u64, write: bool, exec: bool, permission: bool) -> bool {
    let vs = KObj.rd(t + tcb::VSPACE);
    if vs == 0 {
        return false;
    }
    for i in 0..MAX_REGIONS {
        let r = region(vs, i);
        let flags = atomic_word(r + R_FLAGS).load(Ordering::Acquire);
        if flags & R_VALID == 0 {
            continue;
        }
        let (base, size) = (KObj.rd(r + R_IPA), KObj.rd(r + R_SIZE));
        if ipa < base || ipa - base >= size {
            continue;
        }
        let p = perms_of(flags);
        if (write && !p.write) || (exec && !p.exec) || !p.read {
            return false;
        }
        let page = ipa & !(PAGE_SIZE - 1);
        let logging = flags & R_LOG != 0;
        if permission {
            if stage2::relax_write(&IdentityMem, PhysAddr(vs), Ipa(page)) {
                // The read-only entry may still be cached (here or elsewhere).
                virt::tlbi_ipa(vttbr(vs), page);
                if logging {
                    mark_dirty(r, base, page);
                }
            }
            return true;
        }
        let pa = KObj.rd(r + R_PA) + (page - base);
        // While writes are logged, a page faulted in by a read stays read-only, so that
        // its first write faults and is logged.
        let p = Perms {
            write: p.write && (write || !logging),
            ..p
        };
        #[cfg(feature = "s2-global-lock")]
        let _baseline = BASELINE_LOCK.lock();
        let res = stage2::map_page(
            &IdentityMem,
            PhysAddr(vs),
            Ipa(page),
            PhysAddr(pa),
            p,
            MemType::Normal,
            &mut PoolTables(KObj.rd(vs + M_POOL)),
        );
        return match res {
            Ok(()) => {
                // The new entry reaches this core's table walker before the guest runs.
                virt::dsb_ishst();
                if logging && write {
                    mark_dirty(r, base, page);
                }
                FAULTS_RESOLVED.fetch_add(1, Ordering::Relaxed);
                true
            }
            // Another core installed it, or holds the entry: the guest retries.
            Err(MapError::AlreadyMapped | MapError::Locked | MapError::BlockInTheWay) => true,
            Err(MapError::NoMemory | MapError::BadIpa) => false,
        };
    }
    false
}

/// Kernel-side TLB maintenance and retirement for the stage-2 operations of one
/// invocation: unlinked tables go to the retire list of their pool.
struct Maint {
    vttbr: u64,
    pool: u64,
}

impl stage2::Maintenance for Maint {
    fn tlbi_ipa(&mut self, ipa: Ipa, level: u32) {
        if level < 3 {
            // A block may sit in the TLBs as several smaller entries: drop the VMID.
            virt::tlbi_vmid(self.vttbr);
        } else {
            virt::tlbi_ipa(self.vttbr, ipa.0);
        }
    }
    fn tlbi_vmid(&mut self) {
        virt::tlbi_vmid(self.vttbr);
    }
    fn retire(&mut self, table: PhysAddr) {
        // Our own kernel visit holds this snapshot open, so nothing retired here is
        // reclaimed before the operation is over.
        retire_all(&[table.0], self.pool);
    }
}

impl Maint {
    fn new(vttbr: u64, pool: u64) -> Self {
        Maint { vttbr, pool }
    }
}

const VALID_BIT: u64 = 1;
const TABLE_BIT: u64 = 2;
const OA: u64 = 0x0000_ffff_ffff_f000;

/// Locks every entry below `table` (level `level`, `n` entries): each becomes invalid
/// with the LOCKED bit, keeping its address and type bits so that [`free_locked`] can
/// find the tables again after the grace period.
fn lock_subtree(table: u64, level: u32, n: usize) {
    for i in 0..n {
        let pte = IdentityMem.pte(PhysAddr(table), i);
        // One atomic step, so that no installer can slip in while the entry is neither
        // valid nor locked.
        let d = pte
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                Some((d & !VALID_BIT) | stage2::LOCKED)
            })
            .unwrap_or_else(|d| d);
        if level < 3 && d & (VALID_BIT | TABLE_BIT) == VALID_BIT | TABLE_BIT {
            lock_subtree(d & OA, level + 1, stage2::ENTRIES);
        }
    }
}

/// Gives every table below `table` (locked by [`lock_subtree`]) back to `pool`, zeroed.
fn free_locked(table: u64, level: u32, n: usize, pool: u64, freed: &mut u64) {
    for i in 0..n {
        let pte = IdentityMem.pte(PhysAddr(table), i);
        let d = pte.swap(0, Ordering::AcqRel);
        if level < 3 && d & stage2::LOCKED != 0 && d & TABLE_BIT != 0 && d & OA != 0 {
            free_locked(d & OA, level + 1, stage2::ENTRIES, pool, freed);
            release_table(pool, d & OA);
            *freed += 1;
        }
    }
}

/// Puts a table page back into its pool (zeroed; poisoned first in test builds, so that
/// a walker that could still reach it would fault loudly in the kernel).
fn release_table(pool: u64, t: u64) {
    if cfg!(feature = "test-build") {
        mem::fill_page(PhysAddr(t), POISON);
    } else {
        mem::zero_page(PhysAddr(t));
    }
    pool_free(pool, t);
}

/// What a freed table holds in test builds: a valid table descriptor pointing outside
/// RAM and outside the 40-bit output range, so a kernel walker that followed it would
/// take a translation fault at EL2 (a reported kernel exception) and a guest's MMU an
/// address-size fault (which its VMM reports): reuse before the grace period is loud.
const POISON: u64 = 0x0000_ad00_dead_0003;

/// Unlinks everything of configured VSpace `vs` and gives its tables back to its pool
/// after a grace period; the VSpace becomes unconfigured (its threads are stopped and
/// lose it, its regions and mappings are gone, its VMID is free).
fn teardown(vs: u64) {
    let vt = vttbr(vs);
    if vt == 0 {
        return;
    }
    for i in 0..MAX_THREADS {
        let t = KObj.rd(vs + M_THREADS + 8 * i);
        if t != 0 {
            sched::stop(t, Error::Aborted as u64);
            KObj.wr(t + tcb::VTTBR, 0);
            KObj.wr(t + tcb::VSPACE, 0);
            KObj.wr(vs + M_THREADS + 8 * i, 0);
        }
    }
    for i in 0..MAX_REGIONS {
        atomic_word(region(vs, i) + R_FLAGS).store(0, Ordering::Release);
    }
    MAPS.lock().retain(|m| m.space != vs);
    let pool = KObj.rd(vs + M_POOL);
    lock_subtree(vs, stage2::START_LEVEL, stage2::ROOT_ENTRIES);
    virt::tlbi_vmid(vt);
    // Walkers that loaded an entry before the locks may still read the tables.
    synchronize();
    let mut freed = 0;
    free_locked(
        vs,
        stage2::START_LEVEL,
        stage2::ROOT_ENTRIES,
        pool,
        &mut freed,
    );
    defmt::debug!("VSpace {=u64:#x} torn down: {=u64} tables back", vs, freed);
    vmid_free(KObj.rd(vs + M_VMID));
    KObj.wr(vs + M_VMID, 0);
    KObj.wr(vs + M_POOL, 0);
    SPACES.lock().retain(|&s| s != vs);
}

/// Configured VSpaces (to find those using a pool that goes away).
static SPACES: SpinLock<heapless::Vec<u64, 64>> = SpinLock::new(heapless::Vec::new());

/// A frame's mapping or region binding.
#[derive(Clone, Copy)]
struct Mapping {
    frame: u64,
    size: u64,
    /// The VSpace object (0: a boot task's own space).
    space: u64,
    vttbr: u64,
    ipa: u64,
    /// Region index + 1 (0: a plain mapping).
    region: u64,
    /// The frame is that region's dirty bitmap, not mapped anywhere.
    bitmap: bool,
}

static MAPS: SpinLock<heapless::Vec<Mapping, 128>> = SpinLock::new(heapless::Vec::new());

/// True if physical page `pa` belongs to a frame mapped by FRAME_MAP (so a boot task's
/// teardown must not free it).
pub fn is_mapped_frame(pa: u64) -> bool {
    MAPS.lock()
        .iter()
        .any(|m| m.region == 0 && pa >= m.frame && pa - m.frame < m.size)
}

fn unmap_mapping(m: &Mapping) {
    if m.bitmap {
        let r = region(m.space, m.region - 1);
        atomic_word(r + R_FLAGS).fetch_and(!R_LOG, Ordering::AcqRel);
        // No fault handler still writes into the bitmap after this.
        synchronize();
        KObj.wr(r + R_BITMAP, 0);
        return;
    }
    if m.region != 0 {
        atomic_word(region(m.space, m.region - 1) + R_FLAGS).store(0, Ordering::Release);
        // No fault handler still acts on the region after this.
        synchronize();
        KObj.wr(region(m.space, m.region - 1) + R_BITMAP, 0);
        let _ = take_mapping(|x| x.bitmap && x.space == m.space && x.region == m.region);
    }
    let root = PhysAddr(m.vttbr & 0x0000_ffff_ffff_fffe);
    let mut mt = Maint::new(m.vttbr, 0);
    // Leaves only (tables stay linked); a leaf locked by a concurrent fault handler is
    // only ever briefly locked, so retry.
    while let Err(stage2::UnmapError::Locked) =
        stage2::unmap_range(&IdentityMem, root, Ipa(m.ipa), m.size, &mut mt)
    {
        core::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------------
// Invocations (all under the capability lock).

/// VSPACE_CONFIGURE.
/// Returns the VMID given and how many are still free.
pub fn configure(vs: u64, pool: u64, pool_bits: u32) -> Result<[u64; 2], Error> {
    if KObj.rd(vs + M_VMID) != 0 {
        return Err(Error::IllegalOperation);
    }
    pool_init(pool, pool_bits);
    let mut spaces = SPACES.lock();
    if spaces.is_full() {
        return Err(Error::NotEnoughMemory);
    }
    let vmid = vmid_alloc().ok_or(Error::NotEnoughMemory)?;
    let _ = spaces.push(vs);
    KObj.wr(vs + M_POOL, pool);
    KObj.wr(vs + M_POOL_BITS, pool_bits as u64);
    KObj.wr(vs + M_VMID, vmid);
    drop(spaces);
    Ok([vmid, vmids_free()])
}

/// TCB_SET_SPACE: thread `t` (inactive) runs in `vs` from now on.
pub fn set_space(t: u64, vs: u64) -> Result<(), Error> {
    let vt = vttbr(vs);
    if vt == 0 {
        return Err(Error::IllegalOperation);
    }
    let slot = (0..MAX_THREADS)
        .find(|i| KObj.rd(vs + M_THREADS + 8 * i) == 0)
        .ok_or(Error::NotEnoughMemory)?;
    leave_space(t);
    KObj.wr(vs + M_THREADS + 8 * slot, t);
    KObj.wr(t + tcb::VTTBR, vt);
    KObj.wr(t + tcb::VSPACE, vs);
    Ok(())
}

fn leave_space(t: u64) {
    let old = KObj.rd(t + tcb::VSPACE);
    if old != 0 {
        for i in 0..MAX_THREADS {
            if KObj.rd(old + M_THREADS + 8 * i) == t {
                KObj.wr(old + M_THREADS + 8 * i, 0);
            }
        }
        KObj.wr(t + tcb::VSPACE, 0);
    }
}

fn check_rights(map: u64, cap_rights: u8) -> Result<Perms, Error> {
    use bulkhead_sys::cap::rights;
    if map & !map_rights::RWX != 0 || map & map_rights::READ == 0 {
        return Err(Error::InvalidArgument);
    }
    if map & map_rights::WRITE != 0 && cap_rights & rights::WRITE == 0 {
        return Err(Error::InvalidCapability);
    }
    if cap_rights & rights::READ == 0 {
        return Err(Error::InvalidCapability);
    }
    Ok(perms_of(map))
}

/// True if a mapping or region of the address space `vttbr` overlaps `[ipa, ipa+size)`
/// (regions and mappings never share IPAs, so unmapping one never touches another).
fn overlaps_mapping(vttbr: u64, ipa: u64, size: u64) -> bool {
    MAPS.lock()
        .iter()
        .any(|m| !m.bitmap && m.vttbr == vttbr && ipa < m.ipa + m.size && m.ipa < ipa + size)
}

/// VSPACE_LOG_DIRTY: from now on, the first write to each page of the region at `base`
/// sets its bit in `bitmap` (a frame of at least one bit per page); every page is
/// write-protected now (again, when logging is on already: after the VMM harvested the
/// bitmap). `bitmap == 0` stops logging (pages become writable again as they are
/// written). Returns the pages write-protected.
pub fn log_dirty(vs: u64, base: u64, bitmap: Option<(u64, u32)>) -> Result<u64, Error> {
    let vt = vttbr(vs);
    if vt == 0 {
        return Err(Error::IllegalOperation);
    }
    let i = (0..MAX_REGIONS)
        .find(|&i| {
            let r = region(vs, i);
            KObj.rd(r + R_FLAGS) & R_VALID != 0 && KObj.rd(r + R_IPA) == base
        })
        .ok_or(Error::InvalidArgument)?;
    let r = region(vs, i);
    let size = KObj.rd(r + R_SIZE);
    let Some((frame, bits)) = bitmap else {
        if let Some(m) = take_mapping(|m| m.bitmap && m.space == vs && m.region == i + 1) {
            unmap_mapping(&m);
        }
        return Ok(0);
    };
    if (1u64 << bits) * 8 < size / PAGE_SIZE {
        return Err(Error::RangeError);
    }
    let current = KObj.rd(r + R_BITMAP);
    if current != 0 && current != frame {
        return Err(Error::DeleteFirst);
    }
    if current == 0 {
        MAPS.lock()
            .push(Mapping {
                frame,
                size: 1 << bits,
                space: vs,
                vttbr: vt,
                ipa: base,
                region: i + 1,
                bitmap: true,
            })
            .map_err(|_| Error::NotEnoughMemory)?;
        KObj.wr(r + R_BITMAP, frame);
        atomic_word(r + R_FLAGS).fetch_or(R_LOG, Ordering::AcqRel);
    }
    let mut mt = Maint::new(vt, KObj.rd(vs + M_POOL));
    loop {
        match stage2::write_protect_range(&IdentityMem, PhysAddr(vs), Ipa(base), size, &mut mt) {
            Ok(n) => return Ok(n as u64),
            Err(stage2::UnmapError::Locked) => core::hint::spin_loop(),
            Err(stage2::UnmapError::BlockInTheWay) => return Err(Error::IllegalOperation),
            Err(_) => return Err(Error::InvalidArgument),
        }
    }
}

/// Where a frame of `2^size_bits` bytes may go at `ipa` of the address space `vttbr`:
/// aligned to its size, inside the IPA range, not there yet, over nothing else. Returns
/// its size.
fn check_placement(frame: u64, size_bits: u32, vttbr: u64, ipa: u64) -> Result<u64, Error> {
    let size = 1u64 << size_bits;
    if !ipa.is_multiple_of(size) {
        return Err(Error::AlignmentError);
    }
    if ipa
        .checked_add(size)
        .is_none_or(|end| end > 1 << stage2::IPA_BITS)
    {
        return Err(Error::RangeError);
    }
    if frame_in_use(frame, vttbr) || overlaps_mapping(vttbr, ipa, size) {
        return Err(Error::DeleteFirst);
    }
    Ok(size)
}

/// True if `frame` is already mapped into the address space `vttbr` (a frame may be
/// mapped once into each address space).
fn frame_in_use(frame: u64, vttbr: u64) -> bool {
    MAPS.lock()
        .iter()
        .any(|m| m.frame == frame && m.vttbr == vttbr)
}

/// VSPACE_BIND_REGION.
pub fn bind_region(
    vs: u64,
    frame: u64,
    size_bits: u32,
    cap_rights: u8,
    ipa: u64,
    map: u64,
) -> Result<(), Error> {
    let vt = vttbr(vs);
    if vt == 0 {
        return Err(Error::IllegalOperation);
    }
    check_rights(map, cap_rights)?;
    let size = check_placement(frame, size_bits, vt, ipa)?;
    let mut free = None;
    for i in 0..MAX_REGIONS {
        let r = region(vs, i);
        if KObj.rd(r + R_FLAGS) & R_VALID == 0 {
            free = free.or(Some(i));
            continue;
        }
        let (b, s) = (KObj.rd(r + R_IPA), KObj.rd(r + R_SIZE));
        if ipa < b + s && b < ipa + size {
            return Err(Error::DeleteFirst);
        }
    }
    let i = free.ok_or(Error::NotEnoughMemory)?;
    let mut maps = MAPS.lock();
    maps.push(Mapping {
        frame,
        size,
        space: vs,
        vttbr: vt,
        ipa,
        region: i + 1,
        bitmap: false,
    })
    .map_err(|_| Error::NotEnoughMemory)?;
    let r = region(vs, i);
    KObj.wr(r + R_IPA, ipa);
    KObj.wr(r + R_SIZE, size);
    KObj.wr(r + R_PA, frame);
    KObj.wr(r + R_BITMAP, 0);
    // Publishes the fields above to fault handlers that see the flags.
    atomic_word(r + R_FLAGS).store(R_VALID | map, Ordering::Release);
    Ok(())
}

fn region_at(vs: u64, ipa: u64, span: u64) -> Option<(u64, u64)> {
    (0..MAX_REGIONS).find_map(|i| {
        let r = region(vs, i);
        let f = KObj.rd(r + R_FLAGS);
        let (b, s) = (KObj.rd(r + R_IPA), KObj.rd(r + R_SIZE));
        (f & R_VALID != 0 && ipa >= b && ipa - b + span <= s)
            .then(|| (KObj.rd(r + R_PA) + (ipa - b), f))
    })
}

/// VSPACE_UNMAP_RANGE: returns the number of leaves removed.
pub fn unmap_range(vs: u64, ipa: u64, len: u64) -> Result<u64, Error> {
    let vt = vttbr(vs);
    if vt == 0 {
        return Err(Error::IllegalOperation);
    }
    let mut mt = Maint::new(vt, KObj.rd(vs + M_POOL));
    stage2::unmap_range(&IdentityMem, PhysAddr(vs), Ipa(ipa), len, &mut mt)
        .map(|n| n as u64)
        .map_err(|e| match e {
            stage2::UnmapError::BadIpa => Error::AlignmentError,
            stage2::UnmapError::NotMapped => Error::InvalidArgument,
            stage2::UnmapError::BlockInTheWay => Error::IllegalOperation,
            stage2::UnmapError::Locked => Error::Busy,
        })
}

fn span(level: u64) -> Option<u64> {
    match level {
        1 => Some(1 << 30),
        2 => Some(1 << 21),
        _ => None,
    }
}

/// VSPACE_COLLAPSE.
pub fn collapse(vs: u64, ipa: u64, level: u64) -> Result<(), Error> {
    let vt = vttbr(vs);
    if vt == 0 {
        return Err(Error::IllegalOperation);
    }
    let sp = span(level).ok_or(Error::RangeError)?;
    if !ipa.is_multiple_of(sp) {
        return Err(Error::AlignmentError);
    }
    let (pa, flags) = region_at(vs, ipa, sp).ok_or(Error::InvalidArgument)?;
    let pool = KObj.rd(vs + M_POOL);
    let mut mt = Maint::new(vt, pool);
    let r = stage2::collapse(
        &IdentityMem,
        PhysAddr(vs),
        Ipa(ipa),
        level as u32,
        PhysAddr(pa),
        perms_of(flags),
        MemType::Normal,
        &mut mt,
    );
    match r {
        Ok(()) => Ok(()),
        // Nothing mapped on the way yet: install the block, with the tables above it.
        Err(stage2::CollapseError::NoTable) => stage2::map_leaf(
            &IdentityMem,
            PhysAddr(vs),
            Ipa(ipa),
            level as u32,
            PhysAddr(pa),
            perms_of(flags),
            MemType::Normal,
            &mut PoolTables(pool),
        )
        .map_err(|e| match e {
            MapError::NoMemory => Error::NotEnoughMemory,
            MapError::Locked | MapError::AlreadyMapped => Error::Busy,
            _ => Error::IllegalOperation,
        }),
        Err(stage2::CollapseError::Locked) => Err(Error::Busy),
        Err(_) => Err(Error::IllegalOperation),
    }
}

/// VSPACE_SPLIT.
pub fn split(vs: u64, ipa: u64, level: u64) -> Result<(), Error> {
    let vt = vttbr(vs);
    if vt == 0 {
        return Err(Error::IllegalOperation);
    }
    let sp = span(level).ok_or(Error::RangeError)?;
    if !ipa.is_multiple_of(sp) {
        return Err(Error::AlignmentError);
    }
    let mut mt = Maint::new(vt, KObj.rd(vs + M_POOL));
    stage2::split(
        &IdentityMem,
        PhysAddr(vs),
        Ipa(ipa),
        level as u32,
        &mut PoolTables(KObj.rd(vs + M_POOL)),
        &mut mt,
    )
    .map_err(|e| match e {
        stage2::SplitError::Locked => Error::Busy,
        stage2::SplitError::NoMemory => Error::NotEnoughMemory,
        stage2::SplitError::BadIpa => Error::AlignmentError,
        _ => Error::IllegalOperation,
    })
}

/// FRAME_MAP into VSpace `vs` (0: the caller's own boot-task space `own_vttbr`).
pub fn map_frame(
    frame: u64,
    size_bits: u32,
    cap_rights: u8,
    vs: u64,
    own_vttbr: u64,
    ipa: u64,
    arg: u64,
) -> Result<(), Error> {
    let p = check_rights(arg & 0xff, cap_rights)?;
    let ty = match arg >> 8 {
        0 => MemType::Normal,
        1 => MemType::Device,
        _ => return Err(Error::InvalidArgument),
    };
    let vt = if vs != 0 { vttbr(vs) } else { own_vttbr };
    if vt == 0 {
        return Err(Error::IllegalOperation);
    }
    let size = check_placement(frame, size_bits, vt, ipa)?;
    let m = Mapping {
        frame,
        size,
        space: vs,
        vttbr: vt,
        ipa,
        region: 0,
        bitmap: false,
    };
    MAPS.lock().push(m).map_err(|_| Error::NotEnoughMemory)?;
    let root = PhysAddr(vt & 0x0000_ffff_ffff_fffe);
    let mut pool = PoolTables(if vs != 0 { KObj.rd(vs + M_POOL) } else { 0 });
    for off in (0..size).step_by(PAGE_SIZE as usize) {
        let tables: &mut dyn TableAlloc = if vs != 0 { &mut pool } else { &mut FrameTables };
        let r = stage2::map_page(
            &IdentityMem,
            root,
            Ipa(ipa + off),
            PhysAddr(frame + off),
            p,
            ty,
            tables,
        );
        if let Err(e) = r {
            unmap_mapping(&Mapping { size: off, ..m });
            MAPS.lock()
                .retain(|x| !(x.frame == frame && x.vttbr == vt && x.region == 0));
            return Err(match e {
                MapError::NoMemory => Error::NotEnoughMemory,
                MapError::Locked => Error::Busy,
                _ => Error::DeleteFirst,
            });
        }
    }
    virt::dsb_ishst();
    Ok(())
}

/// Takes the first mapping `f` selects out of the registry.
fn take_mapping(f: impl Fn(&Mapping) -> bool) -> Option<Mapping> {
    let mut maps = MAPS.lock();
    let i = maps.iter().position(f)?;
    Some(maps.swap_remove(i))
}

/// FRAME_UNMAP: every mapping of the frame made by FRAME_MAP goes.
pub fn unmap_frame(frame: u64) -> Result<(), Error> {
    let mut any = false;
    while let Some(m) = take_mapping(|m| m.frame == frame && m.region == 0) {
        unmap_mapping(&m);
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(Error::InvalidArgument)
    }
}

/// Unmaps every frame mapped into the boot-task space with root `root` (before that
/// space is torn down).
pub fn forget_own_space(root: u64) {
    while let Some(m) = take_mapping(|m| m.space == 0 && m.vttbr & 0x0000_ffff_ffff_fffe == root) {
        unmap_mapping(&m);
    }
}

/// POOL_INFO.
pub fn pool_info(p: u64, bits: u32) -> [u64; 2] {
    pool_init(p, bits);
    let (free, total) = pool_counts(p);
    [free, total]
}

/// VCPU_BIND_TCB.
pub fn bind_vcpu(v: u64, t: u64) -> Result<(), Error> {
    if crate::vcpu::bound(v) != 0 || crate::vcpu::of(t) != 0 {
        return Err(Error::DeleteFirst);
    }
    if kcore::thread::state(&KObj, t) != State::Inactive {
        return Err(Error::IllegalOperation);
    }
    if KObj.rd(v + 0x10) == 0 {
        crate::vcpu::init(v, 0);
    }
    crate::vcpu::bind(v, t);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Destruction (the last capability of an object went; capability lock held).

/// A VSpace object is destroyed.
pub fn vspace_destroyed(vs: u64) {
    teardown(vs);
}

/// A table pool is destroyed: every VSpace drawing from it is torn down first, and every
/// retired table of it is reclaimed before its memory can be reused.
pub fn pool_destroyed(p: u64) {
    let users: heapless::Vec<u64, 64> = SPACES
        .lock()
        .iter()
        .copied()
        .filter(|&vs| KObj.rd(vs + M_POOL) == p)
        .collect();
    for vs in users {
        teardown(vs);
    }
    if RETIRED_COUNT.load(Ordering::Relaxed) != 0 {
        synchronize();
        reclaim();
    }
}

/// A frame is destroyed: its mappings and region bindings go first.
pub fn frame_destroyed(frame: u64) {
    while let Some(m) = take_mapping(|m| m.frame == frame) {
        unmap_mapping(&m);
    }
}

/// A VCPU is destroyed: its thread stops and loses it.
pub fn vcpu_destroyed(v: u64) {
    let t = crate::vcpu::bound(v);
    if t != 0 {
        sched::stop(t, Error::Aborted as u64);
    }
    crate::vcpu::unbind(v);
}

/// A TCB is destroyed: it leaves its VSpace and its VCPU.
pub fn tcb_destroyed(t: u64) {
    leave_space(t);
    let v = crate::vcpu::of(t);
    if v != 0 {
        crate::vcpu::unbind(v);
    }
}
