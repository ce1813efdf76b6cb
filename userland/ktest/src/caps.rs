//! Test cases of capabilities: Untyped retype, every CNode operation, rights, badges,
//! the derivation tree, addressing errors. Each case starts from a clean Untyped (the
//! runner revokes it first) and uses root slots from `FREE` on.

use crate::util::*;
use bulkhead_sys::cap::{rights, ObjectType, MAX_BADGE};
use bulkhead_sys::{invocation, Error};
use kcore::cap::Cap;

/// A test case: gets the Untyped slot it may use.
pub type Case = fn(u64) -> Outcome;

const F: u64 = FREE;
const EP: ObjectType = ObjectType::Endpoint;

fn retype_endpoint(ut: u64) -> Outcome {
    expect(make(ut, EP, 0, F), Ok(()), "retype failed")?;
    check(
        matches!(
            cap_at(F),
            Cap::Endpoint {
                rights: rights::ALL,
                badge: 0,
                ..
            }
        ),
        "not an endpoint cap",
    )?;
    let (_, parent) = place(F).ok_or("slot unreadable")?;
    check(
        parent == place(ut).map(|p| p.0),
        "parent is not the untyped",
    )
}

fn retype_many(ut: u64) -> Outcome {
    expect(
        retype(ut, ObjectType::Notification as u64, 0, ROOT, F, 16),
        Ok(()),
        "retype 16",
    )?;
    for i in 0..16 {
        check(
            matches!(cap_at(F + i), Cap::Notification { .. }),
            "missing notification",
        )?;
    }
    check(cap_at(F + 16).is_null(), "one too many")
}

fn retype_objects_are_aligned_and_disjoint(ut: u64) -> Outcome {
    expect(make(ut, EP, 0, F), Ok(()), "endpoint")?;
    expect(make(ut, ObjectType::CNode, 4, F + 1), Ok(()), "cnode")?;
    expect(make(ut, ObjectType::Tcb, 0, F + 2), Ok(()), "tcb")?;
    let Cap::Endpoint { addr: e, .. } = cap_at(F) else {
        return Err("no endpoint");
    };
    let Cap::CNode {
        addr: c, radix: 4, ..
    } = cap_at(F + 1)
    else {
        return Err("no cnode");
    };
    let Cap::Tcb { addr: t } = cap_at(F + 2) else {
        return Err("no tcb");
    };
    check(c % (1 << 9) == 0 && t % (1 << 11) == 0, "misaligned")?;
    check(e + 16 <= c && c + 512 <= t, "overlapping or out of order")
}

fn retype_count_zero(ut: u64) -> Outcome {
    expect(
        retype(ut, EP as u64, 0, ROOT, F, 0),
        Err(Error::RangeError),
        "count 0",
    )
}
fn retype_count_too_big(ut: u64) -> Outcome {
    expect(
        retype(ut, EP as u64, 0, ROOT, F, 257),
        Err(Error::RangeError),
        "count 257",
    )
}
fn retype_offset_past_cnode(ut: u64) -> Outcome {
    expect(
        retype(ut, EP as u64, 0, ROOT, 1023, 2),
        Err(Error::RangeError),
        "offset+count > slots",
    )?;
    expect(
        retype(ut, EP as u64, 0, ROOT, u64::MAX, 1),
        Err(Error::RangeError),
        "offset overflow",
    )
}
fn retype_into_occupied(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    expect(
        retype(ut, EP as u64, 0, ROOT, F - 1, 2),
        Err(Error::DeleteFirst),
        "occupied",
    )
}
fn retype_bad_type(ut: u64) -> Outcome {
    expect(
        retype(ut, 99, 0, ROOT, F, 1),
        Err(Error::InvalidArgument),
        "type 99",
    )
}
fn retype_bad_sizes(ut: u64) -> Outcome {
    expect(
        make(ut, ObjectType::CNode, 0, F),
        Err(Error::RangeError),
        "cnode radix 0",
    )?;
    expect(
        make(ut, ObjectType::CNode, 25, F),
        Err(Error::RangeError),
        "cnode radix 25",
    )?;
    expect(
        make(ut, ObjectType::Untyped, 3, F),
        Err(Error::RangeError),
        "untyped 3 bits",
    )?;
    expect(
        make(ut, ObjectType::Untyped, 48, F),
        Err(Error::RangeError),
        "untyped 48 bits",
    )
}
fn retype_from_non_untyped(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, F).map_err(|_| "setup")?;
    expect(
        retype(F, EP as u64, 0, ROOT, F + 1, 1),
        Err(Error::IllegalOperation),
        "from notification",
    )
}
fn retype_from_empty(_ut: u64) -> Outcome {
    expect(
        retype(F + 50, EP as u64, 0, ROOT, F, 1),
        Err(Error::InvalidCapability),
        "from empty",
    )
}
fn retype_dest_not_cnode(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    expect(
        retype(ut, EP as u64, 0, F, 0, 1),
        Err(Error::FailedLookup),
        "dest endpoint",
    )?;
    expect(
        retype(ut, EP as u64, 0, F + 9, 0, 1),
        Err(Error::FailedLookup),
        "dest empty",
    )
}
fn retype_exhausts_untyped(ut: u64) -> Outcome {
    // A 16 KiB child untyped holds exactly eight 2 KiB TCBs.
    make(ut, ObjectType::Untyped, 14, F).map_err(|_| "setup")?;
    expect(
        retype(F, ObjectType::Tcb as u64, 0, ROOT, F + 1, 8),
        Ok(()),
        "eight fit",
    )?;
    expect(
        retype(F, ObjectType::Tcb as u64, 0, ROOT, F + 9, 1),
        Err(Error::NotEnoughMemory),
        "ninth",
    )?;
    expect(
        make(F, ObjectType::Untyped, 15, F + 10),
        Err(Error::NotEnoughMemory),
        "bigger than parent",
    )
}
fn retype_reuses_memory_after_revoke(ut: u64) -> Outcome {
    make(ut, ObjectType::Untyped, 14, F).map_err(|_| "setup")?;
    retype(F, ObjectType::Tcb as u64, 0, ROOT, F + 1, 8).map_err(|_| "fill")?;
    expect(revoke(F), Ok(()), "revoke")?;
    check(
        (1..9).all(|i| cap_at(F + i).is_null()),
        "children survived revoke",
    )?;
    expect(
        retype(F, ObjectType::Tcb as u64, 0, ROOT, F + 1, 8),
        Ok(()),
        "memory not reclaimed",
    )
}
fn retype_after_delete_of_all_children(ut: u64) -> Outcome {
    make(ut, ObjectType::Untyped, 12, F).map_err(|_| "setup")?;
    make(F, ObjectType::Frame4K, 0, F + 1).map_err(|_| "frame")?;
    expect(
        make(F, ObjectType::Frame4K, 0, F + 2),
        Err(Error::NotEnoughMemory),
        "full",
    )?;
    delete(F + 1).map_err(|_| "delete")?;
    expect(
        make(F, ObjectType::Frame4K, 0, F + 2),
        Ok(()),
        "not back in accounting",
    )
}
fn copy_reduces_rights(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    expect(copy(F + 1, F, rights::READ), Ok(()), "copy")?;
    check(
        matches!(
            cap_at(F + 1),
            Cap::Endpoint {
                rights: rights::READ,
                ..
            }
        ),
        "rights not masked",
    )?;
    expect(copy(F + 2, F + 1, rights::ALL), Ok(()), "copy of copy")?;
    check(
        matches!(
            cap_at(F + 2),
            Cap::Endpoint {
                rights: rights::READ,
                ..
            }
        ),
        "rights amplified",
    )
}
fn copy_bad_rights(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    expect(
        copy(F + 1, F, 0x10),
        Err(Error::InvalidArgument),
        "undefined rights bit",
    )
}
fn copy_to_occupied(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    expect(
        copy(F, F, rights::ALL),
        Err(Error::DeleteFirst),
        "onto itself",
    )
}
fn copy_from_empty(_ut: u64) -> Outcome {
    expect(
        copy(F + 1, F, rights::ALL),
        Err(Error::FailedLookup),
        "empty source",
    )
}
fn copy_untyped_refused(ut: u64) -> Outcome {
    expect(
        copy(F, ut, rights::ALL),
        Err(Error::IllegalOperation),
        "untyped copy",
    )
}
fn copy_frame_rights(ut: u64) -> Outcome {
    make(ut, ObjectType::Frame4K, 0, F).map_err(|_| "setup")?;
    copy(F + 1, F, rights::READ).map_err(|_| "copy")?;
    check(
        matches!(
            cap_at(F + 1),
            Cap::Frame {
                rights: rights::READ,
                size_bits: 12,
                ..
            }
        ),
        "frame rights",
    )
}
fn copy_cnode_keeps_all_rights(ut: u64) -> Outcome {
    make(ut, ObjectType::CNode, 2, F).map_err(|_| "setup")?;
    expect(copy(F + 1, F, 0), Ok(()), "copy")?;
    check(cap_at(F + 1) == cap_at(F), "cnode cap changed")
}
fn mint_badges(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    expect(mint(F + 1, F, rights::WRITE, 42), Ok(()), "mint")?;
    check(
        matches!(
            cap_at(F + 1),
            Cap::Endpoint {
                rights: rights::WRITE,
                badge: 42,
                ..
            }
        ),
        "badge/rights",
    )?;
    expect(copy(F + 2, F + 1, rights::ALL), Ok(()), "copy badged")?;
    check(
        matches!(cap_at(F + 2), Cap::Endpoint { badge: 42, .. }),
        "copy lost the badge",
    )
}
fn mint_rebadge_refused(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    mint(F + 1, F, rights::ALL, 1).map_err(|_| "mint")?;
    expect(
        mint(F + 2, F + 1, rights::ALL, 2),
        Err(Error::IllegalOperation),
        "rebadge",
    )?;
    expect(
        mint(F + 2, F + 1, rights::ALL, 0),
        Ok(()),
        "badge 0 keeps it",
    )
}
fn mint_badge_too_big(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, F).map_err(|_| "setup")?;
    expect(
        mint(F + 1, F, rights::ALL, MAX_BADGE + 1),
        Err(Error::InvalidArgument),
        "badge 2^48",
    )?;
    expect(mint(F + 1, F, rights::ALL, MAX_BADGE), Ok(()), "max badge")
}
fn mint_badge_ignored_on_frames(ut: u64) -> Outcome {
    make(ut, ObjectType::Frame4K, 0, F).map_err(|_| "setup")?;
    expect(mint(F + 1, F, rights::ALL, 5), Ok(()), "mint frame")?;
    check(cap_at(F + 1) == cap_at(F), "frame changed")
}
fn move_keeps_tree_place(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    copy(F + 1, F, rights::ALL).map_err(|_| "copy")?;
    let before = cap_at(F);
    expect(mv(F + 5, F), Ok(()), "move")?;
    check(cap_at(F).is_null() && cap_at(F + 5) == before, "not moved")?;
    let (moved, _) = place(F + 5).ok_or("unreadable")?;
    check(
        place(F + 1).and_then(|p| p.1) == Some(moved),
        "child lost its parent",
    )
}
fn move_errors(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    make(ut, EP, 0, F + 1).map_err(|_| "setup")?;
    expect(mv(F + 1, F), Err(Error::DeleteFirst), "onto occupied")?;
    expect(mv(F + 3, F + 2), Err(Error::FailedLookup), "from empty")?;
    expect(mv(F, F), Err(Error::DeleteFirst), "onto itself")
}
fn mutate_sets_badge(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    copy(F + 1, F, rights::ALL).map_err(|_| "copy")?;
    expect(mutate(F + 2, F + 1, 9), Ok(()), "mutate")?;
    check(
        matches!(cap_at(F + 2), Cap::Endpoint { badge: 9, .. }),
        "no badge",
    )?;
    expect(
        mutate(F + 3, F + 2, 10),
        Err(Error::IllegalOperation),
        "rebadge by mutate",
    )
}
fn delete_lifts_children(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    copy(F + 1, F, rights::ALL).map_err(|_| "copy")?;
    copy(F + 2, F + 1, rights::ALL).map_err(|_| "copy2")?;
    expect(delete(F + 1), Ok(()), "delete")?;
    check(
        place(F + 2).and_then(|p| p.1) == place(F).map(|p| p.0),
        "grandchild not lifted",
    )
}
fn delete_empty_ok(_ut: u64) -> Outcome {
    expect(delete(F + 77), Ok(()), "empty delete")
}
fn delete_cnode_destroys_contents(ut: u64) -> Outcome {
    make(ut, ObjectType::CNode, 3, F).map_err(|_| "setup")?;
    // Two endpoints straight into the new CNode's slots 0 and 1.
    expect(
        retype(ut, EP as u64, 0, F, 0, 2),
        Ok(()),
        "retype into child cnode",
    )?;
    make(ut, ObjectType::Untyped, 12, F + 1).map_err(|_| "untyped")?;
    expect(delete(F), Ok(()), "delete cnode")?;
    // The endpoints are gone: revoking the parent finds only the child untyped.
    expect(revoke(ut), Ok(()), "revoke")?;
    check(cap_at(F + 1).is_null(), "untyped child survived")
}
fn revoke_deep_tree(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    for i in 0..60 {
        copy(F + 1 + i, F + i, rights::ALL).map_err(|_| "chain")?;
    }
    for i in 0..5 {
        mint(F + 100 + i, F + 30, rights::READ, 7 + i).map_err(|_| "fan")?;
    }
    expect(revoke(F), Ok(()), "revoke")?;
    check((1..61).all(|i| cap_at(F + i).is_null()), "chain survived")?;
    check((100..105).all(|i| cap_at(F + i).is_null()), "fan survived")?;
    check(!cap_at(F).is_null(), "revoked cap itself deleted")
}
fn revoke_leaves_siblings(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    copy(F + 1, F, rights::ALL).map_err(|_| "a")?;
    copy(F + 2, F, rights::ALL).map_err(|_| "b")?;
    copy(F + 3, F + 1, rights::ALL).map_err(|_| "a'")?;
    expect(revoke(F + 1), Ok(()), "revoke")?;
    check(
        cap_at(F + 3).is_null() && !cap_at(F + 2).is_null(),
        "wrong caps revoked",
    )
}
fn lookup_depth_errors(ut: u64) -> Outcome {
    make(ut, EP, 0, F).map_err(|_| "setup")?;
    let c = |dd| {
        cnode_depth(
            ROOT,
            invocation::CNODE_COPY,
            F + 1,
            dd,
            F,
            64,
            rights::ALL,
            0,
        )
    };
    expect(c(0), Err(Error::RangeError), "depth 0")?;
    expect(c(65), Err(Error::RangeError), "depth 65")?;
    expect(
        c(10),
        Err(Error::FailedLookup),
        "depth shorter than the guard",
    )?;
    expect(
        cnode(
            ROOT,
            invocation::CNODE_COPY,
            1 << 40 | (F + 1),
            F,
            rights::ALL,
            0,
        ),
        Err(Error::FailedLookup),
        "guard mismatch",
    )
}
fn invoke_errors(ut: u64) -> Outcome {
    make(ut, ObjectType::Notification, 0, F).map_err(|_| "setup")?;
    expect(
        cnode(F, invocation::CNODE_COPY, F + 1, F, rights::ALL, 0),
        Err(Error::IllegalOperation),
        "notification as cnode",
    )?;
    expect(
        cnode(F + 5, invocation::CNODE_COPY, F + 1, F, rights::ALL, 0),
        Err(Error::InvalidCapability),
        "empty cap",
    )?;
    expect(
        cnode(ROOT, 999, F + 1, F, 0, 0),
        Err(Error::IllegalOperation),
        "unknown label",
    )?;
    expect(
        cnode(1 << 60, invocation::CNODE_COPY, F + 1, F, 0, 0),
        Err(Error::FailedLookup),
        "bad cptr",
    )
}
fn nested_cnode_addressing(ut: u64) -> Outcome {
    make(ut, ObjectType::CNode, 4, F).map_err(|_| "setup")?;
    expect(retype(ut, EP as u64, 0, F, 3, 1), Ok(()), "into child")?;
    // Within the child (radix 4, no guard): depth 4 addresses its slots.
    let c = |d, s| cnode_depth(F, invocation::CNODE_COPY, d, 4, s, 4, rights::READ, 0);
    expect(c(4, 3), Ok(()), "copy inside the child")?;
    expect(c(4, 3), Err(Error::DeleteFirst), "again")?;
    expect(
        cnode_depth(F, invocation::CNODE_COPY, 5, 3, 3, 4, rights::READ, 0),
        Err(Error::FailedLookup),
        "depth 3",
    )?;
    expect(
        cnode_depth(F, invocation::CNODE_DELETE, 4, 4, 0, 0, 0, 0),
        Ok(()),
        "delete inside",
    )
}

const CASES: &[(&str, Case)] = &[
    ("retype_endpoint", retype_endpoint),
    ("retype_many", retype_many),
    (
        "retype_objects_are_aligned_and_disjoint",
        retype_objects_are_aligned_and_disjoint,
    ),
    ("retype_count_zero", retype_count_zero),
    ("retype_count_too_big", retype_count_too_big),
    ("retype_offset_past_cnode", retype_offset_past_cnode),
    ("retype_into_occupied", retype_into_occupied),
    ("retype_bad_type", retype_bad_type),
    ("retype_bad_sizes", retype_bad_sizes),
    ("retype_from_non_untyped", retype_from_non_untyped),
    ("retype_from_empty", retype_from_empty),
    ("retype_dest_not_cnode", retype_dest_not_cnode),
    ("retype_exhausts_untyped", retype_exhausts_untyped),
    (
        "retype_reuses_memory_after_revoke",
        retype_reuses_memory_after_revoke,
    ),
    (
        "retype_after_delete_of_all_children",
        retype_after_delete_of_all_children,
    ),
    ("copy_reduces_rights", copy_reduces_rights),
    ("copy_bad_rights", copy_bad_rights),
    ("copy_to_occupied", copy_to_occupied),
    ("copy_from_empty", copy_from_empty),
    ("copy_untyped_refused", copy_untyped_refused),
    ("copy_frame_rights", copy_frame_rights),
    ("copy_cnode_keeps_all_rights", copy_cnode_keeps_all_rights),
    ("mint_badges", mint_badges),
    ("mint_rebadge_refused", mint_rebadge_refused),
    ("mint_badge_too_big", mint_badge_too_big),
    ("mint_badge_ignored_on_frames", mint_badge_ignored_on_frames),
    ("move_keeps_tree_place", move_keeps_tree_place),
    ("move_errors", move_errors),
    ("mutate_sets_badge", mutate_sets_badge),
    ("delete_lifts_children", delete_lifts_children),
    ("delete_empty_ok", delete_empty_ok),
    (
        "delete_cnode_destroys_contents",
        delete_cnode_destroys_contents,
    ),
    ("revoke_deep_tree", revoke_deep_tree),
    ("revoke_leaves_siblings", revoke_leaves_siblings),
    ("lookup_depth_errors", lookup_depth_errors),
    ("invoke_errors", invoke_errors),
    ("nested_cnode_addressing", nested_cnode_addressing),
];

/// Runs every case; returns the number that failed (0 = success).
pub fn run_all() -> u64 {
    let cases = CASES
        .iter()
        .chain(crate::threads::CASES.iter())
        .chain(crate::irqs::CASES.iter())
        .chain(crate::sched::CASES.iter())
        .chain(crate::more::CASES.iter())
        .chain(crate::smp::CASES.iter())
        .chain(crate::ipcbuf::CASES.iter())
        .chain(crate::vm::CASES.iter());
    let Some((ut, base, bits)) = largest_untyped() else {
        defmt::error!("ktest: no Untyped memory was given to this task");
        return 1;
    };
    defmt::info!(
        "ktest: using Untyped in slot {=u64}: {=u64:#x}, 2^{=u32} bytes",
        ut,
        base,
        bits
    );
    let (mut passed, mut failed) = (0u64, 0u64);
    for (name, case) in cases {
        let _ = revoke(ut);
        match case(ut) {
            Ok(()) => {
                passed += 1;
                defmt::info!("TEST {=str} ... ok", name);
            }
            Err(why) => {
                failed += 1;
                defmt::error!("TEST {=str} ... FAILED: {=str}", name, why);
            }
        }
    }
    let _ = revoke(ut);
    defmt::info!("ktest: {=u64} passed, {=u64} failed", passed, failed);
    failed
}
