//! Random operations for property and differential tests.
//!
//! Generated operations are mostly plausible (slots near the start of the root, the
//! initial untypeds, small types and counts) so that long sequences build up interesting
//! states, and sometimes malformed (bad depths, guards, indices, badges, rights, types,
//! sizes, counts and offsets) so that every error path is taken.

use crate::{Addr, BootConfig, Op};
use bulkhead_sys::cap::{ObjectType, MAX_BADGE};
use proptest::prelude::*;

/// Which boot configuration the generated addresses are meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// [`BootConfig::standard`]: `Addr { index: i, depth: 64 }` is root slot `i`.
    Standard,
    /// [`BootConfig::nested`]: depth 4 names a root slot, and `(s << r) | i` at depth
    /// `4 + r` names slot `i` of a radix-`r` CNode whose cap is in root slot `s`.
    Nested,
}

impl Layout {
    /// The boot configuration the layout is meant for.
    pub fn config(self) -> BootConfig {
        match self {
            Layout::Standard => BootConfig::standard(),
            Layout::Nested => BootConfig::nested(),
        }
    }

    /// The address of root slot `i`.
    pub fn root_slot(self, i: u64) -> Addr {
        match self {
            Layout::Standard => Addr {
                index: i,
                depth: 64,
            },
            Layout::Nested => Addr { index: i, depth: 4 },
        }
    }
}

/// A random operation for [`BootConfig::standard`].
pub fn op_strategy() -> impl Strategy<Value = Op> {
    op_strategy_for(Layout::Standard)
}

/// A sequence of random operations for [`BootConfig::standard`].
pub fn ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    ops_for(Layout::Standard, len)
}

/// A random operation for [`BootConfig::nested`].
pub fn nested_op_strategy() -> impl Strategy<Value = Op> {
    op_strategy_for(Layout::Nested)
}

/// A sequence of random operations for [`BootConfig::nested`].
pub fn nested_ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    ops_for(Layout::Nested, len)
}

/// A sequence of random operations for the given layout. Its first few operations (up to
/// three, fewer in short sequences) are well-formed Retypes from the RAM untyped, so that
/// the rest of the sequence has objects to work on; under the nested layout the first of
/// them makes radix-2 CNodes in root slots 4 and maybe 5.
pub fn ops_for(layout: Layout, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    let setup = match layout {
        Layout::Standard => proptest::collection::vec(setup_retype(layout), 0..=3).boxed(),
        Layout::Nested => (
            1u64..=2,
            proptest::collection::vec(setup_retype(layout), 0..=2),
        )
            .prop_map(move |(count, mut rest)| {
                let cnodes = Op::Retype {
                    untyped: layout.root_slot(2),
                    ty: ObjectType::CNode as u64,
                    size_bits: NESTED_RADIX,
                    dest: layout.root_slot(1),
                    offset: 4,
                    count,
                };
                rest.insert(0, cnodes);
                rest
            })
            .boxed(),
    };
    (setup, len).prop_flat_map(move |(setup, n)| {
        let rest = n.saturating_sub(setup.len());
        let mut setup = setup;
        setup.truncate(n);
        proptest::collection::vec(op_strategy_for(layout), rest).prop_map(move |tail| {
            let mut all = setup.clone();
            all.extend(tail);
            all
        })
    })
}

/// A Retype that succeeds on a fresh system (unless an earlier one filled its slots).
fn setup_retype(layout: Layout) -> impl Strategy<Value = Op> {
    let ty = prop_oneof![
        Just((ObjectType::Endpoint, 0)),
        Just((ObjectType::Notification, 0)),
        Just((ObjectType::Frame4K, 0)),
        Just((ObjectType::Tcb, 0)),
        prop_oneof![2 => Just(NESTED_RADIX), 1 => 1u32..=4].prop_map(|r| (ObjectType::CNode, r)),
        (6u32..=12).prop_map(|b| (ObjectType::Untyped, b)),
    ];
    (ty, 4u64..12, 1u64..=3).prop_map(move |((ty, size_bits), offset, count)| Op::Retype {
        untyped: layout.root_slot(2),
        ty: ty as u64,
        size_bits,
        dest: layout.root_slot(1),
        offset,
        count: count.min(12 - offset),
    })
}

/// A random operation for the given layout.
pub fn op_strategy_for(layout: Layout) -> impl Strategy<Value = Op> {
    let a = || addr(layout);
    prop_oneof![
        16 => (a(), a(), rights()).prop_map(|(dest, src, rights)| Op::Copy { dest, src, rights }),
        16 => (a(), a(), rights(), badge()).prop_map(|(dest, src, rights, badge)| Op::Mint {
            dest,
            src,
            rights,
            badge
        }),
        5 => (a(), a()).prop_map(|(dest, src)| Op::Move { dest, src }),
        5 => (a(), a(), badge()).prop_map(|(dest, src, badge)| Op::Mutate { dest, src, badge }),
        4 => a().prop_map(|slot| Op::Delete { slot }),
        4 => a().prop_map(|slot| Op::Revoke { slot }),
        5 => (a(), a()).prop_map(|(dest, src)| Op::Grant { dest, src }),
        30 => retype(layout),
    ]
}

fn retype(layout: Layout) -> impl Strategy<Value = Op> {
    let untyped = prop_oneof![
        4 => (2u64..4).prop_map(move |i| layout.root_slot(i)),
        1 => addr(layout),
    ];
    let dest = prop_oneof![
        7 => Just(layout.root_slot(1)),
        1 => addr(layout),
    ];
    let offset = prop_oneof![
        4 => 4u64..8,
        3 => 8u64..12,
        2 => 0u64..16,
        1 => prop_oneof![0u64..300, any::<u64>()],
    ];
    let count = prop_oneof![
        9 => 1u64..=4,
        1 => prop_oneof![Just(0u64), 250u64..=260, any::<u64>()],
    ];
    (untyped, type_and_size(layout), dest, offset, count).prop_map(
        |(untyped, (ty, size_bits), dest, offset, count)| Op::Retype {
            untyped,
            ty,
            size_bits,
            dest,
            offset,
            count,
        },
    )
}

/// A type number with a size argument that mostly suits it.
fn type_and_size(layout: Layout) -> impl Strategy<Value = (u64, u32)> {
    let fixed = |t: ObjectType| (Just(t as u64), 0u32..64);
    // The nested layout's addresses mostly assume radix-2 CNodes below the root.
    let radix = match layout {
        Layout::Standard => prop_oneof![9 => 1u32..=4, 1 => 0u32..30].boxed(),
        Layout::Nested => {
            prop_oneof![6 => Just(NESTED_RADIX), 3 => 1u32..=4, 1 => 0u32..30].boxed()
        }
    };
    prop_oneof![
        3 => fixed(ObjectType::Endpoint),
        2 => fixed(ObjectType::Notification),
        2 => fixed(ObjectType::Frame4K),
        2 => fixed(ObjectType::Tcb),
        3 => (Just(ObjectType::CNode as u64), radix),
        3 => (Just(ObjectType::Untyped as u64), prop_oneof![9 => 4u32..=12, 1 => 0u32..50]),
        1 => (0u64..12, 0u32..64),
    ]
}

/// The radix the nested layout's generated addresses mostly assume for CNodes below the root.
const NESTED_RADIX: u32 = 2;

/// Mostly root slots 4..12 (where Retype puts objects) and 0..4 (the initial caps), and
/// under the nested layout slots of CNodes in root slots 4..8; sometimes malformed.
fn addr(layout: Layout) -> BoxedStrategy<Addr> {
    let at = |index, depth| Addr { index, depth };
    match layout {
        Layout::Standard => prop_oneof![
            50 => (4u64..8).prop_map(move |i| at(i, 64)),
            22 => (8u64..12).prop_map(move |i| at(i, 64)),
            10 => (0u64..4).prop_map(move |i| at(i, 64)),
            3 => (0u64..256).prop_map(move |i| at(i, 64)),
            3 => any::<u64>().prop_map(move |i| at(i, 64)),
            2 => (0u64..16, 0u32..=70).prop_map(move |(i, d)| at(i, d)),
            1 => (0u64..16, bad_depth()).prop_map(move |(i, d)| at(i, d)),
            2 => (0u64..16, 56u32..64).prop_map(move |(i, g)| at(i | 1 << g, 64)),
        ]
        .boxed(),
        Layout::Nested => {
            let radix = || prop_oneof![4 => Just(NESTED_RADIX), 1 => 1u32..=4];
            prop_oneof![
                25 => (4u64..8).prop_map(move |i| at(i, 4)),
                10 => (8u64..12).prop_map(move |i| at(i, 4)),
                10 => (0u64..4).prop_map(move |i| at(i, 4)),
                35 => (4u64..8, radix(), 0u64..16)
                    .prop_map(move |(s, r, i)| at(s << r | (i & ((1 << r) - 1)), 4 + r)),
                10 => (4u64..8, radix(), 0u64..16, radix(), 0u64..16).prop_map(
                    move |(s, r1, t, r2, i)| {
                        let t = t & ((1 << r1) - 1);
                        let i = i & ((1 << r2) - 1);
                        at((s << r1 | t) << r2 | i, 4 + r1 + r2)
                    }
                ),
                3 => (any::<u64>(), 0u32..=70).prop_map(move |(i, d)| at(i, d)),
                3 => (0u64..256, 1u32..=12).prop_map(move |(i, d)| at(i, d)),
                1 => (0u64..16, bad_depth()).prop_map(move |(i, d)| at(i, d)),
            ]
            .boxed()
        }
    }
}

/// A depth outside 1 ..= 64.
fn bad_depth() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 65u32..=u32::MAX]
}

fn rights() -> impl Strategy<Value = u8> {
    prop_oneof![9 => 0u8..16, 1 => any::<u8>()]
}

fn badge() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 1u64..8,
        2 => Just(0u64),
        1 => MAX_BADGE - 1..=MAX_BADGE + 1,
        1 => MAX_BADGE + 1..=u64::MAX,
    ]
}
