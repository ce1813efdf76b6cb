//! The model's form of the `capseq` operations (the sequences of the on-target
//! differential test), so the host side of that test and its host check share one mapping.

use crate::{Addr, Op};

/// The model operation for a `capseq` operation (every address at depth 64).
pub fn from_capseq(o: capseq::Op) -> Op {
    let a = |index| Addr { index, depth: 64 };
    match o {
        capseq::Op::Copy { dest, src, rights } => Op::Copy {
            dest: a(dest),
            src: a(src),
            rights,
        },
        capseq::Op::Mint {
            dest,
            src,
            rights,
            badge,
        } => Op::Mint {
            dest: a(dest),
            src: a(src),
            rights,
            badge,
        },
        capseq::Op::Move { dest, src } => Op::Move {
            dest: a(dest),
            src: a(src),
        },
        capseq::Op::Mutate { dest, src, badge } => Op::Mutate {
            dest: a(dest),
            src: a(src),
            badge,
        },
        capseq::Op::Delete { slot } => Op::Delete { slot: a(slot) },
        capseq::Op::Revoke { slot } => Op::Revoke { slot: a(slot) },
        capseq::Op::Retype {
            untyped,
            ty,
            size_bits,
            dest,
            offset,
            count,
        } => Op::Retype {
            untyped: a(untyped),
            ty,
            size_bits,
            dest: a(dest),
            offset,
            count,
        },
    }
}
