//! Properties of the model over random operation sequences (see `cap_model::gen`).
//!
//! Each property runs on sequences for both boot configurations: the standard one (every
//! address resolves in one level) and the nested one (addresses reach into CNodes whose
//! caps sit in root slots).

use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::Error;
use cap_model::gen::{ops_for, Layout};
use cap_model::{invariants, CapView, Model, Op, SlotId, Snapshot};
use proptest::prelude::*;

/// Cases per property; seven properties make well over 10,000 sequences.
const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(CASES)
    }
}

/// A layout and a sequence of operations for it.
fn scenario() -> impl Strategy<Value = (Layout, Vec<Op>)> {
    prop_oneof![
        ops_for(Layout::Standard, 1..80).prop_map(|o| (Layout::Standard, o)),
        ops_for(Layout::Nested, 1..80).prop_map(|o| (Layout::Nested, o)),
    ]
}

/// One step of a run: the state before, the operation, its result, the state after.
struct Step<'a> {
    before: &'a Model,
    snap_before: &'a Snapshot,
    op: &'a Op,
    result: Result<(), Error>,
    after: &'a Model,
    snap_after: &'a Snapshot,
}

/// Runs `ops` from boot, calling `check` after every operation.
fn run(
    layout: Layout,
    ops: &[Op],
    mut check: impl FnMut(&Step) -> Result<(), TestCaseError>,
) -> Result<Model, TestCaseError> {
    let mut m = Model::boot(&layout.config());
    let mut snap = m.snapshot();
    for op in ops {
        let before = m.clone();
        let result = m.apply(op);
        let snap_after = m.snapshot();
        check(&Step {
            before: &before,
            snap_before: &snap,
            op,
            result,
            after: &m,
            snap_after: &snap_after,
        })?;
        snap = snap_after;
    }
    Ok(m)
}

/// The slot an address named before the operation, if it resolved.
fn slot_of(step: &Step, a: cap_model::Addr) -> Option<SlotId> {
    step.before.resolve(a).ok()
}

proptest! {
    #![proptest_config(config())]

    /// 1. No operation amplifies rights: every cap's rights are within its parent's, and a
    /// copy or mint gets exactly the source's rights masked.
    #[test]
    fn no_rights_amplification((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            prop_assert_eq!(invariants::rights_monotone(s.snap_after), Ok(()));
            if let (Ok(()), Op::Copy { dest, src, rights: mask } | Op::Mint { dest, src, rights: mask, .. }) =
                (s.result, s.op)
            {
                let src_cap = s.snap_before[&slot_of(s, *src).unwrap()].cap;
                let new = &s.snap_after[&slot_of(s, *dest).unwrap()];
                prop_assert_eq!(new.cap.rights() & !src_cap.rights(), 0);
                let expect = if src_cap.has_rights() { src_cap.rights() & mask } else { rights::ALL };
                prop_assert_eq!(new.cap.rights(), expect);
            }
            Ok(())
        })?;
    }

    /// 2. A minted cap has no more rights than its parent and carries the new badge (or the
    /// source's); a copy keeps the source's badge; Mutate only ever badges an unbadged cap.
    #[test]
    fn mint_and_copy_badges((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            let Ok(()) = s.result else { return Ok(()) };
            match *s.op {
                Op::Copy { dest, src, .. } | Op::Mint { dest, src, .. } => {
                    let src_id = slot_of(s, src).unwrap();
                    let src_cap = s.snap_before[&src_id].cap;
                    let new = &s.snap_after[&slot_of(s, dest).unwrap()];
                    prop_assert_eq!(new.parent, Some(src_id));
                    let parent = s.snap_after[&src_id].cap;
                    prop_assert_eq!(parent, src_cap);
                    prop_assert_eq!(new.cap.rights() & !parent.rights(), 0);
                    prop_assert_eq!(new.cap.object(), src_cap.object());
                    let badge = match *s.op {
                        Op::Mint { badge, .. } if badge != 0 && src_cap.object().ty.badged() => badge,
                        _ => src_cap.badge(),
                    };
                    prop_assert_eq!(new.cap.badge(), badge);
                }
                Op::Mutate { dest, src, badge } => {
                    let old = s.snap_before[&slot_of(s, src).unwrap()].cap;
                    let new = s.snap_after[&slot_of(s, dest).unwrap()].cap;
                    prop_assert!(old.badge() == 0 || badge == 0);
                    let expect = if badge != 0 && old.object().ty.badged() { badge } else { old.badge() };
                    prop_assert_eq!(new.badge(), expect);
                    prop_assert_eq!(new.rights(), old.rights());
                }
                _ => {}
            }
            Ok(())
        })?;
    }

    /// 3. After Revoke no cap that descended from the revoked cap remains anywhere, and the
    /// revoked cap has no descendants; unless the revoked cap itself was deleted on the way
    /// (it lived in a CNode the revocation destroyed), where Revoke stops.
    #[test]
    fn revoke_removes_descendants((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            let (Ok(()), Op::Revoke { slot }) = (s.result, s.op) else { return Ok(()) };
            let id = slot_of(s, *slot).unwrap();
            let Some(revoked) = s.snap_before.get(&id) else {
                prop_assert_eq!(s.snap_before, s.snap_after);
                return Ok(());
            };
            match s.snap_after.get(&id) {
                Some(now) => {
                    prop_assert_eq!(now, revoked);
                    for d in s.before.descendants(id) {
                        prop_assert!(!s.snap_after.contains_key(&d), "descendant {:?} survived", d);
                    }
                    prop_assert!(s.after.descendants(id).is_empty());
                }
                None => {
                    // Only the destruction of its CNode deletes the revoked cap.
                    prop_assert!(s.snap_after.keys().all(|&(c, _)| c != id.0));
                    let cnode_cap_revoked = s.before.descendants(id).iter().any(|d| {
                        matches!(s.snap_before[d].cap, CapView::CNode { addr, .. } if addr == id.0)
                    });
                    prop_assert!(cnode_cap_revoked);
                }
            }
            Ok(())
        })?;
    }

    /// 4. Deleting the last cap to an object destroys it (no cap names it, CNode slots are
    /// gone); and once nothing derived from an untyped remains, Retype can use all of it.
    #[test]
    fn delete_last_cap_and_reclaim((layout, ops) in scenario()) {
        let m = run(layout, &ops, |s| {
            let (Ok(()), Op::Delete { slot }) = (s.result, s.op) else { return Ok(()) };
            let id = slot_of(s, *slot).unwrap();
            let Some(gone) = s.snap_before.get(&id) else { return Ok(()) };
            let obj = gone.cap.object();
            let others = s.snap_before.iter().any(|(&o, v)| o != id && v.cap.object() == obj);
            if others || obj == s.before.root_cap().object() {
                prop_assert!(s.after.objects().contains(&obj));
                return Ok(());
            }
            prop_assert!(!s.after.objects().contains(&obj));
            prop_assert!(s.snap_after.values().all(|v| v.cap.object() != obj));
            if obj.ty == ObjectType::CNode {
                prop_assert!(s.snap_after.keys().all(|&(c, _)| c != obj.addr));
            }
            Ok(())
        })?;
        reclaim_all(layout, &m)?;
    }

    /// 5. Live objects never overlap (but for Untyped holding what was made from it), never
    /// cross an Untyped's edge, stay inside the initial untypeds and below watermarks, and
    /// are aligned to their size.
    #[test]
    fn objects_never_overlap((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            prop_assert_eq!(invariants::objects_disjoint(s.snap_after, s.after.config()), Ok(()));
            prop_assert_eq!(invariants::derivation_shape(s.snap_after), Ok(()));
            prop_assert_eq!(invariants::objects_aligned(s.snap_after), Ok(()));
            Ok(())
        })?;
    }

    /// 6. The derivation tree is a forest over non-empty slots, and the model's own
    /// bookkeeping (depths, object table) agrees with it.
    #[test]
    fn tree_is_a_forest((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            prop_assert_eq!(invariants::forest(s.snap_after), Ok(()));
            prop_assert_eq!(invariants::slots_in_live_cnodes(s.snap_after, s.after.config()), Ok(()));
            prop_assert_eq!(s.after.check_consistency(), Ok(()));
            Ok(())
        })?;
    }

    /// 7. An operation that fails changes nothing.
    #[test]
    fn errors_change_nothing((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            if s.result.is_err() {
                prop_assert_eq!(s.snap_before, s.snap_after);
                prop_assert_eq!(s.before, s.after);
            }
            Ok(())
        })?;
    }
}

/// For every untyped cap in a root slot: once it has no children (directly, or after
/// revoking it), a Retype of one Untyped of its full size succeeds.
fn reclaim_all(layout: Layout, m: &Model) -> Result<(), TestCaseError> {
    let root = m.root_cap();
    let CapView::CNode {
        addr: root_addr,
        radix,
        ..
    } = root
    else {
        unreachable!()
    };
    let snap = m.snapshot();
    // The retype goes through root slot 1, so it must still hold a cap to the root.
    if snap.get(&(root_addr, 1)).map(|v| v.cap.object()) != Some(root.object()) {
        return Ok(());
    }
    let Some(free) = (0..1u64 << radix).find(|i| !snap.contains_key(&(root_addr, *i))) else {
        return Ok(());
    };
    for (&(cnode, i), view) in &snap {
        let CapView::Untyped { size_bits, .. } = view.cap else {
            continue;
        };
        if cnode != root_addr {
            continue;
        }
        let full = Op::Retype {
            untyped: layout.root_slot(i),
            ty: ObjectType::Untyped as u64,
            size_bits,
            dest: layout.root_slot(1),
            offset: free,
            count: 1,
        };
        let mut fresh = m.clone();
        if fresh.descendants((cnode, i)).is_empty() {
            prop_assert_eq!(fresh.apply(&full), Ok(()));
        }
        let mut revoked = m.clone();
        prop_assert_eq!(
            revoked.apply(&Op::Revoke {
                slot: layout.root_slot(i)
            }),
            Ok(())
        );
        prop_assert!(revoked.descendants((cnode, i)).is_empty());
        prop_assert_eq!(revoked.apply(&full), Ok(()), "untyped in root slot {}", i);
    }
    Ok(())
}
