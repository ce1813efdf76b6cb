//! Property tests: random sequences of map_leaf (all levels), map_page, unmap_page,
//! unmap_range, collapse and split against a reference model of the tree.
//!
//! The model is a map (level, first IPA of the entry) → table or leaf, which predicts every
//! result exactly (including which errors, and that tables stay linked after unmaps).
//! After each operation: the real tree's shape equals the model, `translate` agrees with
//! the model on sampled IPAs, every table handed to `retire` or `free_table` is unreachable
//! from the root, and every table page is either reachable or free, exactly once. Retired
//! tables are then poisoned and given back to the pool (the grace period of a
//! single-threaded test is over at once), so a table still in use after retirement would
//! show up as reachable poison.

use super::test_util::{shape, Ent, Ev, Mem, Pool, Rec, POISON};
use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// First IPA of the entry of `level` covering `ipa`.
fn base(ipa: u64, level: u32) -> u64 {
    ipa & !(span(level) - 1)
}

type Leaves = Vec<(Ipa, u32, PhysAddr)>;

/// The reference: what each entry holds.
#[derive(Default)]
struct Model(BTreeMap<(u32, u64), Ent>);

impl Model {
    fn get(&self, level: u32, ipa: u64) -> Option<Ent> {
        self.0.get(&(level, base(ipa, level))).copied()
    }

    fn translate(&self, ipa: u64) -> Option<(PhysAddr, Perms)> {
        for l in 1..=3 {
            match self.get(l, ipa)? {
                Ent::Table => {}
                Ent::Leaf(pa, perms, _) => return Some((PhysAddr(pa + ipa - base(ipa, l)), perms)),
            }
        }
        unreachable!("a table at level 3")
    }

    fn map(
        &mut self,
        ipa: u64,
        level: u32,
        pa: u64,
        perms: Perms,
        ty: MemType,
    ) -> Result<(), MapError> {
        if ipa >> IPA_BITS != 0
            || !ipa.is_multiple_of(span(level))
            || !pa.is_multiple_of(span(level))
        {
            return Err(MapError::BadIpa);
        }
        for l in 1..level {
            match self.get(l, ipa) {
                Some(Ent::Table) => {}
                Some(Ent::Leaf(..)) => return Err(MapError::BlockInTheWay),
                None => {
                    self.0.insert((l, base(ipa, l)), Ent::Table);
                }
            }
        }
        match self.get(level, ipa) {
            None => {
                self.0.insert((level, ipa), Ent::Leaf(pa, perms, ty));
                Ok(())
            }
            Some(_) => Err(MapError::AlreadyMapped),
        }
    }

    fn unmap_page(&mut self, ipa: u64) -> Result<PhysAddr, UnmapError> {
        for l in 1..3 {
            match self.get(l, ipa) {
                Some(Ent::Table) => {}
                Some(Ent::Leaf(..)) => return Err(UnmapError::BlockInTheWay),
                None => return Err(UnmapError::NotMapped),
            }
        }
        match self.0.remove(&(3, ipa)) {
            Some(Ent::Leaf(pa, ..)) => Ok(PhysAddr(pa)),
            _ => Err(UnmapError::NotMapped),
        }
    }

    fn unmap_range(&mut self, start: u64, len: u64) -> (Result<usize, UnmapError>, Leaves) {
        let end = start + len;
        let mut hits: Vec<(u64, u32, u64)> = self
            .0
            .iter()
            .filter_map(|(&(l, b), e)| match e {
                Ent::Leaf(pa, ..) if b < end && b + span(l) > start => Some((b, l, *pa)),
                _ => None,
            })
            .collect();
        hits.sort();
        let mut gone = Vec::new();
        for (b, l, pa) in hits {
            if b < start || b + span(l) > end {
                return (Err(UnmapError::BlockInTheWay), gone);
            }
            self.0.remove(&(l, b));
            gone.push((Ipa(b), l, PhysAddr(pa)));
        }
        (Ok(gone.len()), gone)
    }

    /// The result, the leaves that went, and how many tables were retired.
    fn collapse(
        &mut self,
        ipa: u64,
        level: u32,
        pa: u64,
        perms: Perms,
        ty: MemType,
    ) -> (Result<(), CollapseError>, Leaves, usize) {
        if !ipa.is_multiple_of(span(level)) || !pa.is_multiple_of(span(level)) {
            return (Err(CollapseError::BadIpa), vec![], 0);
        }
        for l in 1..level {
            match self.get(l, ipa) {
                Some(Ent::Table) => {}
                Some(Ent::Leaf(..)) => return (Err(CollapseError::BlockInTheWay), vec![], 0),
                None => return (Err(CollapseError::NoTable), vec![], 0),
            }
        }
        let (mut gone, mut tables) = (Vec::new(), 0);
        match self.get(level, ipa) {
            Some(Ent::Leaf(..)) => return (Err(CollapseError::AlreadyMapped), vec![], 0),
            None => {}
            Some(Ent::Table) => {
                let end = ipa + span(level);
                let below: Vec<(u32, u64)> = self
                    .0
                    .keys()
                    .filter(|&&(l, b)| l > level && (ipa..end).contains(&b))
                    .copied()
                    .collect();
                let mut leaves = Vec::new();
                for k in below {
                    match self.0.remove(&k).unwrap() {
                        Ent::Table => tables += 1,
                        Ent::Leaf(pa, ..) => leaves.push((k.1, k.0, pa)),
                    }
                }
                leaves.sort();
                gone = leaves
                    .into_iter()
                    .map(|(b, l, pa)| (Ipa(b), l, PhysAddr(pa)))
                    .collect();
                tables += 1; // the subtree's top table
            }
        }
        self.0.insert((level, ipa), Ent::Leaf(pa, perms, ty));
        (Ok(()), gone, tables)
    }

    fn split(&mut self, ipa: u64, level: u32) -> Result<(), SplitError> {
        for l in 1..level {
            match self.get(l, ipa) {
                Some(Ent::Table) => {}
                _ => return Err(SplitError::NotABlock),
            }
        }
        let b = base(ipa, level);
        let Some(Ent::Leaf(pa, perms, ty)) = self.get(level, ipa) else {
            return Err(SplitError::NotABlock);
        };
        self.0.insert((level, b), Ent::Table);
        let c = span(level + 1);
        for i in 0..ENTRIES as u64 {
            self.0
                .insert((level + 1, b + i * c), Ent::Leaf(pa + i * c, perms, ty));
        }
        Ok(())
    }
}

/// The IPAs operations aim at: few enough that they collide often, spread over both root
/// pages, several level-1 and level-2 entries, and the last entries of tables.
fn at(i: usize) -> u64 {
    const L1: [u64; 3] = [0, 1, 513];
    const L2: [u64; 3] = [0, 1, 511];
    const L3: [u64; 3] = [0, 1, 511];
    (L1[i / 9] << 30) | (L2[(i / 3) % 3] << 21) | (L3[i % 3] << 12)
}

const LENS: [u64; 9] = [
    0x1000,
    0x2000,
    0x20_0000,
    0x20_1000,
    0x40_0000,
    0x4000_0000,
    0x4020_0000,
    0x8000_0000,
    0, // to the end of the IPA space
];

fn perms_ty(p: u8) -> (Perms, MemType) {
    let perms = [Perms::RX, Perms::R, Perms::RW][(p % 3) as usize];
    let ty = if p < 3 {
        MemType::Normal
    } else {
        MemType::Device
    };
    (perms, ty)
}

#[derive(Clone, Debug)]
enum Op {
    /// at, level, frame, perms/type, keep the IPA unaligned
    Map(usize, u32, u64, u8, bool),
    MapPage(usize, u64, u8),
    UnmapPage(usize),
    UnmapRange(usize, usize),
    Collapse(usize, u32, u64, u8, bool),
    Split(usize, u32),
}

fn op() -> impl Strategy<Value = Op> {
    let raw = prop::bool::weighted(0.1);
    prop_oneof![
        3 => (0..27usize, 1..=3u32, 0..64u64, 0..6u8, raw)
            .prop_map(|(a, l, f, p, r)| Op::Map(a, l, f, p, r)),
        1 => (0..27usize, 0..64u64, 0..6u8).prop_map(|(a, f, p)| Op::MapPage(a, f, p)),
        1 => (0..27usize).prop_map(Op::UnmapPage),
        2 => (0..27usize, 0..LENS.len()).prop_map(|(a, l)| Op::UnmapRange(a, l)),
        2 => (0..27usize, 1..=2u32, 0..64u64, 0..6u8, raw)
            .prop_map(|(a, l, f, p, r)| Op::Collapse(a, l, f, p, r)),
        2 => (0..27usize, 1..=2u32).prop_map(|(a, l)| Op::Split(a, l)),
    ]
}

/// IPAs whose translation is compared after each operation.
fn samples() -> Vec<u64> {
    let mut v: Vec<u64> = (0..27).flat_map(|i| [at(i), at(i) + 0x1008]).collect();
    v.extend([
        (1 << 30) | (5 << 21) | (7 << 12) | 0x10,
        (513 << 30) + 0x3fff_f000,
    ]);
    v
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mem = Mem::new(64);
    let root = mem.root();
    let all = mem.table_pages();
    let mut model = Model::default();
    let samples = samples();
    for op in ops {
        let mut pool = Pool::new(&mem);
        let mut rec = Rec::new();
        let mut gone = Vec::new();
        match op {
            Op::Map(a, level, frame, p, raw) => {
                let (perms, ty) = perms_ty(p);
                let ipa = if raw { at(a) } else { base(at(a), level) };
                let pa = frame * span(level);
                let got = map_leaf(
                    &mem,
                    root,
                    Ipa(ipa),
                    level,
                    PhysAddr(pa),
                    perms,
                    ty,
                    &mut pool,
                );
                prop_assert_eq!(got, model.map(ipa, level, pa, perms, ty), "{:?}", op);
            }
            Op::MapPage(a, frame, p) => {
                let (perms, ty) = perms_ty(p);
                let got = map_page(
                    &mem,
                    root,
                    Ipa(at(a)),
                    PhysAddr(frame << 12),
                    perms,
                    ty,
                    &mut pool,
                );
                prop_assert_eq!(got, model.map(at(a), 3, frame << 12, perms, ty), "{:?}", op);
            }
            Op::UnmapPage(a) => {
                let mut flushed = Vec::new();
                let got = unmap_page(&mem, root, Ipa(at(a)), &mut |i| flushed.push(i));
                prop_assert_eq!(got, model.unmap_page(at(a)), "{:?}", op);
                prop_assert_eq!(
                    flushed,
                    if got.is_ok() {
                        vec![Ipa(at(a))]
                    } else {
                        vec![]
                    }
                );
            }
            Op::UnmapRange(a, l) => {
                let start = at(a);
                let len = if LENS[l] == 0 {
                    (1 << IPA_BITS) - start
                } else {
                    LENS[l]
                };
                let got =
                    unmap_range_with(&mem, root, Ipa(start), len, &mut rec, &mut |i, l, pa| {
                        gone.push((i, l, pa))
                    });
                let (want, want_gone) = model.unmap_range(start, len);
                prop_assert_eq!(got, want, "{:?}", op);
                prop_assert_eq!(&gone, &want_gone);
                // One invalidation per leaf removed, except that the pages of one level-3
                // table, when more than BATCH_TLBI_OVER go at once, share one VMID-wide
                // invalidation.
                let mut flushed: Vec<Ev> = Vec::new();
                let mut i = 0;
                while i < gone.len() {
                    let (ipa, l, _) = gone[i];
                    if l < 3 {
                        flushed.push(Ev::Ipa(ipa, l));
                        i += 1;
                        continue;
                    }
                    let table = ipa.0 >> 21;
                    let n = gone[i..]
                        .iter()
                        .take_while(|g| g.1 == 3 && g.0 .0 >> 21 == table)
                        .count();
                    if n > BATCH_TLBI_OVER {
                        flushed.push(Ev::Vmid);
                    } else {
                        flushed.extend(gone[i..i + n].iter().map(|&(i, l, _)| Ev::Ipa(i, l)));
                    }
                    i += n;
                }
                prop_assert_eq!(&rec.ev, &flushed, "invalidations of the leaves removed");
            }
            Op::Collapse(a, level, frame, p, raw) => {
                let (perms, ty) = perms_ty(p);
                let ipa = if raw { at(a) } else { base(at(a), level) };
                let pa = frame * span(level);
                let got = collapse_with(
                    &mem,
                    root,
                    Ipa(ipa),
                    level,
                    PhysAddr(pa),
                    perms,
                    ty,
                    &mut rec,
                    &mut |i, l, pa| gone.push((i, l, pa)),
                );
                let (want, want_gone, tables) = model.collapse(ipa, level, pa, perms, ty);
                prop_assert_eq!(got, want, "{:?}", op);
                prop_assert_eq!(&gone, &want_gone);
                prop_assert_eq!(rec.retired().len(), tables);
                if tables > 0 {
                    prop_assert_eq!(rec.ev.iter().filter(|e| **e == Ev::Vmid).count(), 1);
                    prop_assert_eq!(rec.ev[0], Ev::Vmid, "invalidate before retiring");
                } else {
                    prop_assert!(rec.ev.is_empty());
                }
            }
            Op::Split(a, level) => {
                let got = split(&mem, root, Ipa(at(a)), level, &mut pool, &mut rec);
                prop_assert_eq!(got, model.split(at(a), level), "{:?}", op);
                let want: Vec<Ev> = if got.is_ok() {
                    vec![Ev::Ipa(Ipa(base(at(a), level)), level)]
                } else {
                    vec![]
                };
                prop_assert_eq!(&rec.ev, &want);
            }
        }
        // The real tree is the model's, with nothing locked or poisoned left in it.
        let (real, reachable) = shape(&mem, root);
        prop_assert!(
            real == model.0,
            "tree differs from the model after {:?}",
            op
        );
        for &ipa in &samples {
            prop_assert_eq!(
                translate(&mem, root, Ipa(ipa)),
                model.translate(ipa),
                "{:#x}",
                ipa
            );
        }
        // Tables given back are unreachable; every page is reachable or free, once.
        let retired = rec.retired();
        for t in retired.iter().chain(&pool.freed) {
            prop_assert!(!reachable.contains(t), "{:?} handed back but reachable", t);
        }
        let reachable: BTreeSet<PhysAddr> = reachable.into_iter().collect();
        let free = mem.free.borrow().clone();
        let free_set: BTreeSet<PhysAddr> = free.iter().copied().collect();
        prop_assert_eq!(free.len(), free_set.len(), "a table freed twice");
        prop_assert_eq!(free_set.len() + retired.len() + reachable.len(), all.len());
        prop_assert!(free_set.is_disjoint(&reachable));
        for t in &retired {
            prop_assert!(!free_set.contains(t), "retired and freed");
        }
        // The grace period is over: reuse the retired tables (poisoned until reallocated).
        for t in retired {
            mem.fill(t, POISON);
            mem.free.borrow_mut().push(t);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]
    #[test]
    fn map_unmap_collapse_split_agree_with_a_reference_model(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        run(ops)?;
    }
}

/// A fixed sequence through every kind of operation, so the interesting paths run even if
/// the random cases happen to miss them.
#[test]
fn a_fixed_sequence_agrees_with_the_model() {
    run(vec![
        Op::Map(0, 1, 1, 0, false),      // 1 GiB block at 0
        Op::Split(0, 1),                 // → 512 2 MiB blocks
        Op::Split(4, 2),                 // one of them → 512 pages
        Op::UnmapPage(4),                // a page of it
        Op::UnmapRange(0, 3),            // 2 MiB + 4 KiB: the first 2 MiB block and a page
        Op::Collapse(3, 2, 5, 4, false), // the split 2 MiB block back into one
        Op::MapPage(9, 3, 1),
        Op::Map(10, 2, 7, 2, false),
        Op::Collapse(9, 1, 2, 0, false), // the whole 1 GiB subtree at 1 GiB
        Op::UnmapRange(0, 8),            // everything
    ])
    .unwrap();
}
