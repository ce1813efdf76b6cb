//! Random operations for property and differential tests.
//!
//! Generated operations are mostly plausible (slots near the start of the root, the
//! initial untypeds, small types and counts) so that long sequences build up interesting
//! states, and sometimes malformed (bad depths, guards, indices, badges, rights, types,
//! sizes, counts and offsets) so that every error path is taken.
//!
//! Object invocations (stage-2 objects, VCPUs, IRQs) make over a quarter of the
//! operations. Two sequences in three first set up the objects they work on ([`vm_setup`]:
//! a configured VSpace, a Frame, a TCB, a VCPU, a Notification and an IRQHandler, each in
//! its own root slot, [`Layout::vm_slots`]), which the invocations name more often than
//! other slots, and which are deleted now and then; the system's IRQControl cap is in a
//! root slot of its own too (see [`Layout::boot`]).

use crate::{Addr, BootConfig, Model, Op};
use bulkhead_sys::cap::{ObjectType, MAX_BADGE};
use bulkhead_sys::{reg, vcpu_reg};
use proptest::prelude::*;

/// Where the generated set-up ([`vm_setup`]) puts its objects: root slots, which the
/// generated invocations favour for the arguments of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSlots {
    /// The IRQControl cap (placed at boot).
    pub irq_control: u64,
    /// An IRQHandler cap (where IrqControlGet puts them most often).
    pub handler: u64,
    /// A Notification.
    pub ntfn: u64,
    /// A VCPU.
    pub vcpu: u64,
    /// A TCB.
    pub tcb: u64,
    /// A TablePool.
    pub pool: u64,
    /// A VSpace configured with the pool.
    pub vspace: u64,
    /// A Frame.
    pub frame: u64,
    /// A copy of the Frame cap with random rights, or another 4 KiB Frame.
    pub frame_copy: u64,
}

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

    /// A fresh system for the layout: its configuration, with the IRQControl cap in root
    /// slot `vm_slots().irq_control`.
    pub fn boot(self) -> Model {
        Model::boot_with_irq_control(&self.config(), self.vm_slots().irq_control)
    }

    /// The root slots of the generated set-up: under the standard layout 16..25, away
    /// from the slots the other operations mostly use; under the nested one (whose root
    /// has 16 slots) 0 and 8..16, among them.
    pub fn vm_slots(self) -> VmSlots {
        match self {
            Layout::Standard => VmSlots {
                handler: 16,
                ntfn: 17,
                vcpu: 18,
                tcb: 19,
                pool: 20,
                vspace: 21,
                frame: 22,
                irq_control: 23,
                frame_copy: 24,
            },
            Layout::Nested => VmSlots {
                handler: 0,
                ntfn: 9,
                vcpu: 10,
                tcb: 11,
                pool: 12,
                vspace: 13,
                frame: 14,
                irq_control: 15,
                frame_copy: 8,
            },
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

/// A sequence of random operations for the given layout (to run on [`Layout::boot`]). Its
/// first few operations (up to three, fewer in short sequences) are well-formed Retypes
/// from the RAM untyped, so that the rest of the sequence has objects to work on; under
/// the nested layout the first of them makes radix-2 CNodes in root slots 4 and maybe 5.
/// Two sequences in three set up objects for the invocations ([`vm_setup`]) first (after
/// the nested layout's CNodes).
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
    let vm = prop_oneof![1 => Just(Vec::new()), 2 => vm_setup(layout)];
    (setup, vm, len).prop_flat_map(move |(setup, vm, n)| {
        let mut setup = setup;
        let at = match layout {
            Layout::Standard => 0,
            Layout::Nested => 1.min(setup.len()),
        };
        setup.splice(at..at, vm);
        let rest = n.saturating_sub(setup.len());
        setup.truncate(n);
        proptest::collection::vec(op_strategy_for(layout), rest).prop_map(move |tail| {
            let mut all = setup.clone();
            all.extend(tail);
            all
        })
    })
}

/// A TablePool of 8, 16 or 32 KiB (1, 3 or 7 tables), a VSpace configured with it, a Frame
/// of 4 to 16 KiB and either a copy of its cap with random rights or another Frame, a TCB,
/// a VCPU, a Notification,
/// and an IRQHandler cap for a claimed interrupt, in the root slots of
/// [`Layout::vm_slots`].
pub fn vm_setup(layout: Layout) -> impl Strategy<Value = Vec<Op>> {
    let v = layout.vm_slots();
    let at = move |ty: ObjectType, size_bits: u32, slot: u64| Op::Retype {
        untyped: layout.root_slot(2),
        ty: ty as u64,
        size_bits,
        dest: layout.root_slot(1),
        offset: slot,
        count: 1,
    };
    let setup = (
        prop_oneof![1 => Just(13u32), 3 => 14u32..=15],
        12u32..=14,
        irq(),
        prop_oneof![1 => (0u8..16).prop_map(Some), 1 => Just(None)],
    );
    setup.prop_map(move |(pool, frame, irq, mask)| {
        let second = match mask {
            Some(rights) => Op::Copy {
                dest: layout.root_slot(v.frame_copy),
                src: layout.root_slot(v.frame),
                rights,
            },
            None => at(ObjectType::Frame4K, 0, v.frame_copy),
        };
        vec![
            at(ObjectType::TablePool, pool, v.pool),
            at(ObjectType::VSpace, 0, v.vspace),
            Op::VSpaceConfigure {
                vspace: layout.root_slot(v.vspace),
                pool: layout.root_slot(v.pool),
            },
            at(ObjectType::Frame, frame, v.frame),
            second,
            at(ObjectType::Tcb, 0, v.tcb),
            at(ObjectType::Vcpu, 0, v.vcpu),
            at(ObjectType::Notification, 0, v.ntfn),
            Op::IrqControlGet {
                control: layout.root_slot(v.irq_control),
                irq,
                dest: layout.root_slot(v.handler),
            },
        ]
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
        8 => (a(), a(), badge()).prop_map(|(dest, src, badge)| Op::Mutate { dest, src, badge }),
        4 => a().prop_map(|slot| Op::Delete { slot }),
        4 => a().prop_map(|slot| Op::Revoke { slot }),
        5 => (a(), a()).prop_map(|(dest, src)| Op::Grant { dest, src }),
        2 => prop_oneof![
            3 => (2u64..4).prop_map(move |i| layout.root_slot(i)),
            1 => a(),
        ]
        .prop_map(|untyped| Op::UntypedInfo { untyped }),
        30 => retype(layout),
        24 => stage2_op(layout),
        12 => vcpu_irq_op(layout),
    ]
}

/// A slot of the generated VSpace set-up (`slot`) three times in five, else any slot.
fn role(layout: Layout, slot: u64) -> BoxedStrategy<Addr> {
    prop_oneof![3 => Just(layout.root_slot(slot)), 2 => addr(layout)].boxed()
}

/// A TCB, VSpace, Frame or TablePool invocation.
fn stage2_op(layout: Layout) -> impl Strategy<Value = Op> {
    let v = layout.vm_slots();
    let a = move || role(layout, v.tcb);
    let vspace = move || role(layout, v.vspace);
    let frame = move || {
        prop_oneof![
            2 => Just(layout.root_slot(v.frame)),
            2 => Just(layout.root_slot(v.frame_copy)),
            1 => addr(layout),
        ]
    };
    prop_oneof![
        2 => (a(), register()).prop_map(|(tcb, reg)| Op::TcbReadRegister { tcb, reg }),
        3 => (a(), register(), spsr()).prop_map(|(tcb, reg, value)| Op::TcbWriteRegister {
            tcb,
            reg,
            value
        }),
        4 => (a(), vspace()).prop_map(|(tcb, vspace)| Op::TcbSetSpace { tcb, vspace }),
        3 => (vspace(), role(layout, v.pool))
            .prop_map(|(vspace, pool)| Op::VSpaceConfigure { vspace, pool }),
        6 => (vspace(), frame(), ipa(), map_rights()).prop_map(|(vspace, frame, ipa, rights)| {
            Op::VSpaceBindRegion {
                vspace,
                frame,
                ipa,
                rights,
            }
        }),
        3 => (vspace(), ipa(), length()).prop_map(|(vspace, ipa, len)| Op::VSpaceUnmapRange {
            vspace,
            ipa,
            len
        }),
        8 => (frame(), prop_oneof![4 => vspace().prop_map(Some), 1 => Just(None)], ipa(), map_rights())
            .prop_map(|(frame, space, ipa, arg)| Op::FrameMap {
                frame,
                space,
                ipa,
                arg
            }),
        3 => frame().prop_map(|frame| Op::FrameUnmap { frame }),
        1 => role(layout, v.pool).prop_map(|pool| Op::PoolInfo { pool }),
        3 => set_up_slot(layout).prop_map(|slot| Op::Delete { slot }),
    ]
}

/// One of the slots of the generated set-up (to destroy what it holds, at times).
fn set_up_slot(layout: Layout) -> impl Strategy<Value = Addr> {
    let v = layout.vm_slots();
    let slots = vec![
        v.handler,
        v.ntfn,
        v.vcpu,
        v.tcb,
        v.pool,
        v.vspace,
        v.frame,
        v.frame_copy,
    ];
    prop::sample::select(slots).prop_map(move |i| layout.root_slot(i))
}

/// A VCPU, IRQControl or IRQHandler invocation.
fn vcpu_irq_op(layout: Layout) -> impl Strategy<Value = Op> {
    let v = layout.vm_slots();
    let vcpu = move || role(layout, v.vcpu);
    let handler = move || role(layout, v.handler);
    let vcpu_reg = || prop_oneof![4 => 0..=vcpu_reg::COUNT, 1 => any::<u64>()];
    prop_oneof![
        3 => (vcpu(), role(layout, v.tcb)).prop_map(|(vcpu, tcb)| Op::VcpuBindTcb { vcpu, tcb }),
        1 => (vcpu(), prop_oneof![3 => 0u64..1030, 1 => any::<u64>()], prop_oneof![3 => 0u64..=256, 1 => any::<u64>()])
            .prop_map(|(vcpu, virq, priority)| Op::VcpuInjectIrq { vcpu, virq, priority }),
        1 => (vcpu(), vcpu_reg()).prop_map(|(vcpu, reg)| Op::VcpuReadSysreg { vcpu, reg }),
        1 => (vcpu(), vcpu_reg(), any::<u64>())
            .prop_map(|(vcpu, reg, value)| Op::VcpuWriteSysreg { vcpu, reg, value }),
        4 => (role(layout, v.irq_control), irq(), handler())
            .prop_map(|(control, irq, dest)| Op::IrqControlGet { control, irq, dest }),
        3 => (handler(), role(layout, v.ntfn)).prop_map(|(handler, notification)| {
            Op::IrqHandlerSetNotification {
                handler,
                notification,
            }
        }),
        1 => handler().prop_map(|handler| Op::IrqHandlerAck { handler }),
        2 => handler().prop_map(|handler| Op::IrqHandlerClear { handler }),
    ]
}

/// An IPA: mostly small and aligned to 4, 16 or 64 KiB, often one of four (so frames
/// overlap and misalign),
/// sometimes at or past the end of the 40-bit IPA space, sometimes anything.
fn ipa() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => prop::sample::select(vec![0u64, 0x1000, 0x4000, 0x1_0000]),
        6 => (0u64..8, prop::sample::select(vec![12u32, 14, 16])).prop_map(|(k, s)| k << s),
        1 => prop::sample::select(vec![(1 << 40) - 0x1000, (1 << 40) - 0x4000, 1 << 40, !0xfff]),
        1 => any::<u64>(),
    ]
}

/// A length for VSpaceUnmapRange.
fn length() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => prop::sample::select(vec![0u64, 0x1000, 0x2000, 0x4000, 0x1_0000, 1 << 21]),
        1 => 0u64..0x2_0000,
        1 => any::<u64>(),
    ]
}

/// Map rights (`bulkhead_sys::map_rights`), sometimes with a memory type above them.
fn map_rights() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => prop::sample::select(vec![1u64, 3, 5, 7]),
        2 => 0u64..16,
        1 => prop::sample::select(vec![0x101u64, 0x103, 0x201, 0x100]),
    ]
}

/// A TCB register index: mostly SPSR and its neighbours.
fn register() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0u64..=reg::SPSR,
        3 => Just(reg::SPSR),
        1 => reg::SPSR + 1..=reg::SPSR + 2,
        1 => any::<u64>(),
    ]
}

/// A value for a register, mostly one of the interesting SPSRs.
fn spsr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => prop::sample::select(vec![0u64, 0x3c4, 0x3c5, 4, 5, 1, 9, 0x10, 1 << 32 | 5]),
        1 => any::<u64>(),
    ]
}

/// An interrupt ID: mostly a few PPIs and SPIs (so claims collide), sometimes one the
/// kernel keeps or one out of range.
fn irq() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => prop::sample::select(vec![16u64, 17, 30, 33, 40, 1019]),
        2 => 0u64..1030,
        1 => prop::sample::select(vec![26u64, 1020, 1 << 32, u64::MAX]),
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
        1 => fixed(ObjectType::VSpace),
        1 => fixed(ObjectType::Vcpu),
        1 => (Just(ObjectType::TablePool as u64), prop_oneof![4 => 13u32..=15, 1 => 0u32..30]),
        2 => (Just(ObjectType::Frame as u64), prop_oneof![4 => 12u32..=14, 1 => 0u32..40]),
        1 => (0u64..14, 0u32..64),
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
