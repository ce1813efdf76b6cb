//! The target half of the on-target differential test: runs the seeded operation
//! sequences of `capseq` against the real kernel and prints, per sequence, a digest of
//! every result and of the final state of the compared slots. `cargo xtask test` runs the
//! same sequences on the model and compares the digests.

use crate::util::*;
use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::debug_slot;
use capseq::{compared_slots, op, Digest, Op, Rng, REGION, UNTYPED_BITS};

/// Where the big Untyped is parked (fresh Untypeds for each sequence come from it).
const PARKED: u64 = 900;
/// Where the Untyped that was in slot 2 goes.
const ASIDE: u64 = 901;
/// Operations per sequence.
pub const LEN: u64 = 50;

fn code(r: Result<(), bulkhead_sys::Error>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => e as u64,
    }
}

fn run_op(o: Op) -> u64 {
    code(match o {
        Op::Copy { dest, src, rights } => copy(dest, src, rights),
        Op::Mint {
            dest,
            src,
            rights,
            badge,
        } => mint(dest, src, rights, badge),
        Op::Move { dest, src } => mv(dest, src),
        Op::Mutate { dest, src, badge } => mutate(dest, src, badge),
        Op::Delete { slot } => delete(slot),
        Op::Revoke { slot } => revoke(slot),
        Op::Retype {
            untyped,
            ty,
            size_bits,
            dest,
            offset,
            count,
        } => retype(untyped, ty, size_bits, dest, offset, count),
    })
}

/// Runs `count` sequences; 0 when every step could be carried out.
pub fn run(count: u64) -> u64 {
    let Some((big, _, _)) = largest_untyped() else {
        defmt::error!("capdiff: no Untyped memory");
        return 1;
    };
    // Slot 2 must hold the sequence's Untyped: move what is there aside and park the big one.
    if big != 2 && (mv(ASIDE, 2).is_err() || mv(PARKED, big).is_err())
        || big == 2 && mv(PARKED, 2).is_err()
    {
        defmt::error!("capdiff: could not arrange the slots");
        return 1;
    }
    let parked = place(PARKED).map_or(0, |p| p.0);
    for seed in 0..count {
        let _ = revoke(PARKED);
        for s in REGION {
            let _ = delete(s);
        }
        if retype(PARKED, ObjectType::Untyped as u64, UNTYPED_BITS, ROOT, 2, 1).is_err() {
            defmt::error!("capdiff: no fresh Untyped for sequence {=u64}", seed);
            return 1;
        }
        if seed == 0 {
            let root = place(ROOT).map_or(0, |p| p.0) - 32;
            let base = match cap_at(2) {
                kcore::cap::Cap::Untyped { base, .. } => base,
                _ => 0,
            };
            defmt::info!(
                "CAPDIFF boot root={=u64:#x} untyped={=u64:#x} sequences={=u64} length={=u64}",
                root,
                base,
                count,
                LEN
            );
        }
        let mut rng = Rng::new(seed);
        let mut d = Digest::default();
        for _ in 0..LEN {
            d.word(run_op(op(&mut rng)));
        }
        for s in compared_slots() {
            match debug_slot(s, 64) {
                Ok(info) => {
                    d.word(info.cap[0]);
                    d.word(info.cap[1]);
                    d.word(info.parent.filter(|&p| p != parked).unwrap_or(u64::MAX));
                }
                Err(e) => d.word(1000 + e as u64),
            }
        }
        defmt::info!("CAPDIFF seq {=u64} {=u64:#x}", seed, d.0);
    }
    let _ = revoke(PARKED);
    for s in REGION {
        let _ = delete(s);
    }
    0
}
