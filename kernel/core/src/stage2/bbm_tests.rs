//! Host unit tests of map_leaf, unmap_range, collapse, split and teardown_live: each
//! error path, and the order of break, invalidation, retirement and make.

use super::test_util::{shape, Ent, Ev, Mem, Pool, Rec};
use super::*;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;

fn map(m: &Mem, ipa: u64, level: u32, pa: u64) -> Result<(), MapError> {
    map_leaf(
        m,
        m.root(),
        Ipa(ipa),
        level,
        PhysAddr(pa),
        Perms::RW,
        MemType::Normal,
        &mut Pool::new(m),
    )
}

/// The entry of `level` covering `ipa` (the path to it must exist).
fn entry(m: &Mem, ipa: u64, level: u32) -> u64 {
    let mut t = m.root();
    for l in START_LEVEL..level {
        match decode(l, m.raw(t, index(l, Ipa(ipa)))) {
            Desc::Table(n) => t = n,
            d => panic!("no table at level {l}: {d:?}"),
        }
    }
    m.raw(t, index(level, Ipa(ipa)))
}

fn pa_of(m: &Mem, ipa: u64) -> Option<u64> {
    translate(m, m.root(), Ipa(ipa)).map(|(pa, _)| pa.0)
}

#[test]
fn map_leaf_maps_blocks_at_levels_1_and_2_and_pages() {
    let m = Mem::new(16);
    map(&m, GIB, 1, 4 * GIB).unwrap();
    map(&m, 2 * GIB + MIB2, 2, 0x4000_0000).unwrap();
    map(&m, 3 * GIB + 0x5000, 3, 0x9000).unwrap();
    assert_eq!(pa_of(&m, GIB + 0x1234_5678), Some(4 * GIB + 0x1234_5678));
    assert_eq!(pa_of(&m, 2 * GIB + MIB2 + 0x1_2345), Some(0x4001_2345));
    assert_eq!(pa_of(&m, 2 * GIB + 2 * MIB2), None);
    assert_eq!(pa_of(&m, 3 * GIB + 0x5010), Some(0x9010));
    // A 1 GiB block needs no table; a 2 MiB block one, a page two.
    assert_eq!(m.free.borrow().len(), 14 - 3);
    assert_eq!(
        decode(1, entry(&m, GIB, 1)),
        Desc::Leaf {
            pa: PhysAddr(4 * GIB),
            perms: Perms::RW,
            mem: MemType::Normal
        }
    );
}

#[test]
fn map_leaf_rejects_bad_levels_alignment_and_range() {
    let m = Mem::new(8);
    for (ipa, level, pa) in [
        (GIB + 0x1000, 1, 0),  // IPA not 1 GiB aligned
        (GIB, 1, MIB2),        // PA not 1 GiB aligned
        (MIB2 + 0x1000, 2, 0), // IPA not 2 MiB aligned
        (MIB2, 2, 0x1000),     // PA not 2 MiB aligned
        (0x1001, 3, 0),        // IPA not page aligned
        (0x1000, 3, 0x10),     // PA not page aligned
        (1 << 40, 3, 0),       // beyond the IPA space
        (0x1000, 3, 1 << 48),  // beyond the output address space
        (0, 0, 0),             // no level 0
        (0, 4, 0),             // no level 4
    ] {
        assert_eq!(
            map(&m, ipa, level, pa),
            Err(MapError::BadIpa),
            "{ipa:#x} {level} {pa:#x}"
        );
    }
    assert_eq!(m.free.borrow().len(), 6, "nothing allocated");
}

#[test]
fn map_leaf_refuses_a_block_over_a_table_or_a_leaf() {
    let m = Mem::new(8);
    map(&m, MIB2 + 0x1000, 3, 0x9000).unwrap();
    assert_eq!(
        map(&m, 0, 1, 0),
        Err(MapError::AlreadyMapped),
        "table at level 1"
    );
    assert_eq!(
        map(&m, MIB2, 2, 0),
        Err(MapError::AlreadyMapped),
        "table at level 2"
    );
    map(&m, 0, 2, 0x4000_0000).unwrap();
    assert_eq!(
        map(&m, 0, 2, 0x4000_0000),
        Err(MapError::AlreadyMapped),
        "block"
    );
    assert_eq!(map(&m, 0x1000, 3, 0x9000), Err(MapError::BlockInTheWay));
    map(&m, GIB, 1, 0).unwrap();
    assert_eq!(map(&m, GIB + MIB2, 2, 0), Err(MapError::BlockInTheWay));
    assert_eq!(map(&m, GIB + 0x1000, 3, 0), Err(MapError::BlockInTheWay));
}

#[test]
fn map_leaf_backs_off_from_a_locked_entry() {
    let m = Mem::new(8);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    // Another writer holds the level-2 entry, then the leaf entry.
    let t2 = match decode(1, entry(&m, 0, 1)) {
        Desc::Table(t) => t,
        d => panic!("{d:?}"),
    };
    let saved = m.raw(t2, 0);
    m.set(t2, 0, LOCKED);
    assert_eq!(map(&m, 0x2000, 3, 0x9000), Err(MapError::Locked));
    assert_eq!(map(&m, 0, 2, 0), Err(MapError::Locked));
    m.set(t2, 0, saved);
    let t3 = match decode(2, saved) {
        Desc::Table(t) => t,
        d => panic!("{d:?}"),
    };
    m.set(t3, 2, LOCKED);
    assert_eq!(map(&m, 0x2000, 3, 0x9000), Err(MapError::Locked));
}

#[test]
fn map_leaf_out_of_tables() {
    let m = Mem::new(3); // the root and one table
    assert_eq!(map(&m, 0x1000, 3, 0), Err(MapError::NoMemory));
    assert_eq!(
        map(&m, 0, 2, 0),
        Ok(()),
        "one table is enough for a 2 MiB block"
    );
}

#[test]
fn unmap_range_removes_pages_and_blocks() {
    let m = Mem::new(16);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    map(&m, 0x3000, 3, 0xa000).unwrap();
    map(&m, MIB2, 2, 0x4000_0000).unwrap();
    map(&m, GIB, 1, 0x80_0000_0000).unwrap();
    map(&m, 2 * GIB, 3, 0xb000).unwrap();
    let mut rec = Rec::new();
    let mut gone = Vec::new();
    let n = unmap_range_with(
        &m,
        m.root(),
        Ipa(0x2000),
        2 * GIB - 0x2000,
        &mut rec,
        &mut |i, l, pa| gone.push((i.0, l, pa.0)),
    );
    assert_eq!(n, Ok(3));
    assert_eq!(
        gone,
        vec![
            (0x3000, 3, 0xa000),
            (MIB2, 2, 0x4000_0000),
            (GIB, 1, 0x80_0000_0000)
        ]
    );
    assert_eq!(
        rec.ev,
        vec![
            Ev::Ipa(Ipa(0x3000), 3),
            Ev::Ipa(Ipa(MIB2), 2),
            Ev::Ipa(Ipa(GIB), 1)
        ]
    );
    assert_eq!(pa_of(&m, 0x1000), Some(0x9000), "below the range");
    assert_eq!(pa_of(&m, 2 * GIB), Some(0xb000), "above the range");
    // Tables stay linked: the level-3 table of the first 2 MiB is still there.
    assert_eq!(shape(&m, m.root()).1.len(), 4);
    assert_eq!(unmap_range(&m, m.root(), Ipa(0), 0, &mut rec), Ok(0));
    assert_eq!(unmap_range(&m, m.root(), Ipa(0), 1 << 40, &mut rec), Ok(2));
    assert_eq!(pa_of(&m, 0x1000), None);
}

#[test]
fn unmap_range_rejects_misaligned_or_out_of_range() {
    let m = Mem::new(4);
    let mut rec = Rec::new();
    for (start, len) in [
        (0x1001, 0x1000),
        (0x1000, 0x1001),
        (0, (1 << 40) + 0x1000),
        ((1 << 40) - 0x1000, 0x2000),
        (0x1000, u64::MAX - 0xfff),
    ] {
        assert_eq!(
            unmap_range(&m, m.root(), Ipa(start), len, &mut rec),
            Err(UnmapError::BadIpa),
            "{start:#x} {len:#x}"
        );
    }
    assert!(rec.ev.is_empty());
}

#[test]
fn unmap_range_stops_at_a_block_partly_inside() {
    let m = Mem::new(16);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    map(&m, MIB2, 2, 0x4000_0000).unwrap();
    map(&m, 2 * MIB2, 3, 0xa000).unwrap();
    let mut rec = Rec::new();
    // [4 KiB, 3 MiB) ends inside the block at 2 MiB.
    assert_eq!(
        unmap_range(
            &m,
            m.root(),
            Ipa(0x1000),
            MIB2 + MIB2 / 2 - 0x1000,
            &mut rec
        ),
        Err(UnmapError::BlockInTheWay)
    );
    assert_eq!(pa_of(&m, 0x1000), None, "the page before it went");
    assert_eq!(pa_of(&m, MIB2), Some(0x4000_0000), "the block stays");
    // [3 MiB, 5 MiB) starts inside it: nothing changes, not even the page after it.
    assert_eq!(
        unmap_range(&m, m.root(), Ipa(MIB2 + MIB2 / 2), MIB2, &mut rec),
        Err(UnmapError::BlockInTheWay)
    );
    assert_eq!(pa_of(&m, 2 * MIB2), Some(0xa000));
    assert_eq!(rec.ev, vec![Ev::Ipa(Ipa(0x1000), 3)]);
}

#[test]
fn unmap_range_backs_off_from_a_locked_entry() {
    let m = Mem::new(16);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    map(&m, 0x2000, 3, 0xa000).unwrap();
    let t3 = match decode(2, entry(&m, 0, 2)) {
        Desc::Table(t) => t,
        d => panic!("{d:?}"),
    };
    m.set(t3, 2, LOCKED); // another writer is between break and make on 0x2000
    let mut rec = Rec::new();
    assert_eq!(
        unmap_range(&m, m.root(), Ipa(0), 0x4000, &mut rec),
        Err(UnmapError::Locked)
    );
    assert_eq!(
        pa_of(&m, 0x1000),
        None,
        "leaves below the locked entry went"
    );
    m.set(
        t3,
        2,
        leaf_desc(3, PhysAddr(0xa000), Perms::RW, MemType::Normal),
    );
    assert_eq!(unmap_range(&m, m.root(), Ipa(0), 0x4000, &mut rec), Ok(1));
}

#[test]
fn unmap_range_breaks_before_it_invalidates_and_makes_after() {
    let m = Mem::new(8);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    let mut seen = Vec::new();
    let mut rec = Rec::with_hook(|_| {
        seen.push((pa_of(&m, 0x1000), entry(&m, 0x1000, 3)));
    });
    assert_eq!(
        unmap_range(&m, m.root(), Ipa(0), 0x10_0000, &mut rec),
        Ok(1)
    );
    drop(rec);
    assert_eq!(seen, vec![(None, LOCKED)], "invalidated while broken");
    assert_eq!(entry(&m, 0x1000, 3), 0, "made: zero, mappable again");
    map(&m, 0x1000, 3, 0xa000).unwrap();
}

#[test]
fn unmap_range_skips_empty_subtrees() {
    let m = Mem::new(16);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    map(&m, (1 << 40) - 0x1000, 3, 0xa000).unwrap();
    m.reads.set(0);
    let mut rec = Rec::new();
    assert_eq!(unmap_range(&m, m.root(), Ipa(0), 1 << 40, &mut rec), Ok(2));
    // 1024 root entries, two level-2 and two level-3 tables: not 2^28 pages.
    assert!(
        m.reads.get() <= 1024 + 4 * 512 + 8,
        "{} reads",
        m.reads.get()
    );
}

/// Builds a populated 1 GiB subtree at `GIB`: pages at GIB + 4 KiB and GIB + 8 KiB, a
/// 2 MiB block at GIB + 4 MiB, and an empty level-3 table at GIB + 6 MiB (its page was
/// unmapped). Returns the tables (level 2 first).
fn populated(m: &Mem) -> Vec<PhysAddr> {
    map(m, GIB + 0x1000, 3, 0x9000).unwrap();
    map(m, GIB + 0x2000, 3, 0xa000).unwrap();
    map(m, GIB + 2 * MIB2, 2, 0x4000_0000).unwrap();
    map(m, GIB + 3 * MIB2, 3, 0xb000).unwrap();
    unmap_page(m, m.root(), Ipa(GIB + 3 * MIB2), &mut |_| {}).unwrap();
    shape(m, m.root()).1
}

#[test]
fn collapse_replaces_a_populated_subtree() {
    let m = Mem::new(16);
    let tables = populated(&m);
    assert_eq!(tables.len(), 3);
    let mut during = Vec::new();
    let mut rec = Rec::with_hook(|e| {
        if e == Ev::Vmid {
            // Broken while the walk caches are invalidated.
            during.push((pa_of(&m, GIB + 0x1000), entry(&m, GIB, 1)));
        }
    });
    let mut gone = Vec::new();
    collapse_with(
        &m,
        m.root(),
        Ipa(GIB),
        1,
        PhysAddr(8 * GIB),
        Perms::RX,
        MemType::Normal,
        &mut rec,
        &mut |i, l, pa| gone.push((i.0, l, pa.0)),
    )
    .unwrap();
    let ev = core::mem::take(&mut rec.ev);
    drop(rec);
    assert_eq!(during, vec![(None, LOCKED)]);
    // Invalidate first; then every table, the subtree's top last.
    assert_eq!(ev[0], Ev::Vmid);
    assert_eq!(ev.len(), 4);
    assert_eq!(ev[3], Ev::Retire(tables[0]));
    let mut retired: Vec<PhysAddr> = ev[1..]
        .iter()
        .map(|e| match e {
            Ev::Retire(t) => *t,
            e => panic!("{e:?}"),
        })
        .collect();
    retired.sort();
    let mut want = tables.clone();
    want.sort();
    assert_eq!(retired, want);
    // Every entry of the retired tables is locked: no late install can land there.
    for t in &tables {
        for i in 0..ENTRIES {
            assert_eq!(m.raw(*t, i), LOCKED);
        }
    }
    assert_eq!(
        gone,
        vec![
            (GIB + 0x1000, 3, 0x9000),
            (GIB + 0x2000, 3, 0xa000),
            (GIB + 2 * MIB2, 2, 0x4000_0000)
        ]
    );
    assert_eq!(
        translate(&m, m.root(), Ipa(GIB + 0x1000)),
        Some((PhysAddr(8 * GIB + 0x1000), Perms::RX))
    );
    let (tree, reachable) = shape(&m, m.root());
    assert!(reachable.is_empty());
    assert_eq!(tree.len(), 1);
}

#[test]
fn collapse_of_a_level_2_subtree_and_of_an_empty_entry() {
    let m = Mem::new(16);
    map(&m, MIB2 + 0x1000, 3, 0x9000).unwrap();
    let t3 = match decode(2, entry(&m, MIB2, 2)) {
        Desc::Table(t) => t,
        d => panic!("{d:?}"),
    };
    let mut rec = Rec::new();
    collapse(
        &m,
        m.root(),
        Ipa(MIB2),
        2,
        PhysAddr(0x4000_0000),
        Perms::RW,
        MemType::Device,
        &mut rec,
    )
    .unwrap();
    assert_eq!(rec.ev, vec![Ev::Vmid, Ev::Retire(t3)]);
    assert_eq!(pa_of(&m, MIB2 + 0x1000), Some(0x4000_1000));
    // An empty entry (its level-2 table exists) gets the block by a plain install: no
    // maintenance, since an invalid entry is never cached.
    let mut rec = Rec::new();
    collapse(
        &m,
        m.root(),
        Ipa(2 * MIB2),
        2,
        PhysAddr(0x4020_0000),
        Perms::R,
        MemType::Normal,
        &mut rec,
    )
    .unwrap();
    assert!(rec.ev.is_empty());
    assert_eq!(pa_of(&m, 2 * MIB2 + 8), Some(0x4020_0008));
    // A level-1 entry that is empty, straight in the root.
    collapse(
        &m,
        m.root(),
        Ipa(5 * GIB),
        1,
        PhysAddr(GIB),
        Perms::R,
        MemType::Normal,
        &mut rec,
    )
    .unwrap();
    assert!(rec.ev.is_empty());
    assert_eq!(pa_of(&m, 5 * GIB + 8), Some(GIB + 8));
}

#[test]
fn collapse_errors() {
    let m = Mem::new(16);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    map(&m, MIB2, 2, 0x4000_0000).unwrap();
    map(&m, GIB, 1, 0).unwrap();
    let mut rec = Rec::new();
    {
        let mut c = |ipa: u64, level: u32, pa: u64| {
            collapse(
                &m,
                m.root(),
                Ipa(ipa),
                level,
                PhysAddr(pa),
                Perms::RW,
                MemType::Normal,
                &mut rec,
            )
        };
        assert_eq!(
            c(0x1000, 2, 0),
            Err(CollapseError::BadIpa),
            "IPA not 2 MiB aligned"
        );
        assert_eq!(
            c(0, 2, 0x1000),
            Err(CollapseError::BadIpa),
            "PA not 2 MiB aligned"
        );
        assert_eq!(c(0, 3, 0), Err(CollapseError::BadIpa), "no level-3 blocks");
        assert_eq!(c(0, 0, 0), Err(CollapseError::BadIpa));
        assert_eq!(c(1 << 40, 1, 0), Err(CollapseError::BadIpa));
        assert_eq!(c(MIB2, 2, 0), Err(CollapseError::AlreadyMapped));
        assert_eq!(c(GIB, 1, 0), Err(CollapseError::AlreadyMapped));
        assert_eq!(c(GIB + MIB2, 2, 0), Err(CollapseError::BlockInTheWay));
        assert_eq!(c(3 * GIB, 2, 0), Err(CollapseError::NoTable));
    }
    assert!(rec.ev.is_empty());
    // Locked: the entry itself, then an entry on the way.
    let t2 = match decode(1, entry(&m, 0, 1)) {
        Desc::Table(t) => t,
        d => panic!("{d:?}"),
    };
    let saved = m.raw(t2, 0);
    m.set(t2, 0, LOCKED);
    assert_eq!(
        collapse(
            &m,
            m.root(),
            Ipa(0),
            2,
            PhysAddr(0),
            Perms::RW,
            MemType::Normal,
            &mut rec
        ),
        Err(CollapseError::Locked)
    );
    m.set(t2, 0, saved);
    m.set(m.root(), 0, LOCKED);
    assert_eq!(
        collapse(
            &m,
            m.root(),
            Ipa(0),
            2,
            PhysAddr(0),
            Perms::RW,
            MemType::Normal,
            &mut rec
        ),
        Err(CollapseError::Locked)
    );
    assert!(rec.ev.is_empty());
}

#[test]
fn collapse_locks_empty_entries_of_the_subtree_too() {
    // Zero entries of the subtree are locked as well: an installer that walked in before
    // the break fails its CAS instead of linking into the unreachable table.
    let m = Mem::new(16);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    let t3 = match decode(2, entry(&m, 0, 2)) {
        Desc::Table(t) => t,
        d => panic!("{d:?}"),
    };
    let mut rec = Rec::new();
    collapse(
        &m,
        m.root(),
        Ipa(0),
        2,
        PhysAddr(0),
        Perms::RW,
        MemType::Normal,
        &mut rec,
    )
    .unwrap();
    // A late installer still holding t3 from its walk:
    assert_ne!(
        m.pte(t3, 5)
            .compare_exchange(0, 0x1234_0003, Ordering::AcqRel, Ordering::Acquire),
        Ok(0)
    );
}

#[test]
fn split_keeps_every_translation_and_attribute() {
    let m = Mem::new(16);
    map_leaf(
        &m,
        m.root(),
        Ipa(GIB),
        1,
        PhysAddr(4 * GIB),
        Perms::RX,
        MemType::Device,
        &mut Pool::new(&m),
    )
    .unwrap();
    let block = entry(&m, GIB, 1);
    let mut pool = Pool::new(&m);
    let mut seen = Vec::new();
    let mut rec = Rec::with_hook(|_| seen.push(pa_of(&m, GIB + 0x1000)));
    split(&m, m.root(), Ipa(GIB + 0x1234_5678), 1, &mut pool, &mut rec).unwrap();
    let ev = core::mem::take(&mut rec.ev);
    drop(rec);
    assert_eq!(ev, vec![Ev::Ipa(Ipa(GIB), 1)]);
    assert_eq!(seen, vec![None], "broken during the invalidation");
    assert_eq!(pool.allocated.len(), 1);
    for off in [0, 0x1000, 0x1234_5678, GIB - 8] {
        assert_eq!(
            translate(&m, m.root(), Ipa(GIB + off)),
            Some((PhysAddr(4 * GIB + off), Perms::RX))
        );
    }
    // Same attribute bits, level-2 block encoding.
    let child = entry(&m, GIB + 3 * MIB2, 2);
    assert_eq!(child & !OA_MASK, block & !OA_MASK);
    assert_eq!(child & OA_MASK, 4 * GIB + 3 * MIB2);
    // And again, down to pages.
    split(
        &m,
        m.root(),
        Ipa(GIB + 3 * MIB2),
        2,
        &mut pool,
        &mut Rec::new(),
    )
    .unwrap();
    let page = entry(&m, GIB + 3 * MIB2 + 0x5000, 3);
    assert_eq!(page & !OA_MASK, (block & !OA_MASK) | 0b10);
    assert_eq!(
        decode(3, page),
        Desc::Leaf {
            pa: PhysAddr(4 * GIB + 3 * MIB2 + 0x5000),
            perms: Perms::RX,
            mem: MemType::Device
        }
    );
    let (tree, tables) = shape(&m, m.root());
    assert_eq!(tables.len(), 2);
    assert_eq!(
        tree.values().filter(|e| matches!(e, Ent::Leaf(..))).count(),
        511 + 512
    );
}

#[test]
fn split_errors() {
    let m = Mem::new(16);
    map(&m, 0x1000, 3, 0x9000).unwrap();
    map(&m, MIB2, 2, 0x4000_0000).unwrap();
    map(&m, GIB, 1, 0).unwrap();
    let mut rec = Rec::new();
    let mut pool = Pool::new(&m);
    assert_eq!(
        split(&m, m.root(), Ipa(0), 3, &mut pool, &mut rec),
        Err(SplitError::BadIpa)
    );
    assert_eq!(
        split(&m, m.root(), Ipa(0), 0, &mut pool, &mut rec),
        Err(SplitError::BadIpa)
    );
    assert_eq!(
        split(&m, m.root(), Ipa(1 << 40), 1, &mut pool, &mut rec),
        Err(SplitError::BadIpa)
    );
    assert_eq!(
        split(&m, m.root(), Ipa(0), 2, &mut pool, &mut rec),
        Err(SplitError::NotABlock),
        "a table"
    );
    assert_eq!(
        split(&m, m.root(), Ipa(0), 1, &mut pool, &mut rec),
        Err(SplitError::NotABlock),
        "a table"
    );
    assert_eq!(
        split(&m, m.root(), Ipa(2 * MIB2), 2, &mut pool, &mut rec),
        Err(SplitError::NotABlock),
        "empty"
    );
    assert_eq!(
        split(&m, m.root(), Ipa(3 * GIB), 1, &mut pool, &mut rec),
        Err(SplitError::NotABlock),
        "empty"
    );
    assert_eq!(
        split(&m, m.root(), Ipa(3 * GIB), 2, &mut pool, &mut rec),
        Err(SplitError::NotABlock),
        "no table"
    );
    assert_eq!(
        split(&m, m.root(), Ipa(GIB), 2, &mut pool, &mut rec),
        Err(SplitError::NotABlock),
        "bigger block"
    );
    assert!(pool.allocated.is_empty());
    // No memory: the block stays.
    let empty = Mem::new(2);
    map_leaf(
        &empty,
        empty.root(),
        Ipa(0),
        1,
        PhysAddr(0),
        Perms::RW,
        MemType::Normal,
        &mut Pool::new(&empty),
    )
    .unwrap();
    assert_eq!(
        split(
            &empty,
            empty.root(),
            Ipa(0),
            1,
            &mut Pool::new(&empty),
            &mut rec
        ),
        Err(SplitError::NoMemory)
    );
    assert_eq!(pa_of(&empty, 0x1000), Some(0x1000));
    // Locked block entry.
    let t2 = match decode(1, entry(&m, 0, 1)) {
        Desc::Table(t) => t,
        d => panic!("{d:?}"),
    };
    let saved = m.raw(t2, 1);
    m.set(t2, 1, LOCKED);
    assert_eq!(
        split(&m, m.root(), Ipa(MIB2), 2, &mut pool, &mut rec),
        Err(SplitError::Locked)
    );
    // Locked on the way.
    m.set(t2, 1, saved);
    let root0 = m.raw(m.root(), 0);
    m.set(m.root(), 0, LOCKED);
    assert_eq!(
        split(&m, m.root(), Ipa(MIB2), 2, &mut pool, &mut rec),
        Err(SplitError::Locked)
    );
    m.set(m.root(), 0, root0);
    assert!(rec.ev.is_empty());
    assert!(pool.allocated.is_empty());
}

#[test]
fn split_that_loses_its_break_gives_its_table_back() {
    let m = Mem::new(16);
    map(&m, GIB, 1, 0).unwrap();
    let mut pool = Pool::new(&m);
    // Another writer breaks the block while the new table is being prepared.
    let root = m.root();
    let mm = &m;
    pool.on_alloc = Some(Box::new(move || mm.set(root, 1, LOCKED)));
    let mut rec = Rec::new();
    assert_eq!(
        split(&m, root, Ipa(GIB), 1, &mut pool, &mut rec),
        Err(SplitError::Locked)
    );
    assert_eq!(pool.freed, pool.allocated);
    assert_eq!(pool.freed.len(), 1);
    assert!(rec.ev.is_empty());
}

#[test]
fn teardown_live_retires_every_table_and_locks_the_root() {
    let m = Mem::new(16);
    let tables = populated(&m);
    map(&m, 0x1000, 3, 0xc000).unwrap();
    map(&m, 4 * GIB, 1, 8 * GIB).unwrap();
    map(&m, (1 << 40) - MIB2, 2, 0x4000_0000).unwrap();
    let (_, all) = shape(&m, m.root());
    assert_eq!(all.len(), tables.len() + 3);
    let mut rec = Rec::new();
    let mut gone = Vec::new();
    let n = teardown_live(&m, m.root(), &mut rec, &mut |i, l, pa| {
        gone.push((i.0, l, pa.0))
    });
    assert_eq!(n, all.len());
    let mut retired = rec.retired();
    retired.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(retired, want, "every table retired once");
    assert_eq!(
        gone,
        vec![
            (0x1000, 3, 0xc000),
            (GIB + 0x1000, 3, 0x9000),
            (GIB + 0x2000, 3, 0xa000),
            (GIB + 2 * MIB2, 2, 0x4000_0000),
            (4 * GIB, 1, 8 * GIB),
            ((1 << 40) - MIB2, 2, 0x4000_0000),
        ]
    );
    // One VMID-wide invalidation per populated root entry, each before its retirements;
    // the 1 GiB block by IPA.
    assert_eq!(rec.ev.iter().filter(|e| **e == Ev::Vmid).count(), 3);
    assert!(rec.ev.contains(&Ev::Ipa(Ipa(4 * GIB), 1)));
    assert_eq!(rec.ev[0], Ev::Vmid);
    for i in 0..ROOT_ENTRIES {
        assert_eq!(m.raw(m.root(), i), LOCKED);
    }
    assert_eq!(map(&m, 0x1000, 3, 0), Err(MapError::Locked));
    assert_eq!(translate(&m, m.root(), Ipa(GIB + 0x1000)), None);
}
