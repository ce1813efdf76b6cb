//! The generators reach every outcome the property tests depend on: each operation both
//! succeeds and fails, every error of the design page and of `docs/abi.md` that the
//! generators can reach appears, and under the nested configuration operations succeed
//! on slots below the root.

use bulkhead_sys::Error;
use cap_model::gen::{ops_for, Layout};
use cap_model::{Addr, Op};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use std::collections::{BTreeMap, BTreeSet};

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
        Op::TcbReadRegister { .. } => "TcbReadRegister",
        Op::TcbWriteRegister { .. } => "TcbWriteRegister",
        Op::TcbSetSpace { .. } => "TcbSetSpace",
        Op::VSpaceConfigure { .. } => "VSpaceConfigure",
        Op::VSpaceBindRegion { .. } => "VSpaceBindRegion",
        Op::VSpaceUnmapRange { .. } => "VSpaceUnmapRange",
        Op::FrameMap { .. } => "FrameMap",
        Op::FrameUnmap { .. } => "FrameUnmap",
        Op::PoolInfo { .. } => "PoolInfo",
        Op::UntypedInfo { .. } => "UntypedInfo",
        Op::VcpuBindTcb { .. } => "VcpuBindTcb",
        Op::VcpuInjectIrq { .. } => "VcpuInjectIrq",
        Op::VcpuReadSysreg { .. } => "VcpuReadSysreg",
        Op::VcpuWriteSysreg { .. } => "VcpuWriteSysreg",
        Op::IrqControlGet { .. } => "IrqControlGet",
        Op::IrqHandlerSetNotification { .. } => "IrqHandlerSetNotification",
        Op::IrqHandlerAck { .. } => "IrqHandlerAck",
        Op::IrqHandlerClear { .. } => "IrqHandlerClear",
    }
}

/// The slot addresses an operation names.
fn addrs(op: &Op) -> Vec<Addr> {
    match *op {
        Op::Copy { dest, src, .. }
        | Op::Mint { dest, src, .. }
        | Op::Move { dest, src }
        | Op::Mutate { dest, src, .. }
        | Op::Grant { dest, src } => vec![dest, src],
        Op::Delete { slot } | Op::Revoke { slot } => vec![slot],
        Op::Retype { untyped, dest, .. } => vec![untyped, dest],
        Op::TcbReadRegister { tcb, .. } | Op::TcbWriteRegister { tcb, .. } => vec![tcb],
        Op::TcbSetSpace { tcb, vspace } => vec![tcb, vspace],
        Op::VSpaceConfigure { vspace, pool } => vec![vspace, pool],
        Op::VSpaceBindRegion { vspace, frame, .. } => vec![vspace, frame],
        Op::VSpaceUnmapRange { vspace, .. } => vec![vspace],
        Op::FrameMap { frame, space, .. } => [Some(frame), space].into_iter().flatten().collect(),
        Op::FrameUnmap { frame } => vec![frame],
        Op::PoolInfo { pool } => vec![pool],
        Op::UntypedInfo { untyped } => vec![untyped],
        Op::VcpuBindTcb { vcpu, tcb } => vec![vcpu, tcb],
        Op::VcpuInjectIrq { vcpu, .. }
        | Op::VcpuReadSysreg { vcpu, .. }
        | Op::VcpuWriteSysreg { vcpu, .. } => vec![vcpu],
        Op::IrqControlGet { control, dest, .. } => vec![control, dest],
        Op::IrqHandlerSetNotification {
            handler,
            notification,
        } => vec![handler, notification],
        Op::IrqHandlerAck { handler } | Op::IrqHandlerClear { handler } => vec![handler],
    }
}

fn deep(op: &Op) -> bool {
    addrs(op).iter().any(|a| a.depth > 4)
}

type Outcomes = BTreeSet<(&'static str, Option<u64>)>;

/// Every (operation, error code or `None` for success) pair seen over `n` sequences, how
/// many operations on slots below the root succeeded, and how often each operation
/// succeeded.
fn outcomes(layout: Layout, n: usize) -> (Outcomes, usize, BTreeMap<&'static str, usize>) {
    let mut runner = TestRunner::deterministic();
    let strategy = ops_for(layout, 1..80);
    let mut seen = BTreeSet::new();
    let mut deep_ok = 0;
    let mut ok: BTreeMap<&'static str, usize> = BTreeMap::new();
    for _ in 0..n {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let mut m = layout.boot();
        for op in &ops {
            let result = m.apply(op);
            if result.is_ok() {
                *ok.entry(kind(op)).or_default() += 1;
                if deep(op) {
                    deep_ok += 1;
                }
            }
            seen.insert((kind(op), result.err().map(|e| e as u64)));
        }
    }
    (seen, deep_ok, ok)
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
    // The object invocations: what the generators reach (the limits of 16 regions, 64
    // threads, 64 VSpaces and 128 mappings have unit tests in `vm_objects.rs`).
    let invocations: &[(&str, &[Error])] = &[
        (
            "TcbReadRegister",
            &[
                FailedLookup,
                InvalidCapability,
                IllegalOperation,
                RangeError,
            ],
        ),
        (
            "TcbWriteRegister",
            &[IllegalOperation, RangeError, InvalidArgument],
        ),
        (
            "TcbSetSpace",
            &[FailedLookup, InvalidCapability, IllegalOperation],
        ),
        ("VSpaceConfigure", &[InvalidCapability, IllegalOperation]),
        (
            "VSpaceBindRegion",
            &[
                InvalidCapability,
                IllegalOperation,
                InvalidArgument,
                AlignmentError,
                RangeError,
                DeleteFirst,
            ],
        ),
        ("VSpaceUnmapRange", &[IllegalOperation, AlignmentError]),
        (
            "FrameMap",
            &[
                InvalidCapability,
                IllegalOperation,
                InvalidArgument,
                AlignmentError,
                RangeError,
                DeleteFirst,
                NotEnoughMemory,
            ],
        ),
        ("FrameUnmap", &[IllegalOperation, InvalidArgument]),
        ("PoolInfo", &[InvalidCapability, IllegalOperation]),
        ("UntypedInfo", &[InvalidCapability, IllegalOperation]),
        (
            "VcpuBindTcb",
            &[InvalidCapability, IllegalOperation, DeleteFirst],
        ),
        ("VcpuInjectIrq", &[IllegalOperation, RangeError]),
        ("VcpuReadSysreg", &[RangeError]),
        ("VcpuWriteSysreg", &[RangeError]),
        (
            "IrqControlGet",
            &[
                FailedLookup,
                IllegalOperation,
                RangeError,
                DeleteFirst,
                RevokeFirst,
            ],
        ),
        (
            "IrqHandlerSetNotification",
            &[InvalidCapability, IllegalOperation],
        ),
        ("IrqHandlerAck", &[IllegalOperation]),
        ("IrqHandlerClear", &[IllegalOperation]),
    ];
    let (mut seen, _, mut ok) = outcomes(Layout::Standard, 400);
    let (nested, deep_ok, nested_ok) = outcomes(Layout::Nested, 400);
    assert!(
        deep_ok > 100,
        "only {deep_ok} operations below the root succeeded"
    );
    for (op, _) in expected {
        assert!(nested.contains(&(op, None)), "nested: {op} never succeeds");
    }
    seen.extend(nested);
    for (k, n) in nested_ok {
        *ok.entry(k).or_default() += n;
    }
    let mut missing = Vec::new();
    for (op, errors) in expected.iter().chain(invocations) {
        if !seen.contains(&(op, None)) {
            missing.push(format!("{op} never succeeds"));
        }
        for e in *errors {
            if !seen.contains(&(op, Some(*e as u64))) {
                missing.push(format!("{op} never fails with {e:?}"));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}; successes: {ok:?}");
    // The invocations that build state succeed often enough to build interesting states.
    for op in [
        "TcbSetSpace",
        "VSpaceBindRegion",
        "FrameMap",
        "VcpuBindTcb",
        "IrqControlGet",
        "IrqHandlerSetNotification",
    ] {
        let n = ok.get(op).copied().unwrap_or(0);
        assert!(n >= 50, "{op} succeeded only {n} times: {ok:?}");
    }
}
