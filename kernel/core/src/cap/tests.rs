//! Host tests of the capability operations (the differential test against `cap-model`
//! lives in that crate).

use super::*;
use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::Error;
use std::collections::HashMap;

/// Slot memory on the host: absent slots read as empty.
#[derive(Default)]
pub struct MapMem(pub HashMap<u64, Cte>);

impl SlotMem for MapMem {
    fn read(&self, addr: u64) -> Cte {
        self.0.get(&addr).copied().unwrap_or_default()
    }
    fn write(&mut self, addr: u64, cte: Cte) {
        if cte == Cte::default() {
            self.0.remove(&addr);
        } else {
            self.0.insert(addr, cte);
        }
    }
    fn clear(&mut self, addr: u64, size: u64) {
        self.0.retain(|&a, _| a < addr || a >= addr + size);
    }
}

const ROOT: u64 = 0x10_0000;

fn a(i: u64) -> Addr {
    Addr {
        index: i,
        depth: 64,
    }
}

fn setup() -> (MapMem, Cap) {
    let mut m = MapMem::default();
    let root = boot(
        &mut m,
        ROOT,
        8,
        56,
        &[(0x100_0000, 20, false), (0x900_0000, 16, true)],
    );
    (m, root)
}

fn slot(i: u64) -> u64 {
    ROOT + (i << 5)
}

/// Checks the list: links symmetric, depth steps by at most one going down.
fn check_list(m: &MapMem) {
    for (&s, c) in &m.0 {
        if let Some(n) = c.next {
            let nc = m.read(n);
            assert_eq!(nc.prev, Some(s), "next/prev asymmetric at {s:#x}");
            assert!(nc.depth <= c.depth + 1);
            assert!(!nc.cap.is_null());
        }
        if let Some(p) = c.prev {
            assert_eq!(m.read(p).next, Some(s));
        }
    }
}

#[test]
fn boot_state() {
    let (m, root) = setup();
    assert_eq!(m.read(slot(1)).cap, root);
    assert!(matches!(
        m.read(slot(2)).cap,
        Cap::Untyped { size_bits: 20, .. }
    ));
    assert_eq!(lookup(&m, &root, a(2)), Ok(slot(2)));
    assert_eq!(
        lookup(
            &m,
            &root,
            Addr {
                index: 1 << 60,
                depth: 64
            }
        ),
        Err(Error::FailedLookup)
    );
    assert_eq!(
        lookup(&m, &root, Addr { index: 2, depth: 0 }),
        Err(Error::RangeError)
    );
    assert_eq!(
        lookup(&m, &root, Addr { index: 2, depth: 8 }),
        Err(Error::FailedLookup)
    );
    check_list(&m);
}

#[test]
fn retype_copy_mint_revoke() {
    let (mut m, root) = setup();
    let ep = ObjectType::Endpoint as u64;
    retype(&mut m, &root, a(2), ep, 0, a(1), 10, 2).unwrap();
    assert!(matches!(
        m.read(slot(10)).cap,
        Cap::Endpoint {
            addr: 0x100_0000,
            ..
        }
    ));
    assert!(matches!(
        m.read(slot(11)).cap,
        Cap::Endpoint {
            addr: 0x100_0020,
            ..
        }
    ));
    assert_eq!(parent_of(&m, slot(10)), Some(slot(2)));
    assert_eq!(
        retype(&mut m, &root, a(2), ep, 0, a(1), 10, 1),
        Err(Error::DeleteFirst)
    );
    assert_eq!(
        retype(&mut m, &root, a(3), ObjectType::Tcb as u64, 0, a(1), 20, 1),
        Err(Error::InvalidArgument)
    );
    assert_eq!(
        retype(&mut m, &root, a(10), ep, 0, a(1), 20, 1),
        Err(Error::IllegalOperation)
    );
    assert_eq!(
        retype(&mut m, &root, a(50), ep, 0, a(1), 20, 1),
        Err(Error::InvalidCapability)
    );
    assert_eq!(
        retype(&mut m, &root, a(2), ep, 0, a(1), 255, 2),
        Err(Error::RangeError)
    );

    mint(&mut m, &root, a(20), a(10), rights::READ | rights::GRANT, 7).unwrap();
    assert_eq!(
        m.read(slot(20)).cap,
        Cap::Endpoint {
            addr: 0x100_0000,
            rights: rights::READ | rights::GRANT,
            badge: 7
        }
    );
    assert_eq!(
        mint(&mut m, &root, a(21), a(20), rights::ALL, 8),
        Err(Error::IllegalOperation)
    );
    copy(&mut m, &root, a(21), a(20), rights::ALL).unwrap();
    assert_eq!(
        m.read(slot(21)).cap,
        m.read(slot(20)).cap,
        "copy keeps badge, cannot add rights"
    );
    assert_eq!(parent_of(&m, slot(21)), Some(slot(20)));
    assert_eq!(
        copy(&mut m, &root, a(22), a(2), rights::ALL),
        Err(Error::IllegalOperation)
    );
    check_list(&m);

    revoke(&mut m, &root, a(10)).unwrap();
    assert!(m.read(slot(20)).cap.is_null() && m.read(slot(21)).cap.is_null());
    revoke(&mut m, &root, a(2)).unwrap();
    assert!(m.read(slot(10)).cap.is_null() && m.read(slot(11)).cap.is_null());
    // Nothing derived from the untyped remains: its memory is whole again.
    retype(
        &mut m,
        &root,
        a(2),
        ObjectType::Untyped as u64,
        20,
        a(1),
        30,
        1,
    )
    .unwrap();
    check_list(&m);
}

#[test]
fn delete_moves_children_up_and_destroys_cnodes() {
    let (mut m, root) = setup();
    retype(
        &mut m,
        &root,
        a(2),
        ObjectType::CNode as u64,
        2,
        a(1),
        10,
        1,
    )
    .unwrap();
    let Cap::CNode { addr: inner, .. } = m.read(slot(10)).cap else {
        panic!()
    };
    retype(
        &mut m,
        &root,
        a(2),
        ObjectType::Notification as u64,
        0,
        a(1),
        11,
        1,
    )
    .unwrap();
    copy(&mut m, &root, a(12), a(11), rights::ALL).unwrap();
    copy(&mut m, &root, a(13), a(12), rights::READ).unwrap();
    delete(&mut m, &root, a(12)).unwrap();
    assert_eq!(parent_of(&m, slot(13)), Some(slot(11)));
    // Put a cap into the inner CNode (move it there by writing through the model of
    // nested addressing is not possible at depth 64; place it directly).
    let target = inner + (1 << 5);
    let c = m.read(slot(13));
    super::ops::relocate(&mut m, slot(13), target, c);
    check_list(&m);
    delete(&mut m, &root, a(10)).unwrap();
    assert!(
        m.read(target).cap.is_null(),
        "destroying the CNode deleted its contents"
    );
    check_list(&m);
}

#[test]
fn deep_cnode_chain_is_destroyed_without_recursion() {
    let (mut m, root) = setup();
    // A chain of 2000 CNodes, each holding the only cap to the next.
    retype(
        &mut m,
        &root,
        a(2),
        ObjectType::CNode as u64,
        1,
        a(1),
        10,
        1,
    )
    .unwrap();
    let mut holder = slot(10);
    for _ in 0..2000u64 {
        let Cap::CNode { addr, .. } = m.read(holder).cap else {
            panic!()
        };
        retype(
            &mut m,
            &root,
            a(2),
            ObjectType::CNode as u64,
            1,
            a(1),
            11,
            1,
        )
        .unwrap();
        // Move slot 11 into the new CNode's slot 0.
        let dest = addr;
        let c = m.read(slot(11));
        super::ops::relocate(&mut m, slot(11), dest, c);
        holder = dest;
    }
    check_list(&m);
    delete(&mut m, &root, a(10)).unwrap();
    check_list(&m);
    assert_eq!(m.0.len(), 3, "only the boot caps remain");
}

/// Slot memory that records which objects were destroyed.
#[derive(Default)]
struct Recording(MapMem, Vec<Cap>);

impl SlotMem for Recording {
    fn read(&self, addr: u64) -> Cte {
        self.0.read(addr)
    }
    fn write(&mut self, addr: u64, cte: Cte) {
        self.0.write(addr, cte)
    }
    fn clear(&mut self, addr: u64, size: u64) {
        self.0.clear(addr, size)
    }
    fn destroyed(&mut self, cap: &Cap) {
        self.1.push(*cap)
    }
}

#[test]
fn last_cap_deletion_destroys_the_object_once() {
    let mut m = Recording::default();
    let root = boot(&mut m, ROOT, 8, 56, &[(0x100_0000, 20, false)]);
    retype(
        &mut m,
        &root,
        a(2),
        ObjectType::Endpoint as u64,
        0,
        a(1),
        10,
        1,
    )
    .unwrap();
    retype(&mut m, &root, a(2), ObjectType::Tcb as u64, 0, a(1), 11, 1).unwrap();
    copy(&mut m, &root, a(12), a(10), rights::ALL).unwrap();
    delete(&mut m, &root, a(10)).unwrap();
    assert!(m.1.is_empty(), "a copy remains: not destroyed yet");
    delete(&mut m, &root, a(12)).unwrap();
    assert!(matches!(m.1[..], [Cap::Endpoint { .. }]));
    revoke(&mut m, &root, a(2)).unwrap();
    assert!(matches!(m.1[..], [Cap::Endpoint { .. }, Cap::Tcb { .. }]));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Retype(u64, u64, u32, u64, u64),
        Copy(u64, u64, u8),
        Mint(u64, u64, u8, u64),
        Move(u64, u64),
        Delete(u64),
        Revoke(u64),
    }

    fn slot_ix() -> impl Strategy<Value = u64> {
        prop_oneof![2u64..4, 8u64..24]
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            (slot_ix(), 0u64..6, 0u32..4, 8u64..24, 1u64..3)
                .prop_map(|(u, t, b, o, c)| Op::Retype(u, t, b, o, c)),
            (slot_ix(), slot_ix(), 0u8..16).prop_map(|(d, s, r)| Op::Copy(d, s, r)),
            (slot_ix(), slot_ix(), 0u8..16, 0u64..4).prop_map(|(d, s, r, b)| Op::Mint(d, s, r, b)),
            (slot_ix(), slot_ix()).prop_map(|(d, s)| Op::Move(d, s)),
            slot_ix().prop_map(Op::Delete),
            slot_ix().prop_map(Op::Revoke),
        ];
        proptest::collection::vec(op, 1..60)
    }

    /// The list invariants: links symmetric, every listed slot holds a cap, depth steps
    /// down by at most one, every cap with depth > 0 has a parent, and parents' rights
    /// cover their children's.
    fn invariants(m: &MapMem) -> Result<(), TestCaseError> {
        for (&s, c) in &m.0 {
            prop_assert!(!c.cap.is_null(), "empty slot kept in the list");
            if let Some(n) = c.next {
                prop_assert_eq!(m.read(n).prev, Some(s));
                prop_assert!(m.read(n).depth <= c.depth + 1);
            }
            if let Some(p) = c.prev {
                prop_assert_eq!(m.read(p).next, Some(s));
            }
            if c.depth > 0 {
                let p = parent_of(m, s);
                prop_assert!(p.is_some(), "orphan at depth {}", c.depth);
                let pc = m.read(p.unwrap()).cap;
                let r = |c: &Cap| match *c {
                    Cap::Endpoint { rights, .. }
                    | Cap::Notification { rights, .. }
                    | Cap::Frame { rights, .. } => rights,
                    _ => rights::ALL,
                };
                prop_assert_eq!(r(&c.cap) & !r(&pc), 0, "child has rights its parent lacks");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn random_operations_keep_the_tree_sound(ops in ops()) {
            let (mut m, root) = setup();
            for op in ops {
                let before: Vec<_> = { let mut v: Vec<_> = m.0.iter().map(|(a, c)| (*a, *c)).collect(); v.sort_by_key(|x| x.0); v };
                let r = match op {
                    Op::Retype(u, t, b, o, c) => {
                        let bits = if t == 0 { 12 + b } else if t == 4 { 1 + b } else { 0 };
                        retype(&mut m, &root, a(u), t, bits, a(1), o, c)
                    }
                    Op::Copy(d, s, r) => copy(&mut m, &root, a(d), a(s), r),
                    Op::Mint(d, s, r, b) => mint(&mut m, &root, a(d), a(s), r, b),
                    Op::Move(d, s) => move_cap(&mut m, &root, a(d), a(s)),
                    Op::Delete(s) => delete(&mut m, &root, a(s)),
                    Op::Revoke(s) => revoke(&mut m, &root, a(s)),
                };
                if r.is_err() {
                    let after: Vec<_> = { let mut v: Vec<_> = m.0.iter().map(|(a, c)| (*a, *c)).collect(); v.sort_by_key(|x| x.0); v };
                    prop_assert_eq!(before, after, "an error changed the state");
                }
                invariants(&m)?;
            }
        }
    }
}
