//! Host tests of unmap (break, TLB invalidation, make).

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
