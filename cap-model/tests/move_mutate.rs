//! Move and Mutate: one test per documented check, and what a success does to the tree.

mod common;

use bulkhead_sys::cap::{rights, ObjectType, MAX_BADGE};
use bulkhead_sys::Error;
use cap_model::{Addr, CapView, Model, Op};
use common::*;

/// A standard system with an endpoint in root slot 4, a copy of it in slot 5 and a copy
/// of that in slot 6.
fn setup() -> Model {
    let mut m = standard();
    make(&mut m, ObjectType::Endpoint, 0, 4, 1);
    ok(
        &mut m,
        Op::Copy {
            dest: r(5),
            src: r(4),
            rights: rights::ALL,
        },
    );
    ok(
        &mut m,
        Op::Copy {
            dest: r(6),
            src: r(5),
            rights: rights::READ,
        },
    );
    m
}

fn mv(dest: u64, src: u64) -> Op {
    Op::Move {
        dest: r(dest),
        src: r(src),
    }
}

fn mutate(dest: u64, src: u64, badge: u64) -> Op {
    Op::Mutate {
        dest: r(dest),
        src: r(src),
        badge,
    }
}

#[test]
fn check1_dest_must_resolve_and_be_empty() {
    let mut m = setup();
    let op = Op::Move {
        dest: Addr { index: 9, depth: 0 },
        src: r(4),
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    assert_eq!(fails(&mut m, mv(1 << 60, 4)), Error::FailedLookup);
    // A full destination wins over a bad source.
    assert_eq!(fails(&mut m, mv(5, 1 << 60)), Error::DeleteFirst);
    assert_eq!(
        fails(&mut m, mutate(5, 9, MAX_BADGE + 1)),
        Error::DeleteFirst
    );
}

#[test]
fn check2_src_must_resolve_and_not_be_empty() {
    let mut m = setup();
    assert_eq!(fails(&mut m, mv(9, 10)), Error::FailedLookup);
    assert_eq!(fails(&mut m, mv(9, 1 << 60)), Error::FailedLookup);
    assert_eq!(
        fails(&mut m, mutate(9, 10, MAX_BADGE + 1)),
        Error::FailedLookup
    );
}

#[test]
fn moving_a_slot_onto_itself_is_delete_first() {
    let mut m = setup();
    assert_eq!(fails(&mut m, mv(4, 4)), Error::DeleteFirst);
    assert_eq!(fails(&mut m, mutate(4, 4, 1)), Error::DeleteFirst);
    // An empty slot onto itself: the destination is empty, the source check fails.
    assert_eq!(fails(&mut m, mv(9, 9)), Error::FailedLookup);
}

#[test]
fn move_keeps_the_place_in_the_tree() {
    let mut m = setup();
    ok(&mut m, mv(9, 5));
    assert!(root_slot(&m, 5).is_none());
    let moved = root_slot(&m, 9).unwrap();
    assert_eq!(moved.parent, Some((ROOT, 4)));
    assert_eq!(moved.cap.rights(), rights::ALL);
    assert_eq!(root_slot(&m, 6).unwrap().parent, Some((ROOT, 9)));
    // Revoking the moved cap reaches its children.
    ok(&mut m, Op::Revoke { slot: r(9) });
    assert!(root_slot(&m, 6).is_none());
}

#[test]
fn untyped_caps_move_with_their_watermark_and_children() {
    let mut m = setup();
    ok(&mut m, mv(9, 2));
    match cap(&m, 9) {
        CapView::Untyped { watermark, .. } => assert_eq!(watermark, 32),
        other => panic!("{other:?}"),
    }
    assert_eq!(root_slot(&m, 4).unwrap().parent, Some((ROOT, 9)));
}

#[test]
fn mutate_badges_an_unbadged_cap() {
    let mut m = setup();
    ok(&mut m, mutate(9, 6, 77));
    let v = root_slot(&m, 9).unwrap();
    assert_eq!(v.cap.badge(), 77);
    assert_eq!(v.cap.rights(), rights::READ);
    assert_eq!(v.parent, Some((ROOT, 5)));
}

#[test]
fn mutate_check_badged_cap_with_nonzero_badge_is_illegal() {
    let mut m = setup();
    ok(&mut m, mutate(9, 6, 77));
    assert_eq!(fails(&mut m, mutate(10, 9, 78)), Error::IllegalOperation);
    // Before the range check.
    assert_eq!(
        fails(&mut m, mutate(10, 9, MAX_BADGE + 1)),
        Error::IllegalOperation
    );
    // Badge 0 keeps the badge.
    ok(&mut m, mutate(10, 9, 0));
    assert_eq!(cap(&m, 10).badge(), 77);
}

#[test]
fn mutate_check_badge_above_max_is_invalid_argument() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, mutate(9, 6, MAX_BADGE + 1)),
        Error::InvalidArgument
    );
}

#[test]
fn mutate_ignores_the_badge_of_types_without_badges() {
    let mut m = setup();
    ok(&mut m, mutate(9, 2, 5));
    // Entirely, even a badge out of range.
    ok(&mut m, mutate(11, 9, MAX_BADGE + 1));
    ok(&mut m, mutate(9, 11, u64::MAX));
    assert!(matches!(cap(&m, 9), CapView::Untyped { .. }));
    ok(&mut m, mutate(10, 1, 5));
    assert_eq!(
        cap(&m, 10),
        CapView::CNode {
            addr: ROOT,
            radix: 8,
            guard_bits: 56,
            guard: 0
        }
    );
}
