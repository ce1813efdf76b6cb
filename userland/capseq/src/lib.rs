//! Seeded sequences of capability operations, generated identically on the host (where the
//! model runs them) and on the target (where the kernel does): the on-target differential
//! test compares the two by a hash of results and final state.
//!
//! No endpoints are created: on the target a Call on an endpoint cap is IPC rather than an
//! object invocation, and the model does not model IPC (endpoint caps are covered by the
//! host differential test). Slots used: 1 (the root CNode's own cap; only ever a source), 2 (a fresh Untyped of
//! 2^[`UNTYPED_BITS`] bytes), and the region [`REGION`]. All addresses are depth 64 in a
//! root CNode of radix 10 with a 54-bit guard (a Bulkhead boot task's CSpace).
#![no_std]
#![forbid(unsafe_code)]

/// First slot of the working region.
pub const REGION_START: u64 = 100;
/// Slots in the working region.
pub const REGION_LEN: u64 = 32;
/// The working region.
pub const REGION: core::ops::Range<u64> = REGION_START..REGION_START + REGION_LEN;
/// Size of the Untyped in slot 2.
pub const UNTYPED_BITS: u32 = 20;
/// Root CNode radix and guard of the target's CSpace.
pub const ROOT_RADIX: u32 = 10;
/// See [`ROOT_RADIX`].
pub const ROOT_GUARD_BITS: u32 = 54;

/// One operation (slot indices at depth 64 from the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// CNode Copy.
    Copy { dest: u64, src: u64, rights: u8 },
    /// CNode Mint.
    Mint {
        dest: u64,
        src: u64,
        rights: u8,
        badge: u64,
    },
    /// CNode Move.
    Move { dest: u64, src: u64 },
    /// CNode Mutate.
    Mutate { dest: u64, src: u64, badge: u64 },
    /// CNode Delete.
    Delete { slot: u64 },
    /// CNode Revoke.
    Revoke { slot: u64 },
    /// Untyped Retype into the CNode whose cap is in `dest`.
    Retype {
        untyped: u64,
        ty: u64,
        size_bits: u32,
        dest: u64,
        offset: u64,
        count: u64,
    },
}

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn region(r: &mut Rng) -> u64 {
    REGION_START + r.below(REGION_LEN)
}

/// A slot that may be changed: the Untyped's or one of the region.
fn target(r: &mut Rng) -> u64 {
    if r.below(6) == 0 {
        2
    } else {
        region(r)
    }
}

/// A slot to read from: also the root CNode's own cap.
fn source(r: &mut Rng) -> u64 {
    match r.below(8) {
        0 => 1,
        1 => 2,
        _ => region(r),
    }
}

fn badge(r: &mut Rng) -> u64 {
    match r.below(8) {
        0 => 0,
        1 => 1 << 48,
        _ => 1 + r.below(1000),
    }
}

/// The next operation of the sequence `r` generates.
pub fn op(r: &mut Rng) -> Op {
    match r.below(10) {
        0..=2 => {
            let (ty, size_bits) = match r.below(7) {
                0 => (0, 12 + r.below(3) as u32),
                1 => (1, 0),
                2 => (3, 1),
                3 => (3, 0),
                4 => (4, 1 + r.below(3) as u32),
                5 => (5, 0),
                _ => (r.below(12), r.below(8) as u32),
            };
            // Never endpoints: on the target a Call on an endpoint cap is IPC, not an
            // invocation, so a later Retype "from" one would block the test thread.
            let ty = if ty == 2 { 3 } else { ty };
            let into_root = r.below(4) != 0;
            let (dest, offset) = if into_root {
                (1, REGION_START + r.below(REGION_LEN + 2))
            } else {
                (region(r), r.below(8))
            };
            Op::Retype {
                untyped: target(r),
                ty,
                size_bits,
                dest,
                offset,
                count: 1 + r.below(3),
            }
        }
        3 => Op::Copy {
            dest: region(r),
            src: source(r),
            rights: r.below(17) as u8,
        },
        4 => Op::Mint {
            dest: region(r),
            src: source(r),
            rights: r.below(17) as u8,
            badge: badge(r),
        },
        5 => Op::Move {
            dest: region(r),
            src: target(r),
        },
        6 => Op::Mutate {
            dest: region(r),
            src: target(r),
            badge: badge(r),
        },
        7 | 8 => Op::Delete { slot: target(r) },
        _ => Op::Revoke { slot: target(r) },
    }
}

/// FNV-1a, 64-bit: the digest both sides compute.
#[derive(Clone, Copy)]
pub struct Digest(pub u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    /// Adds a word.
    pub fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The slots whose final state is compared, in order.
pub fn compared_slots() -> impl Iterator<Item = u64> {
    [1u64, 2].into_iter().chain(REGION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_deterministic_and_varied() {
        let a: [Op; 50] = {
            let mut r = Rng::new(7);
            core::array::from_fn(|_| op(&mut r))
        };
        let mut r = Rng::new(7);
        for x in a {
            assert_eq!(op(&mut r), x);
        }
        let mut kinds = [false; 7];
        let mut r = Rng::new(1);
        for _ in 0..500 {
            kinds[match op(&mut r) {
                Op::Copy { .. } => 0,
                Op::Mint { .. } => 1,
                Op::Move { .. } => 2,
                Op::Mutate { .. } => 3,
                Op::Delete { .. } => 4,
                Op::Revoke { .. } => 5,
                Op::Retype { .. } => 6,
            }] = true;
        }
        assert!(kinds.iter().all(|&k| k));
    }
}
