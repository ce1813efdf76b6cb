//! Copy and Mint: one test per documented check, in order, and what a success makes.

mod common;

use bulkhead_sys::cap::{rights, ObjectType, MAX_BADGE};
use bulkhead_sys::Error;
use cap_model::{Addr, BootConfig, CapView, Model, Op, MAX_DERIVATION_DEPTH};
use common::*;

/// A standard system with an endpoint in root slot 4 and a frame in slot 5.
fn setup() -> Model {
    let mut m = standard();
    make(&mut m, ObjectType::Endpoint, 0, 4, 1);
    make(&mut m, ObjectType::Frame4K, 0, 5, 1);
    m
}

fn copy(dest: u64, src: u64, mask: u8) -> Op {
    Op::Copy {
        dest: r(dest),
        src: r(src),
        rights: mask,
    }
}

fn mint(dest: u64, src: u64, mask: u8, badge: u64) -> Op {
    Op::Mint {
        dest: r(dest),
        src: r(src),
        rights: mask,
        badge,
    }
}

#[test]
fn check1_dest_is_resolved_first() {
    let mut m = setup();
    let bad = Addr { index: 8, depth: 0 };
    let op = Op::Copy {
        dest: bad,
        src: r(1 << 60),
        rights: 0,
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    let op = Op::Copy {
        dest: r(1 << 60),
        src: bad,
        rights: 0,
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
}

#[test]
fn check1_dest_must_be_empty() {
    let mut m = setup();
    // Even with an unresolvable source and bad rights.
    let op = Op::Copy {
        dest: r(5),
        src: Addr { index: 0, depth: 0 },
        rights: 0xff,
    };
    assert_eq!(fails(&mut m, op), Error::DeleteFirst);
    assert_eq!(fails(&mut m, mint(4, 4, 0xff, 1)), Error::DeleteFirst);
}

#[test]
fn check2_src_must_resolve_and_not_be_empty() {
    let mut m = setup();
    assert_eq!(fails(&mut m, copy(8, 9, 0xff)), Error::FailedLookup);
    assert_eq!(fails(&mut m, copy(8, 1 << 60, 0xff)), Error::FailedLookup);
    let op = Op::Copy {
        dest: r(8),
        src: Addr {
            index: 4,
            depth: 65,
        },
        rights: 0xff,
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    // Copying an empty slot onto itself: the slot is empty, so the source check fails.
    assert_eq!(fails(&mut m, copy(8, 8, 0)), Error::FailedLookup);
}

#[test]
fn check3_rights_mask_must_have_only_defined_bits() {
    let mut m = setup();
    assert_eq!(fails(&mut m, copy(8, 4, 0x10)), Error::InvalidArgument);
    // Before the Untyped and badge checks of step 4.
    assert_eq!(fails(&mut m, copy(8, 2, 0x80)), Error::InvalidArgument);
    assert_eq!(
        fails(&mut m, mint(8, 4, 0x10, MAX_BADGE + 1)),
        Error::InvalidArgument
    );
}

#[test]
fn check4_untyped_cannot_be_copied_or_minted() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, copy(8, 2, rights::ALL)),
        Error::IllegalOperation
    );
    assert_eq!(fails(&mut m, copy(8, 3, 0)), Error::IllegalOperation);
    // Before the badge checks.
    assert_eq!(
        fails(&mut m, mint(8, 2, 0, MAX_BADGE + 1)),
        Error::IllegalOperation
    );
}

#[test]
fn check4_minting_a_badge_on_a_badged_cap_is_illegal() {
    let mut m = setup();
    ok(&mut m, mint(6, 4, rights::ALL, 7));
    assert_eq!(
        fails(&mut m, mint(8, 6, rights::ALL, 9)),
        Error::IllegalOperation
    );
    // Before the badge range check.
    assert_eq!(
        fails(&mut m, mint(8, 6, rights::ALL, MAX_BADGE + 1)),
        Error::IllegalOperation
    );
    // Badge 0 keeps the existing badge.
    ok(&mut m, mint(8, 6, rights::READ, 0));
    assert_eq!(cap(&m, 8).badge(), 7);
}

#[test]
fn check4_badge_above_max_is_invalid_argument() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, mint(8, 4, rights::ALL, MAX_BADGE + 1)),
        Error::InvalidArgument
    );
    assert_eq!(
        fails(&mut m, mint(8, 4, rights::ALL, u64::MAX)),
        Error::InvalidArgument
    );
    // Also for types without badges (the badge is dropped only once it is valid).
    assert_eq!(
        fails(&mut m, mint(8, 5, rights::ALL, MAX_BADGE + 1)),
        Error::InvalidArgument
    );
    ok(&mut m, mint(8, 4, rights::ALL, MAX_BADGE));
    assert_eq!(cap(&m, 8).badge(), MAX_BADGE);
}

#[test]
fn check4_badge_on_a_type_without_badges_is_ignored() {
    let mut m = setup();
    ok(&mut m, mint(8, 5, rights::READ, 5));
    assert_eq!(
        cap(&m, 8),
        CapView::Frame {
            addr: cap(&m, 5).object().addr,
            size_bits: 12,
            rights: rights::READ
        }
    );
    ok(&mut m, mint(9, 1, 0, 5));
    assert_eq!(cap(&m, 9), cap(&m, 1));
}

#[test]
fn check4_source_at_depth_limit_is_range_error() {
    // A radix-16 CNode in root slot 4 gives room for a chain of 65536 caps.
    let cfg = BootConfig {
        untypeds: vec![(RAM, 24, false)],
        ..BootConfig::nested()
    };
    let mut m = Model::boot(&cfg);
    m.apply(&retype_op(n(2), ObjectType::CNode, 16, n(1), 4, 1))
        .unwrap();
    m.apply(&retype_op(n(2), ObjectType::Endpoint, 0, n(1), 5, 1))
        .unwrap();
    let at = |i: u64| n2(4, 16, i);
    // The endpoint is at depth 1; its copy in slot 0 at depth 2, and so on.
    m.apply(&Op::Copy {
        dest: at(0),
        src: n(5),
        rights: rights::ALL,
    })
    .unwrap();
    for i in 1..=u64::from(MAX_DERIVATION_DEPTH) - 2 {
        m.apply(&Op::Copy {
            dest: at(i),
            src: at(i - 1),
            rights: rights::ALL,
        })
        .unwrap();
    }
    let last = u64::from(MAX_DERIVATION_DEPTH) - 2;
    let cnode = cnode_addr(&m, 4);
    assert_eq!(m.depth((cnode, last)), Some(MAX_DERIVATION_DEPTH));
    let op = Op::Mint {
        dest: at(last + 1),
        src: at(last),
        rights: rights::ALL,
        badge: 3,
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    // One level up still works; deleting an ancestor lifts the chain below it.
    m.apply(&Op::Copy {
        dest: at(last + 1),
        src: at(last - 1),
        rights: rights::ALL,
    })
    .unwrap();
    m.apply(&Op::Delete { slot: at(0) }).unwrap();
    assert_eq!(m.depth((cnode, last)), Some(MAX_DERIVATION_DEPTH - 1));
    m.apply(&Op::Copy {
        dest: at(0),
        src: at(last),
        rights: rights::ALL,
    })
    .unwrap();
}

#[test]
fn check5_new_cap_masks_rights_and_is_a_child() {
    let mut m = setup();
    ok(&mut m, copy(8, 4, rights::READ | rights::GRANT));
    let v = root_slot(&m, 8).unwrap();
    assert_eq!(v.parent, Some((ROOT, 4)));
    assert_eq!(v.cap.rights(), rights::READ | rights::GRANT);
    // Masking again can only remove rights.
    ok(&mut m, copy(9, 8, rights::READ | rights::WRITE));
    assert_eq!(cap(&m, 9).rights(), rights::READ);
    assert_eq!(root_slot(&m, 9).unwrap().parent, Some((ROOT, 8)));
    // Types without meaningful rights keep all of them.
    ok(&mut m, copy(10, 1, 0));
    assert_eq!(cap(&m, 10), cap(&m, 1));
    assert_eq!(cap(&m, 10).rights(), rights::ALL);
}

#[test]
fn check5_copy_keeps_the_badge_and_mint_sets_it() {
    let mut m = setup();
    ok(&mut m, mint(8, 4, rights::WRITE, 42));
    assert_eq!(
        cap(&m, 8),
        CapView::Endpoint {
            addr: cap(&m, 4).object().addr,
            rights: rights::WRITE,
            badge: 42
        }
    );
    ok(&mut m, copy(9, 8, rights::ALL));
    assert_eq!(cap(&m, 9).badge(), 42);
    assert_eq!(cap(&m, 9).rights(), rights::WRITE);
    assert_eq!(cap(&m, 4).badge(), 0);
}

#[test]
fn copies_of_cnode_caps_keep_the_guard() {
    let mut m = standard();
    ok(&mut m, copy(8, 1, 0));
    assert_eq!(
        cap(&m, 8),
        CapView::CNode {
            addr: ROOT,
            radix: 8,
            guard_bits: 56,
            guard: 0
        }
    );
}
