//! The boot-time physical frame allocator.
//!
//! Hands out 4 KiB frames from the free RAM ranges left after the kernel image, the DTB
//! and the boot payload are carved out. Allocation bumps through the ranges; freed frames
//! go on a fixed-capacity list of runs (a frame freed next to the last run extends it, so
//! a task's pages, freed in the order they were allocated, make a few long runs) and are
//! reused first, single frames and aligned blocks alike: a boot task started again after
//! a fault gets its predecessor's memory back. (The capability kernel replaces this
//! with Untyped memory; until then it is what backs the first tasks.)
//!
//! Invariant: a frame is never handed out twice without being freed in between, and no
//! frame overlaps a reserved range.

use crate::addr::{PhysAddr, PhysRange, PAGE_SIZE};

/// Most RAM ranges tracked.
pub const MAX_RANGES: usize = 16;
/// Most runs of freed frames remembered for reuse (the allocator is built on the boot
/// stack: 8 KiB of runs, as much as it can spare).
pub const FREE_RUNS: usize = 512;

/// Why a range could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Too many ranges.
    Full,
    /// Freed an address that was not allocated from here (unaligned or outside).
    NotOurs,
}

/// A bump allocator over RAM ranges with a reuse stack.
#[derive(Debug)]
pub struct FrameAllocator {
    ranges: heapless::Vec<PhysRange, MAX_RANGES>,
    /// Index of the range being bumped through, and the next free address in it.
    cur: usize,
    next: u64,
    freed: heapless::Vec<PhysRange, FREE_RUNS>,
    allocated: u64,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        FrameAllocator {
            ranges: heapless::Vec::new(),
            cur: 0,
            next: 0,
            freed: heapless::Vec::new(),
            allocated: 0,
        }
    }

    /// Builds the free ranges: `ram` minus every `reserved` range, page aligned.
    pub fn from_ram(ram: &[PhysRange], reserved: &[PhysRange]) -> Self {
        let mut a = FrameAllocator::new();
        for r in ram {
            a.add_minus(*r, reserved);
        }
        a.cur = 0;
        a.next = a.ranges.first().map_or(0, |r| r.start.0);
        a
    }

    fn add_minus(&mut self, r: PhysRange, reserved: &[PhysRange]) {
        // Cut `r` at the first reserved range that overlaps it and recurse on the rest.
        for res in reserved {
            if r.overlaps(res) {
                if r.start < res.start {
                    self.add_minus(
                        PhysRange {
                            start: r.start,
                            end: res.start,
                        },
                        reserved,
                    );
                }
                if res.end < r.end {
                    self.add_minus(
                        PhysRange {
                            start: res.end,
                            end: r.end,
                        },
                        reserved,
                    );
                }
                return;
            }
        }
        let (Some(start), end) = (r.start.align_up(PAGE_SIZE), r.end.align_down(PAGE_SIZE)) else {
            return;
        };
        if start < end {
            let _ = self.ranges.push(PhysRange { start, end });
        }
    }

    /// The free ranges.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    /// Frames handed out and not freed.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Frames still available.
    pub fn available(&self) -> u64 {
        let mut n: u64 = self
            .freed
            .iter()
            .map(|r| (r.end.0 - r.start.0) / PAGE_SIZE)
            .sum();
        for (i, r) in self.ranges.iter().enumerate().skip(self.cur) {
            let from = if i == self.cur { self.next } else { r.start.0 };
            n += (r.end.0 - from) / PAGE_SIZE;
        }
        n
    }

    /// One frame, or `None` when memory is exhausted.
    pub fn alloc(&mut self) -> Option<PhysAddr> {
        if let Some(run) = self.freed.last_mut() {
            run.end = PhysAddr(run.end.0 - PAGE_SIZE);
            let f = run.end;
            if run.start == run.end {
                self.freed.pop();
            }
            self.allocated += 1;
            return Some(f);
        }
        while let Some(r) = self.ranges.get(self.cur) {
            if self.next + PAGE_SIZE <= r.end.0 {
                let f = PhysAddr(self.next);
                self.next += PAGE_SIZE;
                self.allocated += 1;
                return Some(f);
            }
            self.cur += 1;
            self.next = self.ranges.get(self.cur).map_or(0, |r| r.start.0);
        }
        None
    }

    /// `pages` contiguous frames whose first is aligned to `align` (a power of two, at
    /// least a page): a run of freed frames if the reuse stack holds one (a task started
    /// again after its predecessor freed the same kind of block), else from the bump
    /// region, where frames skipped for alignment go to the reuse stack.
    pub fn alloc_aligned(&mut self, pages: u64, align: u64) -> Option<PhysAddr> {
        if let Some((i, start)) = self.freed_run(pages, align) {
            let run = self.freed.swap_remove(i);
            let end = PhysAddr(start.0 + pages * PAGE_SIZE);
            for piece in [
                PhysRange {
                    start: run.start,
                    end: start,
                },
                PhysRange {
                    start: end,
                    end: run.end,
                },
            ] {
                // A piece that finds no room is leaked (as frames beyond the list are).
                if piece.start < piece.end {
                    let _ = self.freed.push(piece);
                }
            }
            self.allocated += pages;
            return Some(start);
        }
        while let Some(r) = self.ranges.get(self.cur).copied() {
            let start = PhysAddr(self.next).align_up(align)?;
            let end = start.0.checked_add(pages * PAGE_SIZE)?;
            if end <= r.end.0 {
                while self.next < start.0 {
                    let skipped = PhysAddr(self.next);
                    self.next += PAGE_SIZE;
                    self.allocated += 1;
                    // Cannot fail: the frame is ours and was counted as allocated.
                    let _ = self.free(skipped);
                }
                self.next = end;
                self.allocated += pages;
                return Some(start);
            }
            self.cur += 1;
            self.next = self.ranges.get(self.cur).map_or(0, |r| r.start.0);
        }
        None
    }

    /// A freed run holding `pages` frames from an address aligned to `align`: (its index,
    /// that address).
    fn freed_run(&self, pages: u64, align: u64) -> Option<(usize, PhysAddr)> {
        self.freed.iter().enumerate().find_map(|(i, r)| {
            let start = r.start.align_up(align)?;
            (start.0.checked_add(pages * PAGE_SIZE)? <= r.end.0).then_some((i, start))
        })
    }

    /// Takes every free range beyond the first `keep` frames of the bump region away from
    /// this allocator (they become Untyped memory); returns them.
    pub fn split_off(&mut self, keep: u64) -> heapless::Vec<PhysRange, MAX_RANGES> {
        let mut out = heapless::Vec::new();
        let mut left = keep;
        let mut kept: heapless::Vec<PhysRange, MAX_RANGES> = heapless::Vec::new();
        for (i, r) in self.ranges.iter().enumerate() {
            if i < self.cur {
                let _ = kept.push(*r);
                continue;
            }
            let from = if i == self.cur { self.next } else { r.start.0 };
            let frames = (r.end.0 - from) / PAGE_SIZE;
            let take = frames.min(left);
            left -= take;
            let cut = from + take * PAGE_SIZE;
            let _ = kept.push(PhysRange {
                start: r.start,
                end: PhysAddr(cut),
            });
            if cut < r.end.0 {
                let _ = out.push(PhysRange {
                    start: PhysAddr(cut),
                    end: r.end,
                });
            }
        }
        self.ranges = kept;
        out
    }

    /// Gives a frame back. A frame that neither extends the last run nor finds room for a
    /// run of its own is leaked (it stays counted as given back).
    pub fn free(&mut self, f: PhysAddr) -> Result<(), FrameError> {
        if !f.is_aligned(PAGE_SIZE) || !self.ranges.iter().any(|r| r.contains(f)) {
            return Err(FrameError::NotOurs);
        }
        self.allocated -= 1;
        if let Some(run) = self.freed.last_mut() {
            if f == run.end {
                run.end = PhysAddr(f.0 + PAGE_SIZE);
                return Ok(());
            }
            if f.0 + PAGE_SIZE == run.start.0 {
                run.start = f;
                return Ok(());
            }
        }
        let _ = self.freed.push(PhysRange {
            start: f,
            end: PhysAddr(f.0 + PAGE_SIZE),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn r(s: u64, e: u64) -> PhysRange {
        PhysRange {
            start: PhysAddr(s),
            end: PhysAddr(e),
        }
    }

    #[test]
    fn carves_reserved_ranges() {
        let a = FrameAllocator::from_ram(
            &[r(0x4000_0000, 0x4010_0000)],
            &[r(0x4000_0000, 0x4000_2000), r(0x4000_8800, 0x4000_9000)],
        );
        assert_eq!(
            a.ranges(),
            &[r(0x4000_2000, 0x4000_8000), r(0x4000_9000, 0x4010_0000)]
        );
    }

    #[test]
    fn exhausts_and_reuses() {
        let mut a = FrameAllocator::from_ram(&[r(0x1000, 0x3000), r(0x8000, 0x9000)], &[]);
        assert_eq!(a.available(), 3);
        let f: Vec<_> = (0..3).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(
            f,
            vec![PhysAddr(0x1000), PhysAddr(0x2000), PhysAddr(0x8000)]
        );
        assert_eq!(a.alloc(), None);
        a.free(f[1]).unwrap();
        assert_eq!(a.free(PhysAddr(0x5000)), Err(FrameError::NotOurs));
        assert_eq!(a.free(PhysAddr(0x1001)), Err(FrameError::NotOurs));
        assert_eq!(a.alloc(), Some(f[1]));
        assert_eq!(a.allocated(), 3);
    }

    #[test]
    fn aligned_runs() {
        let mut a = FrameAllocator::from_ram(&[r(0x1000, 0x10000)], &[]);
        let root = a.alloc_aligned(2, 0x2000).unwrap();
        assert_eq!(root, PhysAddr(0x2000));
        assert_eq!(a.allocated(), 2);
        // The skipped frame at 0x1000 is reused first.
        assert_eq!(a.alloc(), Some(PhysAddr(0x1000)));
        assert_eq!(a.alloc(), Some(PhysAddr(0x4000)));
        assert_eq!(a.alloc_aligned(16, 0x1000), None);
    }

    #[test]
    fn freed_aligned_runs_are_reused() {
        // Exactly room for one 8-frame block aligned to 32 KiB and nothing else.
        let mut a = FrameAllocator::from_ram(&[r(0x8000, 0x10000)], &[]);
        let block = a.alloc_aligned(8, 0x8000).unwrap();
        assert_eq!(
            a.alloc_aligned(8, 0x8000),
            None,
            "the bump region is used up"
        );
        for i in (0..8).rev() {
            a.free(PhysAddr(block.0 + i * PAGE_SIZE)).unwrap();
        }
        // The freed block comes back (a task started again after its predecessor ended).
        assert_eq!(a.alloc_aligned(8, 0x8000), Some(block));
        assert_eq!(a.allocated(), 8);
        assert_eq!(
            a.alloc(),
            None,
            "none of its frames is left on the reuse stack"
        );
        // A run with a hole, or not aligned, is not taken.
        for i in [0u64, 1, 3, 4, 5, 6, 7] {
            a.free(PhysAddr(block.0 + i * PAGE_SIZE)).unwrap();
        }
        assert_eq!(a.alloc_aligned(8, 0x8000), None);
        assert_eq!(a.alloc_aligned(2, 0x2000), Some(PhysAddr(block.0)));
        assert_eq!(
            a.alloc_aligned(2, 0x8000),
            None,
            "0xc000 is not 32 KiB aligned"
        );
    }

    #[test]
    fn split_off_keeps_the_first_frames() {
        let mut a = FrameAllocator::from_ram(&[r(0x1000, 0x9000), r(0x20000, 0x30000)], &[]);
        assert_eq!(a.alloc(), Some(PhysAddr(0x1000)));
        let taken = a.split_off(3);
        assert_eq!(&taken[..], &[r(0x5000, 0x9000), r(0x20000, 0x30000)]);
        assert_eq!(a.available(), 3);
        assert_eq!(a.alloc(), Some(PhysAddr(0x2000)));
        assert_eq!(a.alloc(), Some(PhysAddr(0x3000)));
        assert_eq!(a.alloc(), Some(PhysAddr(0x4000)));
        assert_eq!(a.alloc(), None);
    }

    proptest! {
        #[test]
        fn never_hands_out_reserved_or_twice(
            ops in proptest::collection::vec(any::<bool>(), 1..300),
            res_start in 0u64..64, res_len in 0u64..16,
        ) {
            let ram = [r(0, 64 * PAGE_SIZE), r(100 * PAGE_SIZE, 110 * PAGE_SIZE)];
            let reserved = r(res_start * PAGE_SIZE + 123, (res_start + res_len) * PAGE_SIZE + 123);
            let mut a = FrameAllocator::from_ram(&ram, &[reserved]);
            let mut live: Vec<PhysAddr> = Vec::new();
            let mut seen = HashSet::new();
            for alloc in ops {
                if alloc || live.is_empty() {
                    if let Some(f) = a.alloc() {
                        prop_assert!(f.is_aligned(PAGE_SIZE));
                        prop_assert!(!r(f.0, f.0 + PAGE_SIZE).overlaps(&reserved) || res_len == 0);
                        prop_assert!(!live.contains(&f));
                        live.push(f);
                        seen.insert(f);
                    }
                } else {
                    let f = live.swap_remove(0);
                    a.free(f).unwrap();
                }
                prop_assert_eq!(a.allocated(), live.len() as u64);
            }
        }
    }
}

/// Splits `r` into the fewest naturally aligned power-of-two blocks of at least
/// `2^min_bits` and at most `2^max_bits` bytes, in address order (`(base, size_bits)`);
/// the unaligned edges smaller than `2^min_bits` are left out.
pub fn pow2_blocks(r: PhysRange, min_bits: u32, max_bits: u32) -> impl Iterator<Item = (u64, u32)> {
    let mut at = r.start.align_up(1 << min_bits).map_or(u64::MAX, |a| a.0);
    let end = r.end.0;
    core::iter::from_fn(move || {
        if at >= end || end - at < 1 << min_bits {
            return None;
        }
        let align_bits = if at == 0 { 63 } else { at.trailing_zeros() };
        let fit_bits = 63 - (end - at).leading_zeros();
        let bits = align_bits.min(fit_bits).min(max_bits);
        let block = (at, bits);
        at += 1 << bits;
        Some(block)
    })
}

#[cfg(test)]
mod block_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_into_aligned_blocks() {
        let r = PhysRange {
            start: PhysAddr(0x4028_8000),
            end: PhysAddr(0x8000_0000),
        };
        let v: Vec<_> = pow2_blocks(r, 12, 47).collect();
        assert_eq!(v[0], (0x4028_8000, 15));
        assert_eq!(*v.last().unwrap(), (0x6000_0000, 29));
    }

    proptest! {
        #[test]
        fn blocks_tile_the_range(start in 0u64..1 << 40, len in 0u64..1 << 32) {
            let r = PhysRange { start: PhysAddr(start), end: PhysAddr(start + len) };
            let mut expect = PhysAddr(start).align_up(4096).unwrap().0;
            for (base, bits) in pow2_blocks(r, 12, 30) {
                prop_assert_eq!(base, expect);
                prop_assert!(base % (1 << bits) == 0 && (12..=30).contains(&bits));
                prop_assert!(base + (1 << bits) <= start + len);
                expect = base + (1 << bits);
            }
            prop_assert!(start + len - expect.min(start + len) < 4096 || expect > start + len);
        }
    }
}

/// Cuts a naturally aligned block of `2^bits` bytes out of `ranges` (the first that has
/// one, from the highest address down), leaving what is around it in the list; `None`
/// if no range holds such a block or the list has no room for the remainders.
pub fn carve_aligned(
    ranges: &mut heapless::Vec<PhysRange, MAX_RANGES>,
    bits: u32,
) -> Option<PhysRange> {
    let size = 1u64.checked_shl(bits)?;
    for i in (0..ranges.len()).rev() {
        let r = ranges[i];
        // The highest aligned block inside the range.
        let Some(top) = r.end.0.checked_sub(size) else {
            continue;
        };
        let start = top & !(size - 1);
        if start < r.start.0 {
            continue;
        }
        let block = PhysRange {
            start: PhysAddr(start),
            end: PhysAddr(start + size),
        };
        let below = PhysRange {
            start: r.start,
            end: PhysAddr(start),
        };
        let above = PhysRange {
            start: PhysAddr(start + size),
            end: r.end,
        };
        let pieces = [below, above];
        let keep = pieces.iter().filter(|p| p.end.0 > p.start.0).count();
        if ranges.len() - 1 + keep > MAX_RANGES {
            return None;
        }
        ranges.remove(i);
        for p in pieces.into_iter().filter(|p| p.end.0 > p.start.0) {
            let _ = ranges.push(p);
        }
        return Some(block);
    }
    None
}

#[cfg(test)]
mod carve_tests {
    use super::*;

    #[test]
    fn carves_aligned_blocks_and_keeps_the_rest() {
        let mut v: heapless::Vec<PhysRange, MAX_RANGES> = heapless::Vec::new();
        v.push(PhysRange::new(0x4700_0000, 0x3900_0000).unwrap())
            .unwrap();
        let a = carve_aligned(&mut v, 28).unwrap();
        assert_eq!((a.start.0, a.end.0), (0x7000_0000, 0x8000_0000));
        let b = carve_aligned(&mut v, 28).unwrap();
        assert_eq!((b.start.0, b.end.0), (0x6000_0000, 0x7000_0000));
        let c = carve_aligned(&mut v, 26).unwrap();
        assert_eq!(c.start.0 % (1 << 26), 0);
        let total: u64 = v.iter().map(|r| r.end.0 - r.start.0).sum();
        assert_eq!(total, 0x3900_0000 - 2 * 0x1000_0000 - 0x400_0000);
        for r in &v {
            assert!(r.end.0 <= c.start.0 || r.start.0 >= c.end.0, "no overlap");
        }
        assert!(carve_aligned(&mut v, 30).is_none(), "no aligned GiB left");
    }
}
