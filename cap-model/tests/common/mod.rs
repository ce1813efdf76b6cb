//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::Error;
use cap_model::{Addr, BootConfig, CapView, Model, Op, SlotView};

/// Address of the root CNode object in both standard configurations.
pub const ROOT: u64 = 0x10_0000;
/// Base of the RAM untyped (root slot 2).
pub const RAM: u64 = 0x100_0000;
/// Base of the device untyped (root slot 3).
pub const DEV: u64 = 0x900_0000;

/// Root slot `i` under [`BootConfig::standard`].
pub fn r(i: u64) -> Addr {
    Addr {
        index: i,
        depth: 64,
    }
}

/// Root slot `i` under [`BootConfig::nested`].
pub fn n(i: u64) -> Addr {
    Addr { index: i, depth: 4 }
}

/// Slot `i` of the radix-`radix` CNode whose cap is in root slot `s`, under
/// [`BootConfig::nested`].
pub fn n2(s: u64, radix: u32, i: u64) -> Addr {
    Addr {
        index: s << radix | i,
        depth: 4 + radix,
    }
}

pub fn standard() -> Model {
    Model::boot(&BootConfig::standard())
}

pub fn nested() -> Model {
    Model::boot(&BootConfig::nested())
}

/// A Retype into the CNode whose cap is at `dest`.
pub fn retype_op(
    untyped: Addr,
    ty: ObjectType,
    size_bits: u32,
    dest: Addr,
    offset: u64,
    count: u64,
) -> Op {
    Op::Retype {
        untyped,
        ty: ty as u64,
        size_bits,
        dest,
        offset,
        count,
    }
}

/// Retypes from root slot 2 into root slots `offset..` (standard configuration).
pub fn make(m: &mut Model, ty: ObjectType, size_bits: u32, offset: u64, count: u64) {
    m.apply(&retype_op(r(2), ty, size_bits, r(1), offset, count))
        .expect("retype for the test's setup");
}

/// What root slot `i` holds.
pub fn root_slot(m: &Model, i: u64) -> Option<SlotView> {
    m.snapshot().get(&(ROOT, i)).cloned()
}

/// The cap in root slot `i` (which must be non-empty).
pub fn cap(m: &Model, i: u64) -> CapView {
    root_slot(m, i).expect("slot is non-empty").cap
}

/// Applies `op`, which must fail, checks that nothing changed, and returns the error.
pub fn fails(m: &mut Model, op: Op) -> Error {
    let before = m.clone();
    let err = m.apply(&op).expect_err("the operation should fail");
    assert_eq!(
        *m, before,
        "{op:?} failed with {err:?} but changed the state"
    );
    err
}

/// Applies `op`, which must succeed, then checks the model's consistency.
pub fn ok(m: &mut Model, op: Op) {
    if let Err(e) = m.apply(&op) {
        panic!("{op:?} failed with {e:?}");
    }
    m.check_consistency()
        .expect("consistent after the operation");
    cap_model::invariants::check_all(&m.snapshot(), m.config()).expect("invariants hold");
    cap_model::invariants::check_vm(m).expect("invariants of the object state hold");
}

/// The address of the CNode whose cap is in root slot `i`.
pub fn cnode_addr(m: &Model, i: u64) -> u64 {
    match cap(m, i) {
        CapView::CNode { addr, .. } => addr,
        other => panic!("not a CNode: {other:?}"),
    }
}
