//! Model checks of the walker (`RUSTFLAGS="--cfg loom" cargo test -p kcore --lib --release
//! loom`).

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
