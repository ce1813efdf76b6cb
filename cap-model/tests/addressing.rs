//! Slot addressing ("Addressing" in `docs/design/capabilities.md`), one test per rule.

mod common;

use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::Error;
use cap_model::{Addr, BootConfig, Model, Op};
use common::*;

#[test]
fn depth_outside_1_to_64_is_range_error() {
    let m = standard();
    assert_eq!(
        m.resolve(Addr { index: 1, depth: 0 }),
        Err(Error::RangeError)
    );
    assert_eq!(
        m.resolve(Addr {
            index: 1,
            depth: 65
        }),
        Err(Error::RangeError)
    );
    assert_eq!(m.resolve(r(1)), Ok((ROOT, 1)));
}

#[test]
fn too_few_bits_for_a_level_is_failed_lookup() {
    // The standard root needs 56 + 8 = 64 bits.
    let m = standard();
    assert_eq!(
        m.resolve(Addr {
            index: 1,
            depth: 63
        }),
        Err(Error::FailedLookup)
    );
}

#[test]
fn guard_mismatch_is_failed_lookup() {
    let m = standard();
    assert_eq!(m.resolve(r(1 << 8 | 1)), Err(Error::FailedLookup));
    assert_eq!(m.resolve(r(1 << 63 | 1)), Err(Error::FailedLookup));
}

#[test]
fn guard_bits_must_match_the_guard() {
    let cfg = BootConfig {
        root_guard_bits: 4,
        ..BootConfig::nested()
    };
    let m = Model::boot(&cfg);
    // Guard 0 in the 4 bits above the 4-bit slot index, at depth 8.
    assert_eq!(m.resolve(Addr { index: 3, depth: 8 }), Ok((ROOT, 3)));
    assert_eq!(
        m.resolve(Addr {
            index: 0x13,
            depth: 8
        }),
        Err(Error::FailedLookup)
    );
}

#[test]
fn bits_above_depth_are_ignored() {
    let m = nested();
    assert_eq!(
        m.resolve(Addr {
            index: 0xabc3,
            depth: 4
        }),
        Ok((ROOT, 3))
    );
}

#[test]
fn a_cnode_cap_in_the_slot_continues_the_walk() {
    let mut m = nested();
    // Slot 1 holds the root cap itself: (1 << 4 | i, 8) is root slot i again.
    assert_eq!(m.resolve(n2(1, 4, 3)), Ok((ROOT, 3)));
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 2, n(1), 5, 1));
    let addr = cnode_addr(&m, 5);
    assert_eq!(m.resolve(n2(5, 2, 3)), Ok((addr, 3)));
    // Three levels: root slot 5, child slot 1 (empty for now), ...
    assert_eq!(
        m.resolve(Addr {
            index: (5 << 2 | 1) << 2 | 2,
            depth: 8
        }),
        Err(Error::FailedLookup)
    );
    ok(
        &mut m,
        Op::Copy {
            dest: n2(5, 2, 1),
            src: n(5),
            rights: 0,
        },
    );
    assert_eq!(
        m.resolve(Addr {
            index: (5 << 2 | 1) << 2 | 2,
            depth: 8
        }),
        Ok((addr, 2))
    );
}

#[test]
fn a_non_cnode_on_the_way_is_failed_lookup() {
    let mut m = nested();
    ok(&mut m, retype_op(n(2), ObjectType::Endpoint, 0, n(1), 5, 1));
    assert_eq!(m.resolve(n2(5, 2, 0)), Err(Error::FailedLookup));
    // An empty slot on the way too.
    assert_eq!(m.resolve(n2(6, 2, 0)), Err(Error::FailedLookup));
}

#[test]
fn a_child_cnode_without_enough_bits_left_is_failed_lookup() {
    let mut m = nested();
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 3, n(1), 5, 1));
    // Radix 3 needs 3 more bits; 2 are left.
    assert_eq!(m.resolve(n2(5, 2, 0)), Err(Error::FailedLookup));
}
