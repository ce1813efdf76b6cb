//! The sequences of the on-target differential test (`capseq`), run on the host against
//! both the model and the kernel's capability code, with the target's CSpace layout: the
//! host half of that test must agree with itself before the target is asked.

use cap_model::{Addr, BootConfig, Model, Op};
use capseq::{op, Rng, ROOT_GUARD_BITS, ROOT_RADIX, UNTYPED_BITS};
use kcore::cap::{self as k, Cap, Cte, SlotMem};
use std::collections::HashMap;

#[derive(Default)]
struct Mem(HashMap<u64, Cte>);
impl SlotMem for Mem {
    fn read(&self, a: u64) -> Cte {
        self.0.get(&a).copied().unwrap_or_default()
    }
    fn write(&mut self, a: u64, c: Cte) {
        if c == Cte::default() {
            self.0.remove(&a);
        } else {
            self.0.insert(a, c);
        }
    }
    fn clear(&mut self, a: u64, s: u64) {
        self.0.retain(|&x, _| x < a || x >= a + s);
    }
}

/// The model's form of a `capseq` operation.
pub fn to_model(o: capseq::Op) -> Op {
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

#[test]
fn capseq_sequences_agree_on_the_host() {
    let cfg = BootConfig {
        root_addr: 0x4100_0000,
        root_radix: ROOT_RADIX,
        root_guard_bits: ROOT_GUARD_BITS,
        untypeds: vec![(0x6000_0000, UNTYPED_BITS, false)],
    };
    for seed in 0..500 {
        let mut model = Model::boot(&cfg);
        let mut mem = Mem::default();
        let root = k::boot(
            &mut mem,
            cfg.root_addr,
            cfg.root_radix,
            cfg.root_guard_bits,
            &cfg.untypeds,
        );
        let mut rng = Rng::new(seed);
        for i in 0..50 {
            let o = op(&mut rng);
            let a = |index| k::Addr { index, depth: 64 };
            let got = match o {
                capseq::Op::Copy { dest, src, rights } => {
                    k::copy(&mut mem, &root, a(dest), a(src), rights)
                }
                capseq::Op::Mint {
                    dest,
                    src,
                    rights,
                    badge,
                } => k::mint(&mut mem, &root, a(dest), a(src), rights, badge),
                capseq::Op::Move { dest, src } => k::move_cap(&mut mem, &root, a(dest), a(src)),
                capseq::Op::Mutate { dest, src, badge } => {
                    k::mutate(&mut mem, &root, a(dest), a(src), badge)
                }
                capseq::Op::Delete { slot } => k::delete(&mut mem, &root, a(slot)),
                capseq::Op::Revoke { slot } => k::revoke(&mut mem, &root, a(slot)),
                capseq::Op::Retype {
                    untyped,
                    ty,
                    size_bits,
                    dest,
                    offset,
                    count,
                } => k::retype(
                    &mut mem,
                    &root,
                    a(untyped),
                    ty,
                    size_bits,
                    a(dest),
                    offset,
                    count,
                ),
            };
            let want = model.apply(&to_model(o));
            assert_eq!(got, want, "seed {seed}, operation {i}: {o:?}");
        }
        let _ = Cap::Null;
    }
}
