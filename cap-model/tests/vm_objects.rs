//! The object invocations of stage-2 objects, VCPUs and interrupts (`docs/abi.md`, labels
//! 13–16 and 20–34): one test per documented check, in the kernel's order, what a success
//! records, and what the destruction of each kind of object does to that state.

mod common;

use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::{map_rights, reg, vcpu_reg, Error};
use cap_model::vm::{Space, Table, Vm, MAX_MAPPINGS, MAX_REGIONS, MAX_SPACES, MAX_THREADS};
use cap_model::{
    invariants, Addr, BootConfig, CapView, IrqCap, Model, ObjRef, Op, MAX_DERIVATION_DEPTH,
};
use common::*;

/// Root slots of [`setup`].
const VS: u64 = 4;
const POOL: u64 = 5;
const FRAME: u64 = 6;
const TCB: u64 = 7;
const VCPU: u64 = 8;
const NTFN: u64 = 9;
const EP: u64 = 10;
/// The IRQControl cap.
const IRQC: u64 = 15;
/// An empty slot.
const EMPTY: u64 = 30;

const R: u64 = map_rights::READ;
const RW: u64 = map_rights::READ | map_rights::WRITE;
const RX: u64 = map_rights::READ | map_rights::EXEC;

fn sys(cfg: &BootConfig) -> Model {
    Model::boot_with_irq_control(cfg, IRQC)
}

/// The standard system, with a VSpace (root slot 4) configured with a 16 KiB TablePool
/// (slot 5, three tables), a 4 KiB Frame (6), a TCB (7), a VCPU (8), a Notification (9)
/// and an Endpoint (10); the IRQControl cap in slot 15.
fn setup() -> Model {
    let mut m = sys(&BootConfig::standard());
    make(&mut m, ObjectType::TablePool, 14, POOL, 1);
    make(&mut m, ObjectType::VSpace, 0, VS, 1);
    ok(&mut m, configure(VS, POOL));
    make(&mut m, ObjectType::Frame4K, 0, FRAME, 1);
    make(&mut m, ObjectType::Tcb, 0, TCB, 1);
    make(&mut m, ObjectType::Vcpu, 0, VCPU, 1);
    make(&mut m, ObjectType::Notification, 0, NTFN, 1);
    make(&mut m, ObjectType::Endpoint, 0, EP, 1);
    m
}

/// A system with one 16 MiB RAM untyped in root slot 2, for the tests that need more.
fn big() -> Model {
    sys(&BootConfig {
        untypeds: vec![(0x800_0000, 24, false)],
        ..BootConfig::standard()
    })
}

fn configure(vs: u64, pool: u64) -> Op {
    Op::VSpaceConfigure {
        vspace: r(vs),
        pool: r(pool),
    }
}

fn bind(vs: u64, frame: u64, ipa: u64, rights: u64) -> Op {
    Op::VSpaceBindRegion {
        vspace: r(vs),
        frame: r(frame),
        ipa,
        rights,
    }
}

/// FrameMap into the VSpace in root slot `vs`, or into the caller's own space (`None`).
fn map(frame: u64, vs: Option<u64>, ipa: u64, arg: u64) -> Op {
    Op::FrameMap {
        frame: r(frame),
        space: vs.map(r),
        ipa,
        arg,
    }
}

fn unmap_range(vs: u64, ipa: u64, len: u64) -> Op {
    Op::VSpaceUnmapRange {
        vspace: r(vs),
        ipa,
        len,
    }
}

fn set_space(tcb: u64, vs: u64) -> Op {
    Op::TcbSetSpace {
        tcb: r(tcb),
        vspace: r(vs),
    }
}

fn copy(dest: u64, src: u64, mask: u8) -> Op {
    Op::Copy {
        dest: r(dest),
        src: r(src),
        rights: mask,
    }
}

fn delete(slot: u64) -> Op {
    Op::Delete { slot: r(slot) }
}

fn get(irq: u64, dest: u64) -> Op {
    Op::IrqControlGet {
        control: r(IRQC),
        irq,
        dest: r(dest),
    }
}

fn set_ntfn(handler: u64, ntfn: u64) -> Op {
    Op::IrqHandlerSetNotification {
        handler: r(handler),
        notification: r(ntfn),
    }
}

fn write_spsr(tcb: u64, value: u64) -> Op {
    Op::TcbWriteRegister {
        tcb: r(tcb),
        reg: reg::SPSR,
        value,
    }
}

/// The address of the object whose cap is in root slot `i`.
fn addr(m: &Model, i: u64) -> u64 {
    cap(m, i).object().addr
}

/// The object whose cap is in root slot `i`.
fn obj(m: &Model, i: u64) -> ObjRef {
    cap(m, i).object()
}

fn vs(m: &Model, i: u64) -> Space {
    Space::VSpace(addr(m, i))
}

/// PoolInfo of the pool in root slot `i`: (free, total).
fn pool_info(m: &mut Model, i: u64) -> (u64, u64) {
    let [free, total] = m
        .invoke(&Op::PoolInfo { pool: r(i) })
        .expect("PoolInfo")
        .expect("values");
    (free, total)
}

/// The leaves of a space as (start, end) runs.
fn leaves(m: &Model, s: Space) -> Vec<(u64, u64)> {
    m.vm().spaces[&s]
        .leaves
        .runs()
        .map(|(a, b, _)| (a, b))
        .collect()
}

/// Applies `op`, which must fail in a FrameMap's walk, and checks that only the tables of
/// the address spaces changed (more of them); returns the error.
fn fails_in_walk(m: &mut Model, op: Op) -> Error {
    let before = m.clone();
    let err = m.apply(&op).expect_err("the operation should fail");
    assert_eq!(m.snapshot(), before.snapshot());
    let strip = |v: &Vm| {
        let mut v = v.clone();
        v.spaces.values_mut().for_each(|s| s.tables.clear());
        v
    };
    assert_eq!(strip(m.vm()), strip(before.vm()));
    invariants::check_vm(m).expect("invariants of the object state hold");
    err
}

// ---------------------------------------------------------------------------------
// The invoked cap, for every invocation.

/// Every invocation, invoking the cap at `a` with otherwise good arguments.
fn every_invocation(a: Addr) -> Vec<Op> {
    vec![
        Op::TcbReadRegister { tcb: a, reg: 0 },
        Op::TcbWriteRegister {
            tcb: a,
            reg: 0,
            value: 0,
        },
        Op::TcbSetSpace {
            tcb: a,
            vspace: r(VS),
        },
        Op::VSpaceConfigure {
            vspace: a,
            pool: r(POOL),
        },
        Op::VSpaceBindRegion {
            vspace: a,
            frame: r(FRAME),
            ipa: 0,
            rights: R,
        },
        Op::VSpaceUnmapRange {
            vspace: a,
            ipa: 0,
            len: 0,
        },
        Op::FrameMap {
            frame: a,
            space: None,
            ipa: 0,
            arg: R,
        },
        Op::FrameUnmap { frame: a },
        Op::PoolInfo { pool: a },
        Op::VcpuBindTcb {
            vcpu: a,
            tcb: r(TCB),
        },
        Op::VcpuInjectIrq {
            vcpu: a,
            virq: 0,
            priority: 0,
        },
        Op::VcpuReadSysreg { vcpu: a, reg: 0 },
        Op::VcpuWriteSysreg {
            vcpu: a,
            reg: 0,
            value: 0,
        },
        Op::IrqControlGet {
            control: a,
            irq: 16,
            dest: r(EMPTY),
        },
        Op::IrqHandlerSetNotification {
            handler: a,
            notification: r(NTFN),
        },
        Op::IrqHandlerAck { handler: a },
        Op::IrqHandlerClear { handler: a },
    ]
}

#[test]
fn the_invoked_cap_is_checked_first() {
    let mut m = setup();
    let cases = [
        (Addr { index: 4, depth: 0 }, Error::RangeError),
        (r(1 << 60), Error::FailedLookup),
        (r(EMPTY), Error::InvalidCapability),
        (r(EP), Error::IllegalOperation),
    ];
    for (a, want) in cases {
        for op in every_invocation(a) {
            assert_eq!(fails(&mut m, op.clone()), want, "{op:?}");
        }
    }
    // An IRQ cap is of the wrong type for every invocation but its own.
    for op in every_invocation(r(IRQC)) {
        if !matches!(op, Op::IrqControlGet { .. }) {
            assert_eq!(fails(&mut m, op.clone()), Error::IllegalOperation, "{op:?}");
        }
    }
}

// ---------------------------------------------------------------------------------
// TCB register access (labels 20, 21).

#[test]
fn tcb_register_index_beyond_spsr_is_range_error() {
    let mut m = setup();
    ok(
        &mut m,
        Op::TcbReadRegister {
            tcb: r(TCB),
            reg: reg::SPSR,
        },
    );
    for reg in [reg::SPSR + 1, u64::MAX] {
        let read = Op::TcbReadRegister { tcb: r(TCB), reg };
        assert_eq!(fails(&mut m, read), Error::RangeError);
        let write = Op::TcbWriteRegister {
            tcb: r(TCB),
            reg,
            value: 0,
        };
        assert_eq!(fails(&mut m, write), Error::RangeError);
    }
    // Other registers take any value.
    let pc = Op::TcbWriteRegister {
        tcb: r(TCB),
        reg: reg::PC,
        value: u64::MAX,
    };
    ok(&mut m, pc);
}

#[test]
fn spsr_is_el0t_or_for_a_vcpu_thread_el1() {
    let mut m = setup();
    ok(&mut m, write_spsr(TCB, 0));
    ok(&mut m, write_spsr(TCB, 0x3c0)); // EL0t, DAIF masked
    for bad in [4, 5, 0x3c5, 9, 1, 0x10, 1 << 32] {
        assert_eq!(fails(&mut m, write_spsr(TCB, bad)), Error::InvalidArgument);
    }
    ok(
        &mut m,
        Op::VcpuBindTcb {
            vcpu: r(VCPU),
            tcb: r(TCB),
        },
    );
    for good in [0, 4, 5, 0x3c5] {
        ok(&mut m, write_spsr(TCB, good));
    }
    // Never EL2 (9: EL2h), AArch32 (0x10) or bits above 31.
    for bad in [9, 8, 1, 0x10, 1 << 32 | 5] {
        assert_eq!(fails(&mut m, write_spsr(TCB, bad)), Error::InvalidArgument);
    }
}

// ---------------------------------------------------------------------------------
// TcbSetSpace (label 22).

#[test]
fn set_space_needs_a_configured_vspace_cap() {
    let mut m = setup();
    let op = Op::TcbSetSpace {
        tcb: r(TCB),
        vspace: r(1 << 60),
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
    assert_eq!(
        fails(&mut m, set_space(TCB, EMPTY)),
        Error::InvalidCapability
    );
    assert_eq!(fails(&mut m, set_space(TCB, EP)), Error::InvalidCapability);
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    assert_eq!(fails(&mut m, set_space(TCB, 11)), Error::IllegalOperation);
}

#[test]
fn set_space_moves_the_thread() {
    let mut m = setup();
    make(&mut m, ObjectType::TablePool, 13, 12, 1);
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    ok(&mut m, configure(11, 12));
    ok(&mut m, set_space(TCB, VS));
    let t = addr(&m, TCB);
    assert_eq!(m.vm().threads[&t], addr(&m, VS));
    ok(&mut m, set_space(TCB, 11));
    assert_eq!(m.vm().threads[&t], addr(&m, 11));
    assert_eq!(m.vm().threads_in(addr(&m, VS)), 0);
    // Setting the same space again is fine.
    ok(&mut m, set_space(TCB, 11));
    assert_eq!(m.vm().threads.len(), 1);
}

#[test]
fn sixty_four_threads_fill_a_vspace() {
    let mut m = setup();
    let n = MAX_THREADS as u64;
    make(&mut m, ObjectType::Tcb, 0, 100, n + 1);
    for i in 0..n {
        ok(&mut m, set_space(100 + i, VS));
    }
    assert_eq!(
        fails(&mut m, set_space(100 + n, VS)),
        Error::NotEnoughMemory
    );
    // The kernel looks for a free entry before the thread leaves its old one: even a
    // thread already in the full space gets NotEnoughMemory.
    assert_eq!(fails(&mut m, set_space(100, VS)), Error::NotEnoughMemory);
    ok(&mut m, delete(100));
    ok(&mut m, set_space(100 + n, VS));
}

// ---------------------------------------------------------------------------------
// VSpaceConfigure (label 23).

#[test]
fn configure_needs_a_table_pool_and_happens_once() {
    let mut m = setup();
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    let op = Op::VSpaceConfigure {
        vspace: r(11),
        pool: r(1 << 60),
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
    assert_eq!(
        fails(&mut m, configure(11, EMPTY)),
        Error::InvalidCapability
    );
    assert_eq!(
        fails(&mut m, configure(11, FRAME)),
        Error::InvalidCapability
    );
    assert_eq!(fails(&mut m, configure(VS, POOL)), Error::IllegalOperation);
    // Two VSpaces may share a pool.
    ok(&mut m, configure(11, POOL));
    assert_eq!(m.vm().spaces[&vs(&m, 11)].pool, Some(obj(&m, POOL)));
    assert_eq!(pool_info(&mut m, POOL), (3, 3));
}

#[test]
fn sixty_four_vspaces_can_be_configured() {
    let mut m = big();
    let n = MAX_SPACES as u64;
    make(&mut m, ObjectType::TablePool, 13, 4, 1);
    make(&mut m, ObjectType::VSpace, 0, 100, n + 1);
    for i in 0..n {
        ok(&mut m, configure(100 + i, 4));
    }
    assert_eq!(fails(&mut m, configure(100 + n, 4)), Error::NotEnoughMemory);
    ok(&mut m, delete(100));
    ok(&mut m, configure(100 + n, 4));
}

// ---------------------------------------------------------------------------------
// VSpaceBindRegion (label 24).

#[test]
fn bind_region_checks_in_order() {
    let mut m = setup();
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    // The frame argument.
    let op = Op::VSpaceBindRegion {
        vspace: r(VS),
        frame: r(1 << 60),
        ipa: 0,
        rights: R,
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
    assert_eq!(
        fails(&mut m, bind(VS, EMPTY, 0, R)),
        Error::InvalidCapability
    );
    assert_eq!(fails(&mut m, bind(VS, EP, 0, R)), Error::InvalidCapability);
    // Not configured comes before the rights and the address.
    assert_eq!(
        fails(&mut m, bind(11, FRAME, 1, 0)),
        Error::IllegalOperation
    );
    // Map rights: within RWX and with Read.
    for bad in [0, map_rights::WRITE, map_rights::EXEC, 8, 0x101] {
        assert_eq!(
            fails(&mut m, bind(VS, FRAME, 1, bad)),
            Error::InvalidArgument,
            "{bad:#x}"
        );
    }
    // The frame cap's rights: Write needs Write, anything needs Read.
    ok(&mut m, copy(20, FRAME, rights::READ));
    ok(&mut m, copy(21, FRAME, rights::WRITE));
    assert_eq!(fails(&mut m, bind(VS, 20, 1, RW)), Error::InvalidCapability);
    assert_eq!(fails(&mut m, bind(VS, 21, 1, R)), Error::InvalidCapability);
    // Then the address: aligned to the frame's size, inside 40 bits.
    assert_eq!(fails(&mut m, bind(VS, 20, 1, R)), Error::AlignmentError);
    assert_eq!(fails(&mut m, bind(VS, 20, 1 << 40, R)), Error::RangeError);
    assert_eq!(fails(&mut m, bind(VS, 20, !0xfff, R)), Error::RangeError);
    // Execute needs no cap right beyond Read.
    ok(&mut m, bind(VS, 20, (1 << 40) - 0x1000, RX));
    let region = m.vm().mappings[0];
    assert!(region.region);
    assert_eq!(
        (region.rights, region.cap_rights, region.space),
        (RX, rights::READ, vs(&m, VS))
    );
    assert_eq!(region.frame, obj(&m, FRAME));
}

#[test]
fn a_frame_is_bound_once_per_space() {
    let mut m = setup();
    make(&mut m, ObjectType::TablePool, 13, 12, 1);
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    ok(&mut m, configure(11, 12));
    ok(&mut m, bind(VS, FRAME, 0, RW));
    // Through another cap to the same frame, elsewhere in the space: still the same frame.
    ok(&mut m, copy(20, FRAME, rights::ALL));
    assert_eq!(
        fails(&mut m, bind(VS, 20, 0x10_0000, R)),
        Error::DeleteFirst
    );
    // A frame mapped with FrameMap counts too.
    make(&mut m, ObjectType::Frame4K, 0, 21, 1);
    ok(&mut m, map(21, Some(VS), 0x20_0000, R));
    assert_eq!(
        fails(&mut m, bind(VS, 21, 0x30_0000, R)),
        Error::DeleteFirst
    );
    // Another space may have it.
    ok(&mut m, bind(11, FRAME, 0, R));
    assert_eq!(m.vm().mappings.len(), 3);
}

#[test]
fn regions_do_not_overlap_and_are_at_most_sixteen() {
    let mut m = setup();
    let n = MAX_REGIONS as u64;
    make(&mut m, ObjectType::Frame, 14, 20, 1); // 16 KiB
    make(&mut m, ObjectType::Frame4K, 0, 100, n + 1);
    ok(&mut m, bind(VS, 20, 0x4000, R));
    for at in [0x4000, 0x5000, 0x7000] {
        assert_eq!(fails(&mut m, bind(VS, 100, at, R)), Error::DeleteFirst);
    }
    ok(&mut m, bind(VS, 100, 0x3000, R));
    ok(&mut m, bind(VS, 101, 0x8000, R));
    for i in 2..n - 1 {
        ok(&mut m, bind(VS, 100 + i, 0x10_0000 * i, R));
    }
    assert_eq!(m.vm().regions(addr(&m, VS)).count(), MAX_REGIONS);
    // Full: an overlap is still reported first.
    assert_eq!(
        fails(&mut m, bind(VS, 100 + n - 1, 0x5000, R)),
        Error::DeleteFirst
    );
    assert_eq!(
        fails(&mut m, bind(VS, 100 + n - 1, 0x4000_0000, R)),
        Error::NotEnoughMemory
    );
}

#[test]
fn the_registry_holds_128_mappings_and_regions() {
    let mut m = setup();
    let n = MAX_MAPPINGS as u64;
    make(&mut m, ObjectType::Frame4K, 0, 100, n);
    for i in 0..n {
        ok(&mut m, map(100 + i, None, i * 0x1000, R));
    }
    assert_eq!(fails(&mut m, bind(VS, FRAME, 0, R)), Error::NotEnoughMemory);
    assert_eq!(
        fails(&mut m, map(FRAME, Some(VS), 0, R)),
        Error::NotEnoughMemory
    );
    ok(&mut m, Op::FrameUnmap { frame: r(100) });
    ok(&mut m, bind(VS, FRAME, 0, R));
}

// ---------------------------------------------------------------------------------
// VSpaceUnmapRange (label 25).

#[test]
fn unmap_range_checks_and_counts_leaves() {
    let mut m = setup();
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    assert_eq!(
        fails(&mut m, unmap_range(11, 0, 0x1000)),
        Error::IllegalOperation
    );
    for (ipa, len) in [
        (0x800, 0x1000),
        (0, 0x800),
        (0x1000, !0xfff),
        ((1 << 40) - 0x1000, 0x2000),
    ] {
        assert_eq!(
            fails(&mut m, unmap_range(VS, ipa, len)),
            Error::AlignmentError
        );
    }
    make(&mut m, ObjectType::Frame, 14, 20, 1); // 16 KiB: four leaves
    ok(&mut m, map(20, Some(VS), 0x10_0000, RW));
    assert_eq!(m.invoke(&unmap_range(VS, 0, 0)), Ok(Some([0, 0])));
    assert_eq!(
        m.invoke(&unmap_range(VS, 0x10_1000, 0x2000)),
        Ok(Some([2, 0]))
    );
    let space = vs(&m, VS);
    assert_eq!(
        leaves(&m, space),
        [(0x10_0000, 0x10_1000), (0x10_3000, 0x10_4000)]
    );
    assert_eq!(m.invoke(&unmap_range(VS, 0, 1 << 40)), Ok(Some([2, 0])));
    assert!(leaves(&m, space).is_empty());
    // The mapping is still registered: the frame is still in the space, and FrameUnmap
    // finds it.
    assert_eq!(
        fails(&mut m, map(20, Some(VS), 0x20_0000, R)),
        Error::DeleteFirst
    );
    // Its range stays its own: no other frame may be mapped there.
    assert_eq!(
        fails(&mut m, map(FRAME, Some(VS), 0x10_2000, R)),
        Error::DeleteFirst
    );
    ok(&mut m, Op::FrameUnmap { frame: r(20) });
    assert!(m.vm().mappings.is_empty());
    ok(&mut m, map(FRAME, Some(VS), 0x10_2000, R));
    assert_eq!(leaves(&m, space), [(0x10_2000, 0x10_3000)]);
}

// ---------------------------------------------------------------------------------
// FrameMap (label 28), FrameUnmap (29), PoolInfo (30).

#[test]
fn frame_map_checks_in_order() {
    let mut m = setup();
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    // The space argument.
    let op = Op::FrameMap {
        frame: r(FRAME),
        space: Some(r(1 << 60)),
        ipa: 0,
        arg: R,
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
    assert_eq!(
        fails(&mut m, map(FRAME, Some(EMPTY), 0, R)),
        Error::InvalidCapability
    );
    assert_eq!(
        fails(&mut m, map(FRAME, Some(POOL), 0, R)),
        Error::InvalidCapability
    );
    // Rights come before the space's configuration (unlike BindRegion).
    assert_eq!(
        fails(&mut m, map(FRAME, Some(11), 1, map_rights::WRITE)),
        Error::InvalidArgument
    );
    ok(&mut m, copy(20, FRAME, rights::READ));
    assert_eq!(
        fails(&mut m, map(20, Some(11), 1, RW)),
        Error::InvalidCapability
    );
    // Then the memory type (0 normal, 1 device).
    assert_eq!(
        fails(&mut m, map(20, Some(11), 1, R | 2 << 8)),
        Error::InvalidArgument
    );
    assert_eq!(
        fails(&mut m, map(20, Some(11), 1, R | 1 << 8)),
        Error::IllegalOperation
    );
    // Then the address.
    assert_eq!(
        fails(&mut m, map(20, Some(VS), 1, R)),
        Error::AlignmentError
    );
    assert_eq!(
        fails(&mut m, map(20, Some(VS), 1 << 40, R)),
        Error::RangeError
    );
    assert_eq!(fails(&mut m, map(20, None, 1 << 40, R)), Error::RangeError);
    ok(&mut m, map(20, None, 0x1000, R | 1 << 8));
    let own = m.vm().mappings[0];
    assert_eq!(
        (own.space, own.device, own.region),
        (Space::Own, true, false)
    );
    assert_eq!(leaves(&m, Space::Own), [(0x1000, 0x2000)]);
    // Once per address space; other spaces are fine.
    assert_eq!(
        fails(&mut m, map(FRAME, None, 0x8000, R)),
        Error::DeleteFirst
    );
    ok(&mut m, map(FRAME, Some(VS), 0x8000, RX));
    assert_eq!(fails(&mut m, bind(VS, FRAME, 0, R)), Error::DeleteFirst);
}

#[test]
fn frame_map_takes_tables_from_the_pool() {
    let mut m = setup();
    assert_eq!(pool_info(&mut m, POOL), (3, 3));
    make(&mut m, ObjectType::Frame4K, 0, 20, 2);
    ok(&mut m, map(FRAME, Some(VS), 0x1000, RW));
    // A level-2 and a level-3 table.
    assert_eq!(pool_info(&mut m, POOL), (1, 3));
    // The same 2 MiB: no table needed.
    ok(&mut m, map(20, Some(VS), 0x2000, RW));
    assert_eq!(pool_info(&mut m, POOL), (1, 3));
    // Another GiB needs two tables; the level-2 one is linked and stays.
    assert_eq!(
        fails_in_walk(&mut m, map(21, Some(VS), 1 << 30, R)),
        Error::NotEnoughMemory
    );
    assert_eq!(pool_info(&mut m, POOL), (0, 3));
    assert!(m.vm().spaces[&vs(&m, VS)].tables.contains(&Table::L2(1)));
    // Unmapping gives no table back; the VSpace's teardown does.
    ok(&mut m, Op::FrameUnmap { frame: r(FRAME) });
    assert_eq!(pool_info(&mut m, POOL), (0, 3));
    ok(&mut m, delete(VS));
    assert_eq!(pool_info(&mut m, POOL), (3, 3));
}

#[test]
fn an_eight_kib_pool_cannot_map_anything() {
    let mut m = setup();
    make(&mut m, ObjectType::TablePool, 13, 12, 1);
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    ok(&mut m, configure(11, 12));
    assert_eq!(pool_info(&mut m, 12), (1, 1));
    assert_eq!(
        fails_in_walk(&mut m, map(FRAME, Some(11), 0, R)),
        Error::NotEnoughMemory
    );
    assert_eq!(pool_info(&mut m, 12), (0, 1));
    // The own space's tables come from the kernel's reserve.
    ok(&mut m, map(FRAME, None, 0, R));
}

#[test]
fn frame_map_over_another_mapping_is_refused_before_any_table() {
    let mut m = big();
    make(&mut m, ObjectType::TablePool, 14, 4, 1);
    make(&mut m, ObjectType::VSpace, 0, 5, 1);
    ok(&mut m, configure(5, 4));
    make(&mut m, ObjectType::Frame4K, 0, 6, 1);
    make(&mut m, ObjectType::Frame, 22, 7, 1); // 4 MiB
    ok(&mut m, map(6, Some(5), 0x20_1000, R));
    assert_eq!(pool_info(&mut m, 4), (1, 3));
    // The 4 MiB frame would cover the page mapped at 0x20_1000: refused up front.
    assert_eq!(fails(&mut m, map(7, Some(5), 0, RW)), Error::DeleteFirst);
    assert_eq!(pool_info(&mut m, 4), (1, 3), "no table taken");
    let space = vs(&m, 5);
    assert_eq!(leaves(&m, space), [(0x20_1000, 0x20_2000)]);
    make(&mut m, ObjectType::Frame4K, 0, 8, 1);
    assert_eq!(
        fails(&mut m, map(8, Some(5), 0x20_1000, R)),
        Error::DeleteFirst
    );
}

#[test]
fn frame_maps_and_regions_never_overlap() {
    // Unmapping one must never take the other's pages: the kernel refuses any overlap of
    // mappings and regions in one address space.
    let mut m = setup();
    make(&mut m, ObjectType::Frame4K, 0, 20, 1);
    ok(&mut m, bind(VS, FRAME, 0, RW));
    assert_eq!(fails(&mut m, map(20, Some(VS), 0, R)), Error::DeleteFirst);
    make(&mut m, ObjectType::Frame4K, 0, 21, 1);
    ok(&mut m, bind(VS, 21, 0x1000, R));
    ok(&mut m, map(20, Some(VS), 0x2000, R));
    assert_eq!(fails(&mut m, bind(VS, 20, 0x2000, R)), Error::DeleteFirst);
    // Another address space is another matter.
    ok(&mut m, map(FRAME, None, 0, R));
}

#[test]
fn frame_unmap_removes_every_frame_map_mapping_only() {
    let mut m = setup();
    assert_eq!(
        fails(&mut m, Op::FrameUnmap { frame: r(FRAME) }),
        Error::InvalidArgument
    );
    ok(&mut m, bind(VS, FRAME, 0x10_0000, R));
    assert_eq!(
        fails(&mut m, Op::FrameUnmap { frame: r(FRAME) }),
        Error::InvalidArgument
    );
    ok(&mut m, map(FRAME, None, 0, R));
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    ok(&mut m, configure(11, POOL));
    ok(&mut m, map(FRAME, Some(11), 0, R));
    ok(&mut m, Op::FrameUnmap { frame: r(FRAME) });
    let left = &m.vm().mappings;
    assert_eq!(left.len(), 1);
    assert!(left[0].region);
    assert!(leaves(&m, Space::Own).is_empty());
    assert!(leaves(&m, vs(&m, 11)).is_empty());
}

#[test]
fn pool_info_counts_the_pool() {
    let mut m = setup();
    make(&mut m, ObjectType::TablePool, 16, 20, 1);
    assert_eq!(pool_info(&mut m, 20), (15, 15));
    assert_eq!(pool_info(&mut m, POOL), (3, 3));
}

// ---------------------------------------------------------------------------------
// VCPUs (labels 31–34).

#[test]
fn vcpu_bind_tcb_binds_one_to_one() {
    let mut m = setup();
    let op = Op::VcpuBindTcb {
        vcpu: r(VCPU),
        tcb: r(1 << 60),
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
    for bad in [EMPTY, VS, EP] {
        let op = Op::VcpuBindTcb {
            vcpu: r(VCPU),
            tcb: r(bad),
        };
        assert_eq!(fails(&mut m, op), Error::InvalidCapability);
    }
    let bind_vcpu = |v, t| Op::VcpuBindTcb {
        vcpu: r(v),
        tcb: r(t),
    };
    ok(&mut m, bind_vcpu(VCPU, TCB));
    assert_eq!(m.vm().vcpus[&addr(&m, VCPU)], addr(&m, TCB));
    make(&mut m, ObjectType::Vcpu, 0, 11, 1);
    make(&mut m, ObjectType::Tcb, 0, 12, 1);
    assert_eq!(fails(&mut m, bind_vcpu(VCPU, 12)), Error::DeleteFirst);
    assert_eq!(fails(&mut m, bind_vcpu(11, TCB)), Error::DeleteFirst);
    assert_eq!(fails(&mut m, bind_vcpu(VCPU, TCB)), Error::DeleteFirst);
    ok(&mut m, bind_vcpu(11, 12));
}

#[test]
fn vcpu_arguments_in_range() {
    let mut m = setup();
    let inject = |virq, priority| Op::VcpuInjectIrq {
        vcpu: r(VCPU),
        virq,
        priority,
    };
    ok(&mut m, inject(1019, 255));
    ok(&mut m, inject(0, 0));
    for (virq, prio) in [(1020, 0), (u64::MAX, 0), (16, 256)] {
        assert_eq!(fails(&mut m, inject(virq, prio)), Error::RangeError);
    }
    let last = vcpu_reg::COUNT - 1;
    for (reg, want) in [(last, Ok(())), (vcpu_reg::COUNT, Err(Error::RangeError))] {
        let read = Op::VcpuReadSysreg { vcpu: r(VCPU), reg };
        let write = Op::VcpuWriteSysreg {
            vcpu: r(VCPU),
            reg,
            value: 7,
        };
        assert_eq!(m.clone().apply(&read), want);
        assert_eq!(m.clone().apply(&write), want);
    }
}

// ---------------------------------------------------------------------------------
// IRQControl and IRQHandler (labels 13–16).

#[test]
fn irq_control_get_checks_in_order() {
    let mut m = setup();
    // The ID must fit 32 bits before the destination is looked up.
    let op = Op::IrqControlGet {
        control: r(IRQC),
        irq: 1 << 32,
        dest: r(1 << 60),
    };
    assert_eq!(fails(&mut m, op), Error::RangeError);
    let op = Op::IrqControlGet {
        control: r(IRQC),
        irq: 5,
        dest: r(1 << 60),
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
    // An occupied destination comes before the ID's range.
    assert_eq!(fails(&mut m, get(5, EP)), Error::DeleteFirst);
    for irq in [0, 15, 26, 1020, 1023, u32::MAX as u64] {
        assert_eq!(fails(&mut m, get(irq, EMPTY)), Error::RangeError, "{irq}");
    }
    ok(&mut m, get(16, EMPTY));
    assert_eq!(fails(&mut m, get(16, EMPTY + 1)), Error::RevokeFirst);
    ok(&mut m, get(1019, EMPTY + 1));
    let caps = m.irq_caps();
    assert_eq!(
        caps[&(ROOT, EMPTY)],
        (IrqCap::Handler(16), Some((ROOT, IRQC)))
    );
    assert_eq!(m.vm().irqs.keys().copied().collect::<Vec<_>>(), [16, 1019]);
    // IRQ caps are not memory caps: snapshots leave them out.
    assert!(!m.snapshot().contains_key(&(ROOT, EMPTY)));
}

#[test]
fn the_last_handler_cap_releases_the_irq() {
    let mut m = setup();
    ok(&mut m, get(40, 20));
    ok(&mut m, copy(21, 20, rights::ALL));
    ok(&mut m, delete(20));
    assert!(m.vm().irqs.contains_key(&40));
    assert_eq!(fails(&mut m, get(40, 22)), Error::RevokeFirst);
    ok(&mut m, delete(21));
    assert!(m.vm().irqs.is_empty());
    ok(&mut m, get(40, 22));
    // Revoking the IRQControl cap releases every IRQ it handed out.
    ok(&mut m, get(41, 23));
    ok(&mut m, Op::Revoke { slot: r(IRQC) });
    assert!(m.vm().irqs.is_empty());
    assert_eq!(m.irq_caps().len(), 1);
}

#[test]
fn a_destroyed_cnode_releases_the_handlers_it_held() {
    let mut m = sys(&BootConfig::nested());
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 2, n(1), 4, 1));
    let op = Op::IrqControlGet {
        control: n(IRQC),
        irq: 33,
        dest: n2(4, 2, 1),
    };
    ok(&mut m, op);
    assert!(m.vm().irqs.contains_key(&33));
    ok(&mut m, Op::Delete { slot: n(4) });
    assert!(m.vm().irqs.is_empty());
}

#[test]
fn irq_control_at_the_depth_limit_claims_nothing() {
    // A radix-16 CNode in root slot 4 gives room for a chain of 65535 copies.
    let cfg = BootConfig {
        untypeds: vec![(RAM, 24, false)],
        ..BootConfig::nested()
    };
    let mut m = sys(&cfg);
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 16, n(1), 4, 1));
    let at = |i: u64| n2(4, 16, i);
    let last = u64::from(MAX_DERIVATION_DEPTH) - 1;
    for i in 0..=last {
        let src = if i == 0 { n(IRQC) } else { at(i - 1) };
        m.apply(&Op::Copy {
            dest: at(i),
            src,
            rights: rights::ALL,
        })
        .unwrap();
    }
    assert_eq!(
        m.depth((cnode_addr(&m, 4), last)),
        Some(MAX_DERIVATION_DEPTH)
    );
    let get_from = |i: u64| Op::IrqControlGet {
        control: at(i),
        irq: 16,
        dest: n(6),
    };
    // The model checks the depth before it claims the IRQ (the kernel claims first, and
    // the IRQ stays claimed with no cap to it).
    assert_eq!(fails(&mut m, get_from(last)), Error::RangeError);
    assert!(m.vm().irqs.is_empty());
    // (Without `ok`: checking the whole model's consistency is quadratic in the chain.)
    assert_eq!(m.apply(&get_from(last - 1)), Ok(()));
    assert!(m.vm().irqs.contains_key(&16));
}

#[test]
fn set_notification_needs_a_notification_with_write() {
    let mut m = setup();
    ok(&mut m, get(30, 20));
    let op = Op::IrqHandlerSetNotification {
        handler: r(20),
        notification: r(1 << 60),
    };
    assert_eq!(fails(&mut m, op), Error::FailedLookup);
    for bad in [EMPTY, EP, FRAME, IRQC] {
        assert_eq!(fails(&mut m, set_ntfn(20, bad)), Error::InvalidCapability);
    }
    ok(&mut m, copy(21, NTFN, rights::READ));
    assert_eq!(fails(&mut m, set_ntfn(20, 21)), Error::InvalidCapability);
    ok(
        &mut m,
        Op::Mint {
            dest: r(22),
            src: r(NTFN),
            rights: rights::WRITE,
            badge: 0x55,
        },
    );
    ok(&mut m, set_ntfn(20, 22));
    let b = m.vm().irqs[&30].expect("bound");
    assert_eq!((b.notification, b.badge), (obj(&m, NTFN), 0x55));
    ok(&mut m, Op::IrqHandlerAck { handler: r(20) });
    ok(&mut m, Op::IrqHandlerClear { handler: r(20) });
    assert_eq!(m.vm().irqs[&30], None);
}

#[test]
fn a_destroyed_notification_is_unbound() {
    let mut m = setup();
    ok(&mut m, get(30, 20));
    ok(&mut m, set_ntfn(20, NTFN));
    ok(&mut m, copy(21, NTFN, rights::ALL));
    ok(&mut m, delete(NTFN));
    assert!(m.vm().irqs[&30].is_some(), "a cap to it remains");
    ok(&mut m, delete(21));
    assert_eq!(m.vm().irqs[&30], None);
    assert!(m.vm().irqs.contains_key(&30), "still claimed");
}

// ---------------------------------------------------------------------------------
// Destruction.

#[test]
fn destroying_a_frame_unmaps_it_everywhere() {
    let mut m = setup();
    make(&mut m, ObjectType::VSpace, 0, 11, 1);
    ok(&mut m, configure(11, POOL));
    ok(&mut m, bind(VS, FRAME, 0x10_0000, RW));
    ok(&mut m, map(FRAME, Some(11), 0, RW));
    ok(&mut m, map(FRAME, None, 0x4000, R));
    ok(&mut m, copy(20, FRAME, rights::READ));
    // Not the last cap: nothing happens, even though the cap gone was the one with Write
    // the writable mappings were made through.
    ok(&mut m, delete(FRAME));
    assert_eq!(m.vm().mappings.len(), 3);
    assert!(m
        .vm()
        .mappings
        .iter()
        .all(|mp| mp.cap_rights == rights::ALL));
    ok(&mut m, delete(20));
    assert!(m.vm().mappings.is_empty());
    assert!(leaves(&m, Space::Own).is_empty());
    assert!(leaves(&m, vs(&m, 11)).is_empty());
}

#[test]
fn revoking_a_derived_frame_cap_leaves_the_mappings_made_through_it() {
    // Mappings belong to the frame, not to the cap used: while the frame lives, they stay.
    let mut m = setup();
    ok(&mut m, copy(20, FRAME, rights::ALL));
    ok(&mut m, map(20, None, 0, RW));
    ok(&mut m, Op::Revoke { slot: r(FRAME) });
    assert!(root_slot(&m, 20).is_none());
    assert_eq!(m.vm().mappings.len(), 1);
    assert_eq!(leaves(&m, Space::Own), [(0, 0x1000)]);
}

#[test]
fn destroying_a_vspace_tears_it_down() {
    let mut m = setup();
    ok(&mut m, set_space(TCB, VS));
    ok(&mut m, bind(VS, FRAME, 0, RW));
    make(&mut m, ObjectType::Frame4K, 0, 20, 1);
    ok(&mut m, map(20, Some(VS), 0x10_0000, RW));
    ok(&mut m, map(20, None, 0, R));
    assert_eq!(pool_info(&mut m, POOL), (1, 3));
    ok(&mut m, copy(21, VS, rights::ALL));
    ok(&mut m, delete(VS));
    assert_eq!(m.vm().mappings.len(), 3, "a cap to it remains");
    let v = addr(&m, 21);
    ok(&mut m, delete(21));
    assert!(!m.vm().configured(v));
    assert!(m.vm().threads.is_empty());
    // Only the mapping into the own space is left; the pool has all its tables again.
    assert_eq!(m.vm().mappings.len(), 1);
    assert_eq!(m.vm().mappings[0].space, Space::Own);
    assert_eq!(pool_info(&mut m, POOL), (3, 3));
}

#[test]
fn destroying_a_pool_tears_down_the_vspaces_using_it() {
    let mut m = setup();
    make(&mut m, ObjectType::VSpace, 0, 11, 2);
    make(&mut m, ObjectType::TablePool, 13, 13, 1);
    ok(&mut m, configure(11, POOL));
    ok(&mut m, configure(12, 13));
    ok(&mut m, set_space(TCB, 11));
    ok(&mut m, bind(VS, FRAME, 0, R));
    ok(&mut m, bind(12, FRAME, 0, R));
    ok(&mut m, delete(POOL));
    assert!(!m.vm().configured(addr(&m, VS)));
    assert!(!m.vm().configured(addr(&m, 11)));
    assert!(m.vm().configured(addr(&m, 12)));
    assert!(m.vm().threads.is_empty());
    assert_eq!(m.vm().mappings.len(), 1);
    // A torn-down VSpace can be configured again, with another pool.
    ok(&mut m, configure(VS, 13));
}

#[test]
fn destroying_a_vcpu_or_its_tcb_unbinds_them() {
    let mut m = setup();
    let bind_vcpu = |v, t| Op::VcpuBindTcb {
        vcpu: r(v),
        tcb: r(t),
    };
    ok(&mut m, bind_vcpu(VCPU, TCB));
    ok(&mut m, write_spsr(TCB, 5));
    ok(&mut m, delete(VCPU));
    assert!(m.vm().vcpus.is_empty());
    // The thread is native again.
    assert_eq!(fails(&mut m, write_spsr(TCB, 5)), Error::InvalidArgument);
    make(&mut m, ObjectType::Vcpu, 0, VCPU, 1);
    ok(&mut m, bind_vcpu(VCPU, TCB));
    ok(&mut m, set_space(TCB, VS));
    ok(&mut m, delete(TCB));
    assert!(m.vm().vcpus.is_empty());
    assert!(m.vm().threads.is_empty());
    make(&mut m, ObjectType::Tcb, 0, TCB, 1);
    ok(&mut m, bind_vcpu(VCPU, TCB));
}

#[test]
fn revoking_the_untyped_leaves_nothing_behind() {
    let mut m = setup();
    ok(&mut m, set_space(TCB, VS));
    ok(
        &mut m,
        Op::VcpuBindTcb {
            vcpu: r(VCPU),
            tcb: r(TCB),
        },
    );
    ok(&mut m, bind(VS, FRAME, 0, R));
    ok(&mut m, map(FRAME, None, 0, R));
    ok(&mut m, get(30, 20));
    ok(&mut m, set_ntfn(20, NTFN));
    ok(&mut m, Op::Revoke { slot: r(2) });
    let mut left = Vm::default();
    // The IRQ is not memory: it stays claimed, no longer bound.
    left.irqs.insert(30, None);
    assert_eq!(*m.vm(), left);
}

#[test]
fn a_destroyed_cnode_takes_the_state_of_what_it_held() {
    let mut m = sys(&BootConfig::nested());
    ok(&mut m, retype_op(n(2), ObjectType::CNode, 2, n(1), 4, 1));
    ok(&mut m, retype_op(n(2), ObjectType::Frame4K, 0, n(4), 0, 1));
    ok(
        &mut m,
        Op::FrameMap {
            frame: n2(4, 2, 0),
            space: None,
            ipa: 0,
            arg: RW,
        },
    );
    assert_eq!(m.vm().mappings.len(), 1);
    ok(&mut m, Op::Delete { slot: n(4) });
    assert!(m.vm().mappings.is_empty());
    assert!(leaves(&m, Space::Own).is_empty());
}

#[test]
fn memory_caps_never_descend_from_irq_caps() {
    let m = setup();
    let frame = cap(&m, FRAME);
    assert!(matches!(frame, CapView::Frame { .. }));
    m.check_consistency().unwrap();
}

/// UntypedInfo (label 36): the watermark and size; after every object made from the
/// Untyped is gone, the next Retype starts from the base again, and the watermark shows it.
#[test]
fn untyped_info_shows_the_watermark_and_its_reset() {
    let mut m = big();
    let info = |m: &mut Model| {
        m.invoke(&Op::UntypedInfo { untyped: r(2) })
            .expect("UntypedInfo")
            .expect("values")
    };
    assert_eq!(info(&mut m), [0, 1 << 24]);
    make(&mut m, ObjectType::TablePool, 14, POOL, 1);
    make(&mut m, ObjectType::VSpace, 0, VS, 1);
    let after_first = info(&mut m);
    assert_eq!(after_first, [0x8000, 1 << 24]);
    ok(&mut m, Op::Revoke { slot: r(2) });
    assert_eq!(info(&mut m), after_first, "revoke alone moves nothing");
    make(&mut m, ObjectType::TablePool, 14, POOL, 1);
    make(&mut m, ObjectType::VSpace, 0, VS, 1);
    assert_eq!(
        info(&mut m),
        after_first,
        "the same objects again, from the base"
    );
    assert_eq!(
        m.invoke(&Op::UntypedInfo { untyped: r(POOL) }),
        Err(Error::IllegalOperation)
    );
}
