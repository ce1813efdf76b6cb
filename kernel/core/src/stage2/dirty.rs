//! Dirty logging: write-protect the pages of a range, and relax one page back to
//! writable when its first write faults (the kernel then marks it in a dirty bitmap).
//!
//! Write-protection changes valid leaves, so it follows the break-before-make rules of
//! the walker (`docs/design/stage2.md`, rule 3): each writable page is broken (CAS to
//! LOCKED), invalidated, and made read-only. Relaxing a read-only leaf back to read/write
//! changes only its permissions, which the architecture allows in place (Arm ARM D8.16.1:
//! break-before-make is required for changes of output address, memory type, shareability
//! or block size, not for permission changes); a stale read-only TLB entry only makes the
//! guest fault once more, so the relaxing core invalidates the IPA afterwards.

use super::{
    decode, index, leaf_desc, Desc, Ipa, Maintenance, Ordering, PhysAddr, TableMem, UnmapError,
    IPA_BITS, LOCKED, PAGE_SIZE, START_LEVEL,
};

/// Write-protects every writable page leaf in `[start, start + len)`; returns how many.
/// A block mapping inside the range is refused ([`UnmapError::BlockInTheWay`]: split it
/// first); an entry another writer holds gives [`UnmapError::Locked`] (retry). Pages not
/// mapped are skipped.
pub fn write_protect_range<M: TableMem>(
    mem: &M,
    root: PhysAddr,
    start: Ipa,
    len: u64,
    m: &mut dyn Maintenance,
) -> Result<usize, UnmapError> {
    let end = start.0.checked_add(len).ok_or(UnmapError::BadIpa)?;
    if !start.is_aligned(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) || end > 1 << IPA_BITS {
        return Err(UnmapError::BadIpa);
    }
    let mut done = 0;
    let mut ipa = start.0;
    'pages: while ipa < end {
        let mut table = root;
        for level in START_LEVEL..3 {
            let d = mem
                .pte(table, index(level, Ipa(ipa)))
                .load(Ordering::Acquire);
            match decode(level, d) {
                Desc::Table(next) => table = next,
                Desc::Invalid => {
                    // Nothing mapped below this entry: skip its whole span.
                    let span = 1u64 << (12 + 9 * (3 - level));
                    ipa = (ipa & !(span - 1)) + span;
                    continue 'pages;
                }
                Desc::Locked => return Err(UnmapError::Locked),
                Desc::Leaf { .. } => return Err(UnmapError::BlockInTheWay),
            }
        }
        let pte = mem.pte(table, index(3, Ipa(ipa)));
        let cur = pte.load(Ordering::Acquire);
        match decode(3, cur) {
            Desc::Leaf { pa, perms, mem: ty } if perms.write => {
                if pte
                    .compare_exchange(cur, LOCKED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return Err(UnmapError::Locked);
                }
                m.tlbi_ipa(Ipa(ipa), 3);
                let ro = super::Perms {
                    write: false,
                    ..perms
                };
                pte.store(leaf_desc(3, pa, ro, ty), Ordering::Release);
                done += 1;
            }
            Desc::Locked => return Err(UnmapError::Locked),
            _ => {}
        }
        ipa += PAGE_SIZE;
    }
    Ok(done)
}

/// Makes the read-only page leaf mapping `ipa` writable again (one CAS); true if this
/// call did it. False when the page is not mapped read-only (another core relaxed it
/// first, it is locked, unmapped, or a block covers it).
pub fn relax_write<M: TableMem>(mem: &M, root: PhysAddr, ipa: Ipa) -> bool {
    if ipa.0 >> IPA_BITS != 0 {
        return false;
    }
    let mut table = root;
    for level in START_LEVEL..3 {
        match decode(
            level,
            mem.pte(table, index(level, ipa)).load(Ordering::Acquire),
        ) {
            Desc::Table(next) => table = next,
            _ => return false,
        }
    }
    let pte = mem.pte(table, index(3, ipa));
    let cur = pte.load(Ordering::Acquire);
    let Desc::Leaf { pa, perms, mem: ty } = decode(3, cur) else {
        return false;
    };
    if perms.write || !perms.read {
        return false;
    }
    let rw = super::Perms {
        write: true,
        ..perms
    };
    pte.compare_exchange(
        cur,
        leaf_desc(3, PhysAddr(pa.0), rw, ty),
        Ordering::AcqRel,
        Ordering::Acquire,
    )
    .is_ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::test_util::{Ev, Mem, Pool, Rec};
    use super::super::*;
    use super::*;

    fn map(m: &Mem, ipa: u64, level: u32, pa: u64, perms: Perms) {
        map_leaf(
            m,
            m.root(),
            Ipa(ipa),
            level,
            PhysAddr(pa),
            perms,
            MemType::Normal,
            &mut Pool::new(m),
        )
        .unwrap();
    }

    #[test]
    fn protects_writable_pages_and_relaxes_them_one_by_one() {
        let m = Mem::new(16);
        map(&m, 0x4000_0000, 3, 0x8000_0000, Perms::RW);
        map(&m, 0x4000_1000, 3, 0x8000_1000, Perms::R);
        map(&m, 0x4000_3000, 3, 0x8000_3000, Perms::RW);
        let mut rec = Rec::new();
        let n = write_protect_range(&m, m.root(), Ipa(0x4000_0000), 0x4000, &mut rec).unwrap();
        assert_eq!(n, 2, "the read-only page is left alone");
        assert_eq!(
            rec.ev,
            vec![Ev::Ipa(Ipa(0x4000_0000), 3), Ev::Ipa(Ipa(0x4000_3000), 3)]
        );
        for ipa in [0x4000_0000, 0x4000_3000] {
            let (pa, p) = translate(&m, m.root(), Ipa(ipa)).unwrap();
            assert_eq!(pa.0, ipa + 0x4000_0000);
            assert!(p.read && !p.write, "protected");
        }
        assert!(relax_write(&m, m.root(), Ipa(0x4000_0000)));
        assert!(
            !relax_write(&m, m.root(), Ipa(0x4000_0000)),
            "a second relax finds it writable"
        );
        assert!(translate(&m, m.root(), Ipa(0x4000_0000)).unwrap().1.write);
        assert!(!translate(&m, m.root(), Ipa(0x4000_3000)).unwrap().1.write);
        assert!(!relax_write(&m, m.root(), Ipa(0x4000_2000)), "unmapped");
    }

    #[test]
    fn refuses_blocks_and_bad_ranges_skips_holes() {
        let m = Mem::new(16);
        map(&m, 0x4000_0000, 2, 0x8000_0000, Perms::RW);
        let mut rec = Rec::new();
        assert_eq!(
            write_protect_range(&m, m.root(), Ipa(0x4000_0000), 0x1000, &mut rec),
            Err(UnmapError::BlockInTheWay)
        );
        assert_eq!(
            write_protect_range(&m, m.root(), Ipa(0x800), 0x1000, &mut rec),
            Err(UnmapError::BadIpa)
        );
        assert_eq!(
            write_protect_range(&m, m.root(), Ipa(0), 1 << 30, &mut rec),
            Ok(0),
            "an empty GiB is skipped"
        );
        assert!(
            !relax_write(&m, m.root(), Ipa(0x4000_0000)),
            "a block is not relaxed"
        );
    }
}
