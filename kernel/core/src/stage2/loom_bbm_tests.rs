//! Model checks of break-before-make against concurrent faults and walkers
//! (`RUSTFLAGS="--cfg loom" cargo test -p kcore --lib --release loom`).
//!
//! Under loom, whole-table scans visit two entries per table (`scan_entries`), so every
//! IPA here has indices 0 or 1 at every level, and the memory holds exactly those entries:
//! a walk into anything else (a poisoned descriptor) panics.

use super::*;
use crate::qsbr::{Qsbr, RetireList};
use loom::sync::Arc;
use loom::thread;
use std::collections::HashMap;

const ROOT: PhysAddr = PhysAddr(0x10_0000);
const T2: PhysAddr = PhysAddr(0x20_0000);
const T3: PhysAddr = PhysAddr(0x30_0000);
const T3B: PhysAddr = PhysAddr(0x31_0000);
const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;
/// Indices (0, 0, 1).
const PAGE: Ipa = Ipa(0x1000);
/// Indices (0, 1, 1).
const NEXT_PAGE: Ipa = Ipa(MIB2 + 0x1000);
/// Written into reclaimed tables: a table descriptor into memory that does not exist at
/// level 2, a page at level 3.
const POISON: u64 = 0x0000_dead_dead_0003;

/// Entries 0 and 1 of each of `tables`.
struct Mem(HashMap<(u64, usize), AtomicU64>);
impl Mem {
    fn new(tables: &[PhysAddr]) -> Self {
        let mut m = HashMap::new();
        for t in tables {
            for i in 0..2 {
                m.insert((t.0, i), AtomicU64::new(0));
            }
        }
        Mem(m)
    }
    /// Sets an entry before the model's threads start.
    fn set(&self, t: PhysAddr, i: usize, v: u64) {
        self.pte(t, i).store(v, Ordering::Relaxed);
    }
    fn all_locked(&self, t: PhysAddr) -> bool {
        (0..2).all(|i| self.pte(t, i).load(Ordering::Relaxed) == LOCKED)
    }
}
impl TableMem for Mem {
    fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
        self.0
            .get(&(table.0, index))
            .unwrap_or_else(|| panic!("walked into {table:?}[{index}]: not a live table"))
    }
}

/// Tables to hand out, and those given back.
struct Pool(Vec<PhysAddr>, Vec<PhysAddr>);
impl TableAlloc for Pool {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.0.pop()
    }
    fn free_table(&mut self, t: PhysAddr) {
        self.1.push(t)
    }
}

/// Records invalidations and retirements.
#[derive(Default)]
struct Rec {
    tlbi: Vec<(Option<Ipa>, u32)>,
    retired: Vec<PhysAddr>,
}
impl Maintenance for Rec {
    fn tlbi_ipa(&mut self, ipa: Ipa, level: u32) {
        self.tlbi.push((Some(ipa), level));
    }
    fn tlbi_vmid(&mut self) {
        self.tlbi.push((None, 0));
    }
    fn retire(&mut self, table: PhysAddr) {
        self.retired.push(table);
    }
}

fn pa_at(m: &Mem, ipa: Ipa) -> Option<u64> {
    translate(m, ROOT, ipa).map(|(pa, _)| pa.0)
}

fn fault(m: &Mem, ipa: Ipa, pa: u64, pool: &mut Pool) -> Result<(), MapError> {
    map_page(m, ROOT, ipa, PhysAddr(pa), Perms::RW, MemType::Normal, pool)
}

fn count(v: &[PhysAddr], t: PhysAddr) -> usize {
    v.iter().filter(|&&x| x == t).count()
}

/// (b) A fault that needs a level-3 table races the collapse of the 1 GiB subtree it walks
/// into. Whatever the interleaving: the block is the final state, the fault either
/// finished (into the subtree, which the block then replaced) or backed off, its table is
/// exactly once unused, freed or retired, every retired table is entirely LOCKED (nothing
/// was linked into it after it was cut off), and the collapse retired T2 once.
#[test]
fn fault_racing_collapse_of_its_subtree() {
    loom::model(|| {
        let m = Arc::new(Mem::new(&[ROOT, T2, T3]));
        m.set(ROOT, 0, table_desc(T2));
        let t = {
            let m = m.clone();
            thread::spawn(move || {
                let mut p = Pool(vec![T3], vec![]);
                let r = fault(&m, PAGE, 0xa000, &mut p);
                (r, p)
            })
        };
        let mut rec = Rec::default();
        let c = collapse(
            &*m,
            ROOT,
            Ipa(0),
            1,
            PhysAddr(GIB),
            Perms::RW,
            MemType::Normal,
            &mut rec,
        );
        let (r, p) = t.join().unwrap();
        assert_eq!(c, Ok(()));
        // Locked: it met the broken entry; BlockInTheWay: it walked after the make.
        assert!(
            matches!(r, Ok(()) | Err(MapError::Locked | MapError::BlockInTheWay)),
            "{r:?}"
        );
        assert_eq!(pa_at(&m, PAGE), Some(GIB + 0x1000));
        assert_eq!(count(&rec.retired, T2), 1);
        assert_eq!(
            count(&p.0, T3) + count(&p.1, T3) + count(&rec.retired, T3),
            1,
            "T3 leaked or handed back twice: {:?} {:?} {:?}",
            p.0,
            p.1,
            rec.retired
        );
        if r.is_ok() {
            assert_eq!(count(&rec.retired, T3), 1, "a linked table was not retired");
        }
        for t in &rec.retired {
            assert!(m.all_locked(*t), "{t:?} not entirely locked");
        }
        assert_eq!(rec.tlbi, vec![(None, 0)]);
    });
}

/// A fault next to a collapse (same level-2 table, neighbouring entry) keeps its mapping.
#[test]
fn fault_next_to_a_collapse_keeps_its_mapping() {
    loom::model(|| {
        let m = Arc::new(Mem::new(&[ROOT, T2, T3, T3B]));
        m.set(ROOT, 0, table_desc(T2));
        m.set(T2, 1, table_desc(T3B));
        m.set(
            T3B,
            1,
            leaf_desc(3, PhysAddr(0xb000), Perms::RW, MemType::Normal),
        );
        let t = {
            let m = m.clone();
            thread::spawn(move || fault(&m, PAGE, 0xa000, &mut Pool(vec![T3], vec![])))
        };
        let mut rec = Rec::default();
        collapse(
            &*m,
            ROOT,
            Ipa(MIB2),
            2,
            PhysAddr(GIB),
            Perms::RW,
            MemType::Normal,
            &mut rec,
        )
        .unwrap();
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(pa_at(&m, PAGE), Some(0xa000));
        assert_eq!(pa_at(&m, NEXT_PAGE), Some(GIB + 0x1000));
        assert_eq!(rec.retired, vec![T3B]);
    });
}

/// A collapse meets a leaf that an unmap inside the subtree holds LOCKED between its break
/// and make: it waits, then locks it. Exactly one of the two owns the old page.
#[test]
fn collapse_waits_for_an_unmap_inside_its_subtree() {
    loom::model(|| {
        let m = Arc::new(Mem::new(&[ROOT, T2, T3]));
        m.set(ROOT, 0, table_desc(T2));
        m.set(T2, 0, table_desc(T3));
        m.set(
            T3,
            1,
            leaf_desc(3, PhysAddr(0xa000), Perms::RW, MemType::Normal),
        );
        let t = {
            let m = m.clone();
            thread::spawn(move || unmap_page(&*m, ROOT, PAGE, &mut |_| {}))
        };
        let mut rec = Rec::default();
        let mut gone = Vec::new();
        collapse_with(
            &*m,
            ROOT,
            Ipa(0),
            1,
            PhysAddr(GIB),
            Perms::RW,
            MemType::Normal,
            &mut rec,
            &mut |ipa, l, pa| gone.push((ipa, l, pa)),
        )
        .unwrap();
        let u = t.join().unwrap();
        match u {
            Ok(pa) => {
                assert_eq!(pa, PhysAddr(0xa000));
                assert!(gone.is_empty(), "the page went twice");
            }
            // It met a broken entry, or walked after the make.
            Err(UnmapError::Locked | UnmapError::BlockInTheWay) => {
                assert_eq!(gone, vec![(PAGE, 3, PhysAddr(0xa000))], "the page was lost")
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert_eq!(rec.retired, vec![T3, T2]);
        assert!(m.all_locked(T2) && m.all_locked(T3));
        assert_eq!(pa_at(&m, PAGE), Some(GIB + 0x1000));
    });
}

/// A collapse of a level-2 subtree inside a 1 GiB subtree that another core collapses at
/// the same time: each table is retired exactly once, by whichever owns it.
#[test]
fn nested_collapses_retire_each_table_once() {
    loom::model(|| {
        let m = Arc::new(Mem::new(&[ROOT, T2, T3]));
        m.set(ROOT, 0, table_desc(T2));
        m.set(T2, 0, table_desc(T3));
        m.set(
            T3,
            1,
            leaf_desc(3, PhysAddr(0xa000), Perms::RW, MemType::Normal),
        );
        let t = {
            let m = m.clone();
            thread::spawn(move || {
                let mut rec = Rec::default();
                let r = collapse(
                    &*m,
                    ROOT,
                    Ipa(0),
                    2,
                    PhysAddr(2 * GIB),
                    Perms::RW,
                    MemType::Normal,
                    &mut rec,
                );
                (r, rec.retired)
            })
        };
        let mut rec = Rec::default();
        collapse(
            &*m,
            ROOT,
            Ipa(0),
            1,
            PhysAddr(GIB),
            Perms::RW,
            MemType::Normal,
            &mut rec,
        )
        .unwrap();
        let (r, inner) = t.join().unwrap();
        match r {
            Ok(()) => assert_eq!(inner, vec![T3]),
            Err(CollapseError::Locked | CollapseError::BlockInTheWay) => {
                assert!(inner.is_empty())
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert_eq!(count(&rec.retired, T2), 1);
        assert_eq!(count(&rec.retired, T3) + count(&inner, T3), 1);
        assert_eq!(pa_at(&m, PAGE), Some(GIB + 0x1000));
    });
}

/// A fault inside a 2 MiB block that is being split: the fault sees the block, the locked
/// entry or the new page, never installs anything, and the translation is the same after.
#[test]
fn fault_racing_split_of_its_block() {
    loom::model(|| {
        let m = Arc::new(Mem::new(&[ROOT, T2, T3]));
        m.set(ROOT, 0, table_desc(T2));
        m.set(
            T2,
            1,
            leaf_desc(2, PhysAddr(GIB), Perms::RX, MemType::Normal),
        );
        let t = {
            let m = m.clone();
            thread::spawn(move || {
                let seen = pa_at(&m, NEXT_PAGE);
                (
                    seen,
                    fault(&m, NEXT_PAGE, 0xa000, &mut Pool(vec![], vec![])),
                )
            })
        };
        let mut rec = Rec::default();
        split(
            &*m,
            ROOT,
            NEXT_PAGE,
            2,
            &mut Pool(vec![T3], vec![]),
            &mut rec,
        )
        .unwrap();
        let (seen, r) = t.join().unwrap();
        assert!(matches!(seen, None | Some(0x4000_1000)), "{seen:?}");
        assert!(
            matches!(
                r,
                Err(MapError::BlockInTheWay | MapError::Locked | MapError::AlreadyMapped)
            ),
            "{r:?}"
        );
        assert_eq!(
            translate(&*m, ROOT, NEXT_PAGE),
            Some((PhysAddr(GIB + 0x1000), Perms::RX))
        );
        assert_eq!(pa_at(&m, Ipa(MIB2)), Some(GIB));
        assert_eq!(rec.tlbi, vec![(Some(Ipa(MIB2)), 2)]);
    });
}

/// (a) for ranges: a fault races a range unmap covering its page.
#[test]
fn fault_racing_unmap_range() {
    loom::model(|| {
        let m = Arc::new(Mem::new(&[ROOT, T2, T3]));
        m.set(ROOT, 0, table_desc(T2));
        m.set(T2, 0, table_desc(T3));
        m.set(
            T3,
            1,
            leaf_desc(3, PhysAddr(0xa000), Perms::RW, MemType::Normal),
        );
        let t = {
            let m = m.clone();
            thread::spawn(move || fault(&m, PAGE, 0xb000, &mut Pool(vec![], vec![])))
        };
        let mut rec = Rec::default();
        let n = unmap_range(&*m, ROOT, Ipa(0), MIB2, &mut rec);
        let f = t.join().unwrap();
        assert_eq!(n, Ok(1), "the range unmap owns the old page");
        assert_eq!(rec.tlbi, vec![(Some(PAGE), 3)]);
        match f {
            Ok(()) => assert_eq!(pa_at(&m, PAGE), Some(0xb000)),
            Err(MapError::AlreadyMapped | MapError::Locked) => assert_eq!(pa_at(&m, PAGE), None),
            Err(e) => panic!("unexpected {e:?}"),
        }
    });
}

/// Maintenance of a core that retires into its QSBR list.
struct QsbrMaint<'a> {
    q: &'a Qsbr<2>,
    list: &'a mut RetireList<PhysAddr, 2, 2>,
}
impl Maintenance for QsbrMaint<'_> {
    fn tlbi_ipa(&mut self, _: Ipa, _: u32) {}
    fn tlbi_vmid(&mut self) {}
    fn retire(&mut self, table: PhysAddr) {
        self.list.retire(self.q, table).unwrap();
    }
}

/// (c) A walker (core 1, inside a kernel visit) translates through a subtree while core 0
/// collapses it, retires its tables, waits for their grace period and reuses them
/// (poisoning every entry). The walker sees the old page, nothing, or the block: never
/// poison (a poisoned level-2 entry would send it into memory that does not exist and
/// panic; a poisoned level-3 entry would translate to the poison's address).
#[test]
fn walker_racing_retirement_never_reads_poison() {
    loom::model(|| {
        let w = Arc::new((Mem::new(&[ROOT, T2, T3]), Qsbr::<2>::new()));
        w.0.set(ROOT, 0, table_desc(T2));
        w.0.set(T2, 0, table_desc(T3));
        w.0.set(
            T3,
            1,
            leaf_desc(3, PhysAddr(0xa000), Perms::RW, MemType::Normal),
        );
        let walker = {
            let w = w.clone();
            thread::spawn(move || {
                w.1.enter(1);
                let r = pa_at(&w.0, PAGE);
                w.1.exit(1);
                assert!(
                    matches!(r, Some(0xa000) | None | Some(0x4000_1000)),
                    "{r:?}"
                );
            })
        };
        let (m, q) = (&w.0, &w.1);
        let mut list = RetireList::new();
        q.enter(0);
        collapse(
            m,
            ROOT,
            Ipa(0),
            1,
            PhysAddr(GIB),
            Perms::RW,
            MemType::Normal,
            &mut QsbrMaint { q, list: &mut list },
        )
        .unwrap();
        q.exit(0);
        let mut reused = Vec::new();
        loop {
            q.enter(0);
            list.reclaim(q, &mut |t: PhysAddr| {
                for i in 0..2 {
                    m.pte(t, i).store(POISON, Ordering::Relaxed);
                }
                reused.push(t);
            });
            q.exit(0);
            if list.is_empty() {
                break;
            }
            thread::yield_now();
        }
        // T2 may come first: one reclaim pass loads core 1's counter once per item, and
        // core 1 may leave between the two loads.
        reused.sort();
        assert_eq!(reused, vec![T2, T3]);
        walker.join().unwrap();
    });
}

/// Dirty logging: a write fault on a write-protected page (relax the page, then set its
/// bit) racing the VMM's harvest (take the bitmap, then write-protect the range again).
/// Whatever the interleaving, when both are done a page that is writable has its bit set
/// in the bitmap of the next round: writes to it after the harvest cannot go unlogged.
/// (Marking before relaxing fails this: the harvest takes the bit, finds the page still
/// read-only, and the relax then leaves it writable with no bit.)
#[test]
fn dirty_fault_racing_harvest_never_loses_a_write() {
    loom::model(|| {
        let m = Arc::new(Mem::new(&[ROOT, T2, T3]));
        m.set(ROOT, 0, table_desc(T2));
        m.set(T2, 0, table_desc(T3));
        let ro = Perms {
            write: false,
            ..Perms::RW
        };
        m.set(T3, 1, leaf_desc(3, PhysAddr(0xa000), ro, MemType::Normal));
        let bits = Arc::new(AtomicU64::new(0));
        let fault = {
            let (m, bits) = (m.clone(), bits.clone());
            thread::spawn(move || {
                // The kernel's order: relax first, then mark.
                if relax_write(&*m, ROOT, PAGE) {
                    bits.fetch_or(1, Ordering::AcqRel);
                }
            })
        };
        let taken = bits.swap(0, Ordering::AcqRel);
        let reprotect = write_protect_range(&*m, ROOT, PAGE, PAGE_SIZE, &mut Rec::default());
        fault.join().unwrap();
        assert!(reprotect.is_ok());
        let _ = taken;
        let writable = translate(&*m, ROOT, PAGE).unwrap().1.write;
        let logged = bits.load(Ordering::Acquire) & 1 != 0;
        assert!(!writable || logged, "a writable page with no dirty bit");
    });
}
