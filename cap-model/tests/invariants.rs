//! Properties of the model over random operation sequences (see `cap_model::gen`).
//!
//! Each property runs on sequences for both boot configurations: the standard one (every
//! address resolves in one level) and the nested one (addresses reach into CNodes whose
//! caps sit in root slots), each with an IRQControl cap.
//!
//! Properties 1–7 concern capabilities; 8–10 the state beside them (stage-2 objects,
//! VCPUs, interrupts).

use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::Error;
use cap_model::gen::{ops_for, Layout};
use cap_model::vm::Vm;
use cap_model::{invariants, CapView, IrqCap, Model, Op, SlotId, Snapshot};
use proptest::prelude::*;

/// Cases per property; ten properties make 10,000 sequences.
const CASES: u32 = 1000;

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
    let mut m = layout.boot();
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

/// The memory cap the non-empty slot at `a` held before the operation; `None` if it held an
/// IRQ cap (which snapshots leave out).
fn cap_before(step: &Step, a: cap_model::Addr) -> Result<Option<CapView>, TestCaseError> {
    let id = slot_of(step, a).unwrap();
    match step.snap_before.get(&id) {
        Some(v) => Ok(Some(v.cap)),
        None => {
            prop_assert!(
                step.before.irq_caps().contains_key(&id),
                "{:?} was empty",
                id
            );
            Ok(None)
        }
    }
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
                let Some(src_cap) = cap_before(s, *src)? else { return Ok(()) };
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
                    let Some(src_cap) = cap_before(s, src)? else {
                        // An IRQ cap: copied as it is, a child of the source.
                        let irq = s.after.irq_caps();
                        prop_assert_eq!(irq[&slot_of(s, dest).unwrap()], (s.before.irq_caps()[&src_id].0, Some(src_id)));
                        return Ok(());
                    };
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
                    let Some(old) = cap_before(s, src)? else { return Ok(()) };
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

    /// 7. An operation that fails changes nothing; but a FrameMap that fails in its walk
    /// (`NotEnoughMemory` or `DeleteFirst`) leaves the tables it linked, and only those,
    /// as the kernel does.
    #[test]
    fn errors_change_nothing((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            if s.result.is_err() {
                prop_assert_eq!(s.snap_before, s.snap_after);
                if matches!(s.op, Op::FrameMap { .. }) {
                    prop_assert_eq!(without_tables(s.before.vm()), without_tables(s.after.vm()));
                    for (space, st) in &s.before.vm().spaces {
                        prop_assert!(st.tables.is_subset(&s.after.vm().spaces[space].tables));
                    }
                } else {
                    prop_assert_eq!(s.before, s.after);
                }
            }
            Ok(())
        })?;
    }

    /// 8. The state beside the caps refers only to live objects, after every operation:
    /// every mapping and region names a live frame in a configured space and was allowed by
    /// the rights of the cap it was made through, every leaf lies in a mapping of its own
    /// frame, every configured VSpace and its pool exist, every thread in a VSpace and
    /// every VCPU binding joins live objects (a VCPU and a TCB are bound to at most one
    /// other), and the claimed IRQs are exactly those some IRQHandler cap names. So no
    /// mapping, region, binding or configuration survives the destruction of an object it
    /// names, whether by Delete, by Revoke of an Untyped, or by a CNode's destruction.
    #[test]
    fn vm_state_refers_to_live_objects((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            prop_assert_eq!(invariants::check_vm(s.after), Ok(()));
            Ok(())
        })?;
    }

    /// 9. A frame is mapped only through a capability with the rights of the mapping: a
    /// FrameMap or BindRegion that succeeds named a frame cap with Read (and Write for a
    /// writable mapping), and records exactly that cap's rights; one through a cap lacking
    /// them fails with `InvalidCapability` and maps nothing.
    #[test]
    fn mappings_need_the_cap_rights((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            let (frame, map) = match *s.op {
                Op::FrameMap { frame, arg, .. } => (frame, arg & 0xff),
                Op::VSpaceBindRegion { frame, rights, .. } => (frame, rights),
                _ => return Ok(()),
            };
            let before = s.before.vm().mappings.len();
            let after = &s.after.vm().mappings;
            let Ok(()) = s.result else {
                prop_assert_eq!(after.len(), before);
                return Ok(());
            };
            prop_assert_eq!(after.len(), before + 1);
            let cap = s.snap_before[&slot_of(s, frame).unwrap()].cap;
            let CapView::Frame { rights: cap_rights, .. } = cap else {
                return Err(TestCaseError::fail(format!("mapped through {cap:?}")));
            };
            let needed = invariants::cap_rights_needed(map);
            prop_assert_eq!(cap_rights & needed, needed, "{:?} through {:?}", s.op, cap);
            let new = after[before];
            prop_assert_eq!(new.frame, cap.object());
            prop_assert_eq!(new.cap_rights, cap_rights);
            prop_assert_eq!(new.rights, map);
            Ok(())
        })?;
    }

    /// 10. The object invocations change no capability (every slot's cap and parent stay
    /// as they were), but IrqControlGet, which on success adds exactly one IRQHandler cap,
    /// for the claimed IRQ, as a child of the IRQControl cap invoked.
    #[test]
    fn invocations_change_no_cap((layout, ops) in scenario()) {
        run(layout, &ops, |s| {
            if is_cap_op(s.op) {
                return Ok(());
            }
            prop_assert_eq!(s.snap_before, s.snap_after);
            let (before, after) = (s.before.irq_caps(), s.after.irq_caps());
            match (s.op, s.result) {
                (Op::IrqControlGet { control, irq, dest }, Ok(())) => {
                    let d = slot_of(s, *dest).unwrap();
                    let mut expect = before.clone();
                    let irq = u32::try_from(*irq).unwrap();
                    expect.insert(d, (IrqCap::Handler(irq), Some(slot_of(s, *control).unwrap())));
                    prop_assert_eq!(&after, &expect);
                    prop_assert!(!s.before.vm().irqs.contains_key(&irq));
                    prop_assert_eq!(s.after.vm().irqs.get(&irq), Some(&None));
                }
                _ => prop_assert_eq!(&before, &after),
            }
            Ok(())
        })?;
    }
}

/// The CNode and Untyped operations and Grant (the others are object invocations).
fn is_cap_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Copy { .. }
            | Op::Mint { .. }
            | Op::Move { .. }
            | Op::Mutate { .. }
            | Op::Delete { .. }
            | Op::Revoke { .. }
            | Op::Grant { .. }
            | Op::Retype { .. }
    )
}

/// The state with every space's tables forgotten.
fn without_tables(vm: &Vm) -> Vm {
    let mut vm = vm.clone();
    for st in vm.spaces.values_mut() {
        st.tables.clear();
    }
    vm
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
    let irq_caps = m.irq_caps();
    let used =
        |i: u64| snap.contains_key(&(root_addr, i)) || irq_caps.contains_key(&(root_addr, i));
    let Some(free) = (0..1u64 << radix).find(|&i| !used(i)) else {
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
