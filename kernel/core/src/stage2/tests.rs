//! Host tests of the stage-2 descriptors and walker.

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
