//! Delete and Revoke: their checks, the tree, destruction of objects, and reclaiming
//! memory.

mod common;

use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::Error;
use cap_model::{Addr, CapView, Op};
use common::*;

fn copy(dest: Addr, src: Addr) -> Op {
    Op::Copy {
        dest,
        src,
        rights: rights::ALL,
    }
}

#[test]
fn delete_check_address_must_resolve() {
    let mut m = standard();
    let op = Op::Delete {
        slot: Addr { index: 2, depth: 0 },
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    let op = Op::Delete { slot: r(1 << 60) };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
}

#[test]
fn deleting_an_empty_slot_succeeds() {
    let mut m = standard();
    let before = m.clone();
    ok(&mut m, Op::Delete { slot: r(9) });
    assert_eq!(m, before);
}

#[test]
fn delete_moves_children_up_to_the_parent() {
    let mut m = standard();
    make(&mut m, ObjectType::Notification, 0, 4, 1);
    ok(&mut m, copy(r(5), r(4)));
    ok(&mut m, copy(r(6), r(5)));
    ok(&mut m, copy(r(7), r(5)));
    ok(&mut m, Op::Delete { slot: r(5) });
    assert!(root_slot(&m, 5).is_none());
    assert_eq!(root_slot(&m, 6).unwrap().parent, Some((ROOT, 4)));
    assert_eq!(root_slot(&m, 7).unwrap().parent, Some((ROOT, 4)));
    // Deleting a retyped cap moves its copies up to the untyped.
    ok(&mut m, Op::Delete { slot: r(4) });
    assert_eq!(root_slot(&m, 6).unwrap().parent, Some((ROOT, 2)));
}

#[test]
fn deleting_the_last_cap_destroys_the_object_only_then() {
    let mut m = standard();
    make(&mut m, ObjectType::Endpoint, 0, 4, 1);
    let obj = cap(&m, 4).object();
    ok(&mut m, copy(r(5), r(4)));
    ok(&mut m, Op::Delete { slot: r(4) });
    assert!(m.objects().contains(&obj));
    ok(&mut m, Op::Delete { slot: r(5) });
    assert!(!m.objects().contains(&obj));
}

#[test]
fn destroying_a_cnode_deletes_what_it_holds() {
    let mut m = nested();
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 2, n(1), 4, 1));
    ok(&mut m, retype_op(n(2), ObjectType::Endpoint, 0, n(4), 0, 2));
    let child = cnode_addr(&m, 4);
    let ep = m.snapshot()[&(child, 0)].cap.object();
    // A copy of a child-held endpoint outside the CNode survives and moves up.
    ok(&mut m, copy(n(6), n2(4, 2, 1)));
    ok(&mut m, Op::Delete { slot: n(4) });
    let snap = m.snapshot();
    assert!(snap.keys().all(|&(c, _)| c != child));
    assert!(!m.objects().contains(&ep));
    assert_eq!(snap[&(ROOT, 6)].parent, Some((ROOT, 2)));
    assert_eq!(m.objects().len(), 4, "root, two untypeds and one endpoint");
}

#[test]
fn a_cnode_holding_a_cap_to_itself_is_not_destroyed() {
    let mut m = nested();
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 2, n(1), 4, 1));
    let child = cnode_addr(&m, 4);
    ok(&mut m, copy(n2(4, 2, 3), n(4)));
    ok(&mut m, Op::Delete { slot: n(4) });
    // Unreachable now, but it exists and still holds the cap to itself.
    let snap = m.snapshot();
    assert_eq!(snap[&(child, 3)].parent, Some((ROOT, 2)));
    assert!(matches!(snap[&(child, 3)].cap, CapView::CNode { addr, .. } if addr == child));
}

#[test]
fn the_root_cnode_is_never_destroyed() {
    let mut m = standard();
    ok(&mut m, Op::Delete { slot: r(1) });
    assert!(root_slot(&m, 2).is_some());
    assert_eq!(m.resolve(r(2)), Ok((ROOT, 2)));
}

#[test]
fn destroying_does_not_give_memory_back_until_the_next_retype() {
    let mut m = standard();
    make(&mut m, ObjectType::Tcb, 0, 4, 2);
    ok(&mut m, Op::Delete { slot: r(4) });
    ok(&mut m, Op::Delete { slot: r(5) });
    // Watermark unchanged until the Retype that finds no children.
    assert!(matches!(
        cap(&m, 2),
        CapView::Untyped {
            watermark: 4096,
            ..
        }
    ));
    make(&mut m, ObjectType::Endpoint, 0, 4, 1);
    assert_eq!(cap(&m, 4).object().addr, RAM);
    assert!(matches!(cap(&m, 2), CapView::Untyped { watermark: 32, .. }));
}

#[test]
fn revoke_check_address_must_resolve() {
    let mut m = standard();
    let op = Op::Revoke {
        slot: Addr {
            index: 2,
            depth: 99,
        },
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    let op = Op::Revoke { slot: r(1 << 57) };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
}

#[test]
fn revoking_an_empty_slot_succeeds() {
    let mut m = standard();
    let before = m.clone();
    ok(&mut m, Op::Revoke { slot: r(9) });
    assert_eq!(m, before);
}

#[test]
fn revoke_deletes_every_descendant_and_keeps_the_cap() {
    let mut m = standard();
    make(&mut m, ObjectType::Endpoint, 0, 4, 1);
    ok(&mut m, copy(r(5), r(4)));
    ok(&mut m, copy(r(6), r(5)));
    ok(&mut m, copy(r(7), r(4)));
    ok(&mut m, Op::Revoke { slot: r(5) });
    assert!(root_slot(&m, 6).is_none());
    assert!(root_slot(&m, 5).is_some() && root_slot(&m, 7).is_some());
    ok(&mut m, Op::Revoke { slot: r(2) });
    for i in 4..8 {
        assert!(root_slot(&m, i).is_none());
    }
    assert!(root_slot(&m, 2).is_some());
    // The whole untyped is free again.
    make(&mut m, ObjectType::Untyped, 20, 4, 1);
}

/// Root slot `i` as a `SlotId` (the root is at the same address in both configurations).
fn at(i: u64) -> (u64, u64) {
    (ROOT, i)
}

#[test]
fn derivation_order_puts_the_newest_child_first() {
    let mut m = standard();
    assert_eq!(m.derivation_order(), &[at(1), at(2), at(3)]);
    make(&mut m, ObjectType::Endpoint, 0, 4, 3);
    assert_eq!(
        m.derivation_order(),
        &[at(1), at(2), at(6), at(5), at(4), at(3)]
    );
    ok(&mut m, copy(r(7), r(5)));
    ok(
        &mut m,
        Op::Move {
            dest: r(9),
            src: r(5),
        },
    );
    assert_eq!(
        m.derivation_order(),
        &[at(1), at(2), at(6), at(9), at(7), at(4), at(3)]
    );
    ok(&mut m, Op::Delete { slot: r(9) });
    assert_eq!(
        m.derivation_order(),
        &[at(1), at(2), at(6), at(7), at(4), at(3)]
    );
    assert_eq!(root_slot(&m, 7).unwrap().parent, Some(at(2)));
}

/// A nested system where the RAM untyped has made an endpoint (root slot 5, copied to
/// slot 6) and a CNode (root slot 4), in the given order, and then moved into slot 0 of
/// that CNode.
fn untyped_inside_its_own_cnode(cnode_first: bool) -> cap_model::Model {
    let mut m = nested();
    let cnode = retype_op(n(2), ObjectType::CNode, 2, n(1), 4, 1);
    let endpoint = retype_op(n(2), ObjectType::Endpoint, 0, n(1), 5, 1);
    if cnode_first {
        ok(&mut m, cnode);
        ok(&mut m, endpoint);
    } else {
        ok(&mut m, endpoint);
        ok(&mut m, cnode);
    }
    ok(&mut m, copy(n(6), n(5)));
    ok(
        &mut m,
        Op::Move {
            dest: n2(4, 2, 0),
            src: n(2),
        },
    );
    m
}

#[test]
fn revoke_deletes_the_newest_child_first() {
    // The endpoint (newer than the CNode) and its copy go first, then the CNode, whose
    // destruction deletes the revoked untyped: by then nothing of it is left.
    let mut m = untyped_inside_its_own_cnode(true);
    let child = cnode_addr(&m, 4);
    let ep = cap(&m, 5).object();
    assert_eq!(m.descendants((child, 0)), vec![at(4), at(5), at(6)]);
    ok(&mut m, Op::Revoke { slot: n2(4, 2, 0) });
    assert!(!m.objects().contains(&ep));
    let left: Vec<_> = m.snapshot().into_keys().collect();
    assert_eq!(left, vec![at(1), at(3)]);
}

#[test]
fn revoke_stops_when_the_revoked_cap_is_deleted_on_the_way() {
    // Now the CNode is the newest child: deleting it first destroys the CNode and the
    // untyped cap in it, and Revoke stops; the endpoint caps stay, moved up.
    let mut m = untyped_inside_its_own_cnode(false);
    let child = cnode_addr(&m, 4);
    ok(&mut m, Op::Revoke { slot: n2(4, 2, 0) });
    let snap = m.snapshot();
    assert!(snap.keys().all(|&(c, _)| c != child));
    let left: Vec<_> = snap.keys().copied().collect();
    assert_eq!(left, vec![at(1), at(3), at(5), at(6)]);
    assert_eq!(snap[&at(5)].parent, None);
    assert_eq!(snap[&at(6)].parent, Some(at(5)));
}
