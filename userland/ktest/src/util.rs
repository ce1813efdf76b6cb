//! Helpers: invocations by name, slot inspection, the test runner.

use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::{call, debug_slot, invocation, Error, MessageInfo};
use kcore::cap::Cap;

/// Slot of the root CNode's own cap.
pub const ROOT: u64 = 1;
/// First slot the tests use for new caps.
pub const FREE: u64 = 200;

/// The cap in root slot `i` (null if empty or unaddressable).
pub fn cap_at(i: u64) -> Cap {
    debug_slot(i, 64).map_or(Cap::Null, |s| Cap::decode(s.cap))
}

/// Slot address and parent slot address of root slot `i`.
pub fn place(i: u64) -> Option<(u64, Option<u64>)> {
    debug_slot(i, 64).ok().map(|s| (s.addr, s.parent))
}

/// Untyped Retype from the cap at `ut` into the CNode whose cap is at `cnode`.
pub fn retype(
    ut: u64,
    ty: u64,
    size_bits: u32,
    cnode: u64,
    offset: u64,
    count: u64,
) -> Result<(), Error> {
    let info = MessageInfo::new(invocation::UNTYPED_RETYPE, 4);
    call(
        ut,
        info,
        [
            ty | (size_bits as u64) << 32,
            cnode,
            64 | count << 32,
            offset,
        ],
    )
}

/// Retype of one object of `ty` into root slot `dest`.
pub fn make(ut: u64, ty: ObjectType, size_bits: u32, dest: u64) -> Result<(), Error> {
    retype(ut, ty as u64, size_bits, ROOT, dest, 1)
}

/// A CNode invocation on the CNode cap at `node` with depth-64 slot arguments.
pub fn cnode(
    node: u64,
    label: u64,
    dest: u64,
    src: u64,
    rights: u8,
    badge: u64,
) -> Result<(), Error> {
    cnode_depth(node, label, dest, 64, src, 64, rights, badge)
}

/// A CNode invocation with explicit depths.
#[allow(clippy::too_many_arguments)]
pub fn cnode_depth(
    node: u64,
    label: u64,
    dest: u64,
    dest_depth: u64,
    src: u64,
    src_depth: u64,
    rights: u8,
    badge: u64,
) -> Result<(), Error> {
    let info = MessageInfo::new(label, 4);
    call(
        node,
        info,
        [
            dest,
            src,
            dest_depth | src_depth << 8 | (rights as u64) << 16,
            badge,
        ],
    )
}

/// Root-CNode Copy.
pub fn copy(dest: u64, src: u64, rights: u8) -> Result<(), Error> {
    cnode(ROOT, invocation::CNODE_COPY, dest, src, rights, 0)
}
/// Root-CNode Mint.
pub fn mint(dest: u64, src: u64, rights: u8, badge: u64) -> Result<(), Error> {
    cnode(ROOT, invocation::CNODE_MINT, dest, src, rights, badge)
}
/// Root-CNode Move.
pub fn mv(dest: u64, src: u64) -> Result<(), Error> {
    cnode(ROOT, invocation::CNODE_MOVE, dest, src, 0, 0)
}
/// Root-CNode Mutate.
pub fn mutate(dest: u64, src: u64, badge: u64) -> Result<(), Error> {
    cnode(ROOT, invocation::CNODE_MUTATE, dest, src, 0, badge)
}
/// Root-CNode Delete.
pub fn delete(slot: u64) -> Result<(), Error> {
    cnode(ROOT, invocation::CNODE_DELETE, slot, 0, 0, 0)
}
/// Root-CNode Revoke.
pub fn revoke(slot: u64) -> Result<(), Error> {
    cnode(ROOT, invocation::CNODE_REVOKE, slot, 0, 0, 0)
}

/// The largest Untyped the task was given: (slot, base, size_bits).
pub fn largest_untyped() -> Option<(u64, u64, u32)> {
    let mut best: Option<(u64, u64, u32)> = None;
    for i in 2..2 + 64 {
        if let Cap::Untyped {
            base,
            size_bits,
            device: false,
            ..
        } = cap_at(i)
        {
            if best.is_none_or(|b| size_bits > b.2) {
                best = Some((i, base, size_bits));
            }
        }
    }
    best
}

/// Outcome of one case.
pub type Outcome = Result<(), &'static str>;

/// Turns a condition into an outcome.
pub fn check(ok: bool, why: &'static str) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}

/// Checks a result equals the expected one.
pub fn expect(got: Result<(), Error>, want: Result<(), Error>, why: &'static str) -> Outcome {
    if got == want {
        Ok(())
    } else {
        if let Err(e) = got {
            defmt::warn!("  got error {=u64}", e as u64);
        } else {
            defmt::warn!("  got success");
        }
        Err(why)
    }
}
