//! Retype: one test per documented check, in order, and what a success makes.

mod common;

use bulkhead_sys::cap::{rights, ObjectType, MAX_RETYPE_COUNT};
use bulkhead_sys::Error;
use cap_model::{Addr, CapView, Model, Op};
use common::*;

fn rt(untyped: u64, ty: u64, size_bits: u32, dest: u64, offset: u64, count: u64) -> Op {
    Op::Retype {
        untyped: r(untyped),
        ty,
        size_bits,
        dest: r(dest),
        offset,
        count,
    }
}

const EP: u64 = ObjectType::Endpoint as u64;
const UT: u64 = ObjectType::Untyped as u64;
const CN: u64 = ObjectType::CNode as u64;

/// A standard system with an endpoint in root slot 4.
fn setup() -> Model {
    let mut m = standard();
    make(&mut m, ObjectType::Endpoint, 0, 4, 1);
    m
}

#[test]
fn check1_untyped_must_resolve() {
    let mut m = setup();
    let op = Op::Retype {
        untyped: Addr { index: 2, depth: 0 },
        ty: 99,
        size_bits: 0,
        dest: r(1 << 60),
        offset: 0,
        count: 0,
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    assert_eq!(
        fails(&mut m, rt(1 << 60, 99, 0, 9, 0, 0)),
        Error::FailedLookup
    );
}

#[test]
fn check1_empty_untyped_slot_is_invalid_capability() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, rt(9, 99, 0, 1 << 60, 0, 0)),
        Error::InvalidCapability
    );
}

#[test]
fn check1_invoked_cap_must_be_untyped() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, rt(4, 99, 0, 1 << 60, 0, 0)),
        Error::IllegalOperation
    );
    assert_eq!(
        fails(&mut m, rt(1, EP, 0, 1, 5, 1)),
        Error::IllegalOperation
    );
}

#[test]
fn check2_type_must_be_known() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, rt(2, 13, 0, 1 << 60, 0, 0)),
        Error::InvalidArgument
    );
    assert_eq!(
        fails(&mut m, rt(2, u64::MAX, 0, 1, 5, 1)),
        Error::InvalidArgument
    );
}

#[test]
fn check2_size_bits_must_suit_the_type() {
    let mut m = setup();
    for (ty, bits) in [(UT, 3), (UT, 48), (CN, 0), (CN, 25)] {
        assert_eq!(
            fails(&mut m, rt(2, ty, bits, 1 << 60, 0, 0)),
            Error::RangeError
        );
    }
    // Ignored for fixed-size types.
    ok(&mut m, rt(2, EP, 63, 1, 5, 1));
}

#[test]
fn check2_count_must_be_1_to_256() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, rt(2, EP, 0, 1 << 60, 0, 0)),
        Error::RangeError
    );
    assert_eq!(
        fails(&mut m, rt(2, EP, 0, 1 << 60, 0, MAX_RETYPE_COUNT + 1)),
        Error::RangeError
    );
    // 256 is allowed: a radix-8 CNode takes them all.
    ok(&mut m, rt(2, CN, 8, 1, 5, 1));
    let op = Op::Retype {
        untyped: r(2),
        ty: EP,
        size_bits: 0,
        dest: r(5),
        offset: 0,
        count: MAX_RETYPE_COUNT,
    };
    ok(&mut m, op);
}

#[test]
fn check3_dest_must_resolve_to_a_cnode_cap() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, rt(2, EP, 0, 1 << 60, 300, 1)),
        Error::FailedLookup
    );
    let op = Op::Retype {
        untyped: r(2),
        ty: EP,
        size_bits: 0,
        dest: Addr {
            index: 1,
            depth: 65,
        },
        offset: 300,
        count: 1,
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    // Empty, and not a CNode.
    assert_eq!(fails(&mut m, rt(2, EP, 0, 9, 300, 1)), Error::FailedLookup);
    assert_eq!(fails(&mut m, rt(2, EP, 0, 4, 300, 1)), Error::FailedLookup);
}

#[test]
fn check4_offset_plus_count_must_fit_the_cnode() {
    let mut m = setup();
    assert_eq!(fails(&mut m, rt(2, EP, 0, 1, 255, 2)), Error::RangeError);
    assert_eq!(
        fails(&mut m, rt(2, EP, 0, 1, u64::MAX, 1)),
        Error::RangeError
    );
    // Before the empty-slot and device checks.
    assert_eq!(fails(&mut m, rt(3, EP, 0, 1, 250, 10)), Error::RangeError);
    ok(&mut m, rt(2, EP, 0, 1, 254, 2));
}

#[test]
fn check5_every_destination_slot_must_be_empty() {
    let mut m = setup();
    assert_eq!(fails(&mut m, rt(2, EP, 0, 1, 3, 2)), Error::DeleteFirst);
    // Before the device check and the memory check.
    assert_eq!(fails(&mut m, rt(3, EP, 0, 1, 4, 1)), Error::DeleteFirst);
    assert_eq!(fails(&mut m, rt(2, UT, 21, 1, 4, 1)), Error::DeleteFirst);
}

#[test]
fn check6_device_memory_only_becomes_untyped_or_frames() {
    let mut m = setup();
    for ty in [
        ObjectType::Endpoint,
        ObjectType::Tcb,
        ObjectType::CNode,
        ObjectType::VSpace,
    ] {
        // Before the memory check (the device untyped is too small for a 2 MiB frame).
        assert_eq!(
            fails(&mut m, rt(3, ty as u64, 2, 1, 8, 1)),
            Error::InvalidArgument
        );
    }
    assert_eq!(
        fails(&mut m, rt(3, ObjectType::Frame2M as u64, 0, 1, 8, 1)),
        Error::NotEnoughMemory
    );
    ok(&mut m, rt(3, ObjectType::Frame4K as u64, 0, 1, 8, 1));
    ok(&mut m, rt(3, UT, 12, 1, 9, 1));
    assert_eq!(
        cap(&m, 9),
        CapView::Untyped {
            base: DEV + 4096,
            size_bits: 12,
            watermark: 0,
            device: true
        }
    );
    // The device flag is inherited.
    assert_eq!(
        fails(&mut m, rt(9, EP, 0, 1, 10, 1)),
        Error::InvalidArgument
    );
}

#[test]
fn check7_objects_must_fit() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, rt(2, UT, 21, 1, 8, 1)),
        Error::NotEnoughMemory
    );
    assert_eq!(
        fails(&mut m, rt(2, ObjectType::Frame1G as u64, 0, 1, 8, 1)),
        Error::NotEnoughMemory
    );
    ok(&mut m, rt(2, CN, 8, 1, 5, 1));
    let frames = |count| Op::Retype {
        untyped: r(2),
        ty: ObjectType::Frame4K as u64,
        size_bits: 0,
        dest: r(5),
        offset: 0,
        count,
    };
    // Endpoint at 0, CNode (8 KiB) at 8 KiB: frames start at 16 KiB, 252 of them fit.
    assert_eq!(fails(&mut m, frames(253)), Error::NotEnoughMemory);
    ok(&mut m, frames(252));
    assert!(matches!(cap(&m, 2), CapView::Untyped { watermark, .. } if watermark == 1 << 20));
}

#[test]
fn check7_watermark_resets_only_without_children_and_only_on_success() {
    let mut m = setup();
    ok(&mut m, Op::Delete { slot: r(4) });
    // No children now, but a failing Retype leaves the watermark as it was.
    assert_eq!(
        fails(&mut m, rt(2, UT, 21, 1, 8, 1)),
        Error::NotEnoughMemory
    );
    assert!(matches!(cap(&m, 2), CapView::Untyped { watermark: 32, .. }));
    ok(&mut m, rt(2, UT, 20, 1, 8, 1));
    assert_eq!(cap(&m, 8).object().addr, RAM);
    // With a child, no reset: nothing is left.
    assert_eq!(fails(&mut m, rt(2, EP, 0, 1, 9, 1)), Error::NotEnoughMemory);
}

#[test]
fn check7_objects_are_aligned_to_their_size() {
    let mut m = setup();
    ok(&mut m, rt(2, ObjectType::Tcb as u64, 0, 1, 5, 2));
    assert_eq!(cap(&m, 5), CapView::Tcb { addr: RAM + 2048 });
    assert_eq!(cap(&m, 6), CapView::Tcb { addr: RAM + 4096 });
    ok(&mut m, rt(2, EP, 0, 1, 7, 1));
    assert_eq!(cap(&m, 7).object().addr, RAM + 6144);
    assert!(matches!(
        cap(&m, 2),
        CapView::Untyped {
            watermark: 6176,
            ..
        }
    ));
}

#[test]
fn check8_new_caps_are_fresh_children_of_the_untyped() {
    let mut m = setup();
    ok(&mut m, rt(2, CN, 3, 1, 5, 2));
    ok(&mut m, rt(2, ObjectType::Frame4K as u64, 0, 1, 7, 1));
    ok(&mut m, rt(2, ObjectType::Notification as u64, 0, 1, 8, 1));
    ok(&mut m, rt(2, UT, 10, 1, 9, 1));
    let snap = m.snapshot();
    for i in 4..10 {
        assert_eq!(snap[&(ROOT, i)].parent, Some((ROOT, 2)));
    }
    assert_eq!(
        cap(&m, 5),
        CapView::CNode {
            addr: RAM + 256,
            radix: 3,
            guard_bits: 0,
            guard: 0
        }
    );
    assert_eq!(cap(&m, 6).object().addr, RAM + 512);
    assert!(snap.keys().all(|&(c, _)| c == ROOT), "new CNodes are empty");
    assert_eq!(
        cap(&m, 7),
        CapView::Frame {
            addr: RAM + 4096,
            size_bits: 12,
            rights: rights::ALL
        }
    );
    assert_eq!(
        cap(&m, 8),
        CapView::Notification {
            addr: RAM + 8192,
            rights: rights::ALL,
            badge: 0
        }
    );
    assert_eq!(
        cap(&m, 9),
        CapView::Untyped {
            base: RAM + 9216,
            size_bits: 10,
            watermark: 0,
            device: false
        }
    );
    assert!(matches!(
        cap(&m, 2),
        CapView::Untyped {
            watermark: 10240,
            ..
        }
    ));
}

#[test]
fn retype_into_a_child_cnode_and_from_a_child_untyped() {
    let mut m = nested();
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 2, n(1), 4, 1));
    ok(&mut m, retype_op(n(2), ObjectType::Untyped, 12, n(1), 5, 1));
    ok(&mut m, retype_op(n(5), ObjectType::Endpoint, 0, n(4), 1, 3));
    let child = cnode_addr(&m, 4);
    let snap = m.snapshot();
    assert_eq!(snap[&(child, 1)].parent, Some((ROOT, 5)));
    assert_eq!(snap[&(child, 3)].cap.object().addr, RAM + 4096 + 64);
    assert_eq!(
        fails(&mut m, retype_op(n(5), ObjectType::Endpoint, 0, n(4), 2, 3)),
        Error::RangeError
    );
}
