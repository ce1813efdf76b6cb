//! The generators reach every outcome the property tests depend on: each operation both
//! succeeds and fails, every error of the design page appears, and under the nested
//! configuration operations succeed on slots below the root.

use bulkhead_sys::Error;
use cap_model::gen::{ops_for, Layout};
use cap_model::{Model, Op};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use std::collections::BTreeSet;

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Copy { .. } => "Copy",
        Op::Mint { .. } => "Mint",
        Op::Move { .. } => "Move",
        Op::Mutate { .. } => "Mutate",
        Op::Delete { .. } => "Delete",
        Op::Revoke { .. } => "Revoke",
        Op::Retype { .. } => "Retype",
        Op::Grant { .. } => "Grant",
    }
}

fn deep(op: &Op) -> bool {
    match *op {
        Op::Copy { dest, src, .. }
        | Op::Mint { dest, src, .. }
        | Op::Move { dest, src }
        | Op::Mutate { dest, src, .. }
        | Op::Grant { dest, src } => dest.depth > 4 || src.depth > 4,
        Op::Delete { slot } | Op::Revoke { slot } => slot.depth > 4,
        Op::Retype { untyped, dest, .. } => untyped.depth > 4 || dest.depth > 4,
    }
}

/// Every (operation, error code or `None` for success) pair seen over `n` sequences, and how many operations on
/// slots below the root succeeded.
fn outcomes(layout: Layout, n: usize) -> (BTreeSet<(&'static str, Option<u64>)>, usize) {
    let mut runner = TestRunner::deterministic();
    let strategy = ops_for(layout, 1..80);
    let mut seen = BTreeSet::new();
    let mut deep_ok = 0;
    for _ in 0..n {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let mut m = Model::boot(&layout.config());
        for op in &ops {
            let result = m.apply(op);
            if result.is_ok() && deep(op) {
                deep_ok += 1;
            }
            seen.insert((kind(op), result.err().map(|e| e as u64)));
        }
    }
    (seen, deep_ok)
}

#[test]
fn generators_reach_every_outcome() {
    use Error::*;
    let expected: &[(&str, &[Error])] = &[
        (
            "Copy",
            &[
                DeleteFirst,
                FailedLookup,
                InvalidArgument,
                IllegalOperation,
                RangeError,
            ],
        ),
        (
            "Mint",
            &[
                DeleteFirst,
                FailedLookup,
                InvalidArgument,
                IllegalOperation,
                RangeError,
            ],
        ),
        ("Move", &[DeleteFirst, FailedLookup, RangeError]),
        (
            "Grant",
            &[DeleteFirst, FailedLookup, IllegalOperation, RangeError],
        ),
        (
            "Mutate",
            &[DeleteFirst, FailedLookup, IllegalOperation, InvalidArgument],
        ),
        ("Delete", &[FailedLookup, RangeError]),
        ("Revoke", &[FailedLookup, RangeError]),
        (
            "Retype",
            &[
                FailedLookup,
                InvalidCapability,
                IllegalOperation,
                InvalidArgument,
                RangeError,
                DeleteFirst,
                NotEnoughMemory,
            ],
        ),
    ];
    let (mut seen, _) = outcomes(Layout::Standard, 400);
    let (nested, deep_ok) = outcomes(Layout::Nested, 400);
    assert!(
        deep_ok > 100,
        "only {deep_ok} operations below the root succeeded"
    );
    for (op, _) in expected {
        assert!(nested.contains(&(op, None)), "nested: {op} never succeeds");
    }
    seen.extend(nested);
    for (op, errors) in expected {
        assert!(seen.contains(&(op, None)), "{op} never succeeds");
        for e in *errors {
            assert!(
                seen.contains(&(op, Some(*e as u64))),
                "{op} never fails with {e:?}"
            );
        }
    }
}
