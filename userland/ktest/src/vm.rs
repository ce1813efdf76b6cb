//! Stage-2 and VCPU objects: configuration, regions, mappings, registers, and the
//! errors every bad argument gets (never a kernel panic).

use crate::util::*;
use bulkhead_sys::cap::ObjectType;
use bulkhead_sys::{call, call_ret, invocation, map_rights, reg, vcpu_reg, Error, MessageInfo};

const VS: u64 = FREE;
const POOL: u64 = FREE + 1;
const FRAME: u64 = FREE + 2;
const TCB: u64 = FREE + 3;
const VCPU: u64 = FREE + 4;
const EP: u64 = FREE + 5;
const PAGE: u64 = FREE + 6;

fn inv(slot: u64, label: u64, mr: [u64; 4]) -> Result<(), Error> {
    call(slot, MessageInfo::new(label, 4), mr)
}

fn inv_ret(slot: u64, label: u64, mr: [u64; 4]) -> Result<[u64; 2], Error> {
    call_ret(slot, MessageInfo::new(label, 4), mr)
}

/// A VSpace configured with a pool of `2^pool_bits` bytes.
fn space(ut: u64, pool_bits: u32) -> Outcome {
    make(ut, ObjectType::VSpace, 0, VS).map_err(|_| "retype VSpace")?;
    make(ut, ObjectType::TablePool, pool_bits, POOL).map_err(|_| "retype pool")?;
    expect(
        inv(VS, invocation::VSPACE_CONFIGURE, [POOL, 0, 0, 0]),
        Ok(()),
        "configure",
    )
}

fn pool_free() -> u64 {
    inv_ret(POOL, invocation::POOL_INFO, [0; 4]).map_or(u64::MAX, |r| r[0])
}

fn configure_once(ut: u64) -> Outcome {
    space(ut, 14)?;
    expect(
        inv(VS, invocation::VSPACE_CONFIGURE, [POOL, 0, 0, 0]),
        Err(Error::IllegalOperation),
        "a second configure is refused",
    )?;
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "retype ep")?;
    make(ut, ObjectType::VSpace, 0, FRAME).map_err(|_| "retype VSpace")?;
    expect(
        inv(FRAME, invocation::VSPACE_CONFIGURE, [EP, 0, 0, 0]),
        Err(Error::InvalidCapability),
        "an endpoint is no pool",
    )?;
    check(
        inv_ret(POOL, invocation::POOL_INFO, [0; 4]) == Ok([3, 3]),
        "a 16 KiB pool holds 3 tables, all free",
    )
}

fn region_checks(ut: u64) -> Outcome {
    make(ut, ObjectType::VSpace, 0, VS).map_err(|_| "retype VSpace")?;
    make(ut, ObjectType::TablePool, 14, POOL).map_err(|_| "retype pool")?;
    make(ut, ObjectType::Frame, 21, FRAME).map_err(|_| "retype 2 MiB frame")?;
    let bind = |ipa: u64, r: u64| inv(VS, invocation::VSPACE_BIND_REGION, [FRAME, ipa, r, 0]);
    expect(
        bind(0x4000_0000, map_rights::RWX),
        Err(Error::IllegalOperation),
        "an unconfigured VSpace takes no region",
    )?;
    expect(
        inv(VS, invocation::VSPACE_CONFIGURE, [POOL, 0, 0, 0]),
        Ok(()),
        "configure",
    )?;
    expect(
        bind(0x4000_1000, map_rights::RWX),
        Err(Error::AlignmentError),
        "misaligned IPA",
    )?;
    expect(
        bind(1 << 40, map_rights::RWX),
        Err(Error::RangeError),
        "IPA beyond 40 bits",
    )?;
    expect(
        bind(!0x1f_ffff, map_rights::RWX),
        Err(Error::RangeError),
        "IPA that wraps",
    )?;
    expect(
        bind(0x4000_0000, map_rights::WRITE),
        Err(Error::InvalidArgument),
        "rights without Read",
    )?;
    expect(
        bind(0x4000_0000, 8 | map_rights::READ),
        Err(Error::InvalidArgument),
        "unknown rights bits",
    )?;
    expect(bind(0x4000_0000, map_rights::RWX), Ok(()), "bind")?;
    expect(
        bind(0x4020_0000, map_rights::RWX),
        Err(Error::DeleteFirst),
        "the same frame twice in one space",
    )
}

fn reshaping_errors(ut: u64) -> Outcome {
    space(ut, 14)?;
    make(ut, ObjectType::Frame, 21, FRAME).map_err(|_| "retype 2 MiB frame")?;
    expect(
        inv(
            VS,
            invocation::VSPACE_BIND_REGION,
            [FRAME, 0x4000_0000, map_rights::RWX, 0],
        ),
        Ok(()),
        "bind",
    )?;
    let op = |l: u64, a: u64, b: u64| inv(VS, l, [a, b, 0, 0]);
    expect(
        op(invocation::VSPACE_COLLAPSE, 0x4000_0000, 3),
        Err(Error::RangeError),
        "no level-3 blocks",
    )?;
    expect(
        op(invocation::VSPACE_COLLAPSE, 0x4000_1000, 2),
        Err(Error::AlignmentError),
        "misaligned collapse",
    )?;
    expect(
        op(invocation::VSPACE_COLLAPSE, 0x8000_0000, 2),
        Err(Error::InvalidArgument),
        "collapse outside any region",
    )?;
    expect(
        op(invocation::VSPACE_SPLIT, 0x4000_0000, 2),
        Err(Error::IllegalOperation),
        "no block to split",
    )?;
    expect(
        op(invocation::VSPACE_UNMAP_RANGE, 0x4000_0800, 0x1000),
        Err(Error::AlignmentError),
        "misaligned unmap",
    )?;
    check(
        inv_ret(
            VS,
            invocation::VSPACE_UNMAP_RANGE,
            [0x4000_0000, 1 << 21, 0, 0],
        ) == Ok([0, 0]),
        "nothing to unmap yet",
    )?;
    expect(
        op(invocation::VSPACE_COLLAPSE, 0x4000_0000, 2),
        Ok(()),
        "collapse the region",
    )?;
    expect(
        op(invocation::VSPACE_SPLIT, 0x4000_0000, 2),
        Ok(()),
        "split it again",
    )?;
    check(
        inv_ret(
            VS,
            invocation::VSPACE_UNMAP_RANGE,
            [0x4000_0000, 1 << 21, 0, 0],
        ) == Ok([512, 0]),
        "the split left 512 pages",
    )
}

fn frame_map_self(ut: u64) -> Outcome {
    const AT: u64 = 0x90_0000_0000;
    make(ut, ObjectType::Frame4K, 0, PAGE).map_err(|_| "retype frame")?;
    let map = |r: u64| {
        inv(
            PAGE,
            invocation::FRAME_MAP,
            [invocation::SELF_SPACE, AT, r, 0],
        )
    };
    expect(
        map(map_rights::READ | 2 << 8),
        Err(Error::InvalidArgument),
        "unknown memory type",
    )?;
    expect(map(map_rights::READ | map_rights::WRITE), Ok(()), "map")?;
    expect(
        map(map_rights::READ),
        Err(Error::DeleteFirst),
        "mapped once per space",
    )?;
    // SAFETY: the frame was just mapped read/write at AT in this task's space.
    unsafe { core::ptr::write_volatile(AT as *mut u64, 0x5eed) };
    expect(inv(PAGE, invocation::FRAME_UNMAP, [0; 4]), Ok(()), "unmap")?;
    expect(
        inv(PAGE, invocation::FRAME_UNMAP, [0; 4]),
        Err(Error::InvalidArgument),
        "nothing left to unmap",
    )?;
    expect(map(map_rights::READ), Ok(()), "map again, read-only")?;
    // SAFETY: mapped readable again at AT.
    let v = unsafe { core::ptr::read_volatile(AT as *const u64) };
    check(v == 0x5eed, "the frame kept its contents")?;
    // Deleting the frame takes the mapping with it (the next test reuses the address).
    expect(delete(PAGE), Ok(()), "delete the frame")?;
    expect(
        inv(PAGE, invocation::FRAME_UNMAP, [0; 4]),
        Err(Error::InvalidCapability),
        "the cap is gone",
    )
}

fn register_access(ut: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, TCB).map_err(|_| "retype TCB")?;
    expect(
        inv(TCB, invocation::TCB_CONFIGURE, [ROOT, 10, 0, 0]),
        Ok(()),
        "configure",
    )?;
    let w = |r: u64, v: u64| inv(TCB, invocation::TCB_WRITE_REGISTER, [r, v, 0, 0]);
    expect(w(reg::SPSR, 0x3c9), Err(Error::InvalidArgument), "EL2h")?;
    expect(
        w(reg::SPSR, 0x3c5),
        Err(Error::InvalidArgument),
        "EL1h without a VCPU",
    )?;
    expect(w(reg::SPSR, 0x10), Err(Error::InvalidArgument), "AArch32")?;
    expect(w(34, 0), Err(Error::RangeError), "no register 34")?;
    expect(w(5, 0xabc), Ok(()), "write x5")?;
    check(
        inv_ret(TCB, invocation::TCB_READ_REGISTER, [5, 0, 0, 0]) == Ok([0xabc, 0]),
        "read x5 back",
    )?;
    make(ut, ObjectType::Vcpu, 0, VCPU).map_err(|_| "retype VCPU")?;
    expect(
        inv(VCPU, invocation::VCPU_BIND_TCB, [TCB, 0, 0, 0]),
        Ok(()),
        "bind",
    )?;
    expect(w(reg::SPSR, 0x3c5), Ok(()), "EL1h with a VCPU")?;
    expect(
        w(reg::SPSR, 0x3c9),
        Err(Error::InvalidArgument),
        "still never EL2h",
    )
}

fn vcpu_state(ut: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, TCB).map_err(|_| "retype TCB")?;
    make(ut, ObjectType::Vcpu, 0, VCPU).map_err(|_| "retype VCPU")?;
    expect(
        inv(VCPU, invocation::VCPU_BIND_TCB, [TCB, 0, 0, 0]),
        Ok(()),
        "bind",
    )?;
    expect(
        inv(VCPU, invocation::VCPU_BIND_TCB, [TCB, 0, 0, 0]),
        Err(Error::DeleteFirst),
        "bound already",
    )?;
    check(
        inv_ret(
            VCPU,
            invocation::VCPU_READ_SYSREG,
            [vcpu_reg::SCTLR_EL1, 0, 0, 0],
        ) == Ok([0x30d0_0800, 0]),
        "SCTLR_EL1 starts at its reset value",
    )?;
    expect(
        inv(
            VCPU,
            invocation::VCPU_WRITE_SYSREG,
            [vcpu_reg::VMPIDR, 0x8000_0003, 0, 0],
        ),
        Ok(()),
        "write VMPIDR",
    )?;
    check(
        inv_ret(
            VCPU,
            invocation::VCPU_READ_SYSREG,
            [vcpu_reg::VMPIDR, 0, 0, 0],
        ) == Ok([0x8000_0003, 0]),
        "read VMPIDR back",
    )?;
    expect(
        inv(
            VCPU,
            invocation::VCPU_WRITE_SYSREG,
            [vcpu_reg::COUNT, 0, 0, 0],
        ),
        Err(Error::RangeError),
        "no such register",
    )?;
    expect(
        inv(VCPU, invocation::VCPU_INJECT_IRQ, [1020, 0, 0, 0]),
        Err(Error::RangeError),
        "INTID out of range",
    )?;
    expect(
        inv(VCPU, invocation::VCPU_INJECT_IRQ, [27, 256, 0, 0]),
        Err(Error::RangeError),
        "priority out of range",
    )?;
    expect(
        inv(VCPU, invocation::VCPU_INJECT_IRQ, [27, 0xa0, 0, 0]),
        Ok(()),
        "queue a virtual PPI",
    )?;
    // Deleting the VCPU unbinds the thread, which may then take another one.
    expect(delete(VCPU), Ok(()), "delete the VCPU")?;
    make(ut, ObjectType::Vcpu, 0, VCPU).map_err(|_| "retype VCPU")?;
    expect(
        inv(VCPU, invocation::VCPU_BIND_TCB, [TCB, 0, 0, 0]),
        Ok(()),
        "bind a new VCPU",
    )
}

fn set_space_checks(ut: u64) -> Outcome {
    make(ut, ObjectType::Tcb, 0, TCB).map_err(|_| "retype TCB")?;
    make(ut, ObjectType::VSpace, 0, VS).map_err(|_| "retype VSpace")?;
    expect(
        inv(TCB, invocation::TCB_SET_SPACE, [VS, 0, 0, 0]),
        Err(Error::IllegalOperation),
        "an unconfigured VSpace",
    )?;
    expect(
        inv(TCB, invocation::TCB_SET_SPACE, [ROOT, 0, 0, 0]),
        Err(Error::InvalidCapability),
        "a CNode is no VSpace",
    )?;
    make(ut, ObjectType::TablePool, 13, POOL).map_err(|_| "retype pool")?;
    expect(
        inv(VS, invocation::VSPACE_CONFIGURE, [POOL, 0, 0, 0]),
        Ok(()),
        "configure",
    )?;
    expect(
        inv(TCB, invocation::TCB_SET_SPACE, [VS, 0, 0, 0]),
        Ok(()),
        "set space",
    )
}

fn delete_returns_tables(ut: u64) -> Outcome {
    space(ut, 16)?;
    make(ut, ObjectType::Frame4K, 0, PAGE).map_err(|_| "retype frame")?;
    check(pool_free() == 15, "15 tables free")?;
    expect(
        inv(
            PAGE,
            invocation::FRAME_MAP,
            [VS, 0x1234_5000, map_rights::READ, 0],
        ),
        Ok(()),
        "map into the VSpace",
    )?;
    check(pool_free() == 13, "a level-2 and a level-3 table taken")?;
    expect(delete(VS), Ok(()), "delete the VSpace")?;
    check(pool_free() == 15, "both back in the pool")?;
    expect(
        inv(PAGE, invocation::FRAME_UNMAP, [0; 4]),
        Err(Error::InvalidArgument),
        "the mapping went with the VSpace",
    )
}

fn log_dirty_checks(ut: u64) -> Outcome {
    space(ut, 14)?;
    make(ut, ObjectType::Frame, 21, FRAME).map_err(|_| "retype 2 MiB frame")?;
    make(ut, ObjectType::Frame4K, 0, PAGE).map_err(|_| "retype bitmap frame")?;
    let log =
        |base: u64, bitmap: u64| inv_ret(VS, invocation::VSPACE_LOG_DIRTY, [base, bitmap, 0, 0]);
    expect(
        log(0x4000_0000, PAGE).map(|_| ()),
        Err(Error::InvalidArgument),
        "no region there yet",
    )?;
    expect(
        inv(
            VS,
            invocation::VSPACE_BIND_REGION,
            [FRAME, 0x4000_0000, map_rights::RWX, 0],
        ),
        Ok(()),
        "bind",
    )?;
    expect(
        log(0x4000_1000, PAGE).map(|_| ()),
        Err(Error::InvalidArgument),
        "not a region's base",
    )?;
    make(ut, ObjectType::Endpoint, 0, EP).map_err(|_| "retype ep")?;
    expect(
        log(0x4000_0000, EP).map(|_| ()),
        Err(Error::InvalidCapability),
        "an endpoint is no bitmap",
    )?;
    check(
        log(0x4000_0000, PAGE) == Ok([0, 0]),
        "logging starts; nothing mapped to protect yet",
    )?;
    make(ut, ObjectType::Frame4K, 0, TCB).map_err(|_| "retype second frame")?;
    expect(
        log(0x4000_0000, TCB).map(|_| ()),
        Err(Error::DeleteFirst),
        "another bitmap is in use",
    )?;
    check(log(0x4000_0000, 0) == Ok([0, 0]), "logging stops")?;
    expect(
        inv(VS, invocation::VSPACE_COLLAPSE, [0x4000_0000, 2, 0, 0]),
        Ok(()),
        "collapse the region into a block",
    )?;
    expect(
        log(0x4000_0000, PAGE).map(|_| ()),
        Err(Error::IllegalOperation),
        "a block must be split before logging",
    )
}

/// The cases of this file.
/// UntypedInfo and VSpaceConfigure's results: remaking the same objects after a revoke
/// puts them where they were, the watermark is what it was, and the VMID comes back.
fn untyped_info_and_vmid_reuse(ut: u64) -> Outcome {
    let child = FREE + 10;
    make(ut, ObjectType::Untyped, 16, child).map_err(|_| "child untyped")?;
    let info = || inv_ret(child, invocation::UNTYPED_INFO, [0; 4]);
    check(info() == Ok([0, 1 << 16]), "a fresh Untyped: watermark 0")?;
    let build = || -> Result<[u64; 2], &'static str> {
        make(child, ObjectType::VSpace, 0, VS).map_err(|_| "retype VSpace")?;
        make(child, ObjectType::TablePool, 14, POOL).map_err(|_| "retype pool")?;
        inv_ret(VS, invocation::VSPACE_CONFIGURE, [POOL, 0, 0, 0]).map_err(|_| "configure")
    };
    let first = build()?;
    check(first[0] >= 64 && first[0] < 256, "a VMID for VSpaces")?;
    let used = info().map_err(|_| "info")?;
    check(used == [0x8000, 1 << 16], "two 16 KiB objects")?;
    revoke(child).map_err(|_| "revoke")?;
    check(info() == Ok(used), "a revoke alone leaves the watermark")?;
    let again = build()?;
    check(again == first, "the same VMID, as many left free")?;
    check(info() == Ok(used), "remade from the base")?;
    expect(
        inv(VS, invocation::UNTYPED_INFO, [0; 4]),
        Err(Error::IllegalOperation),
        "UntypedInfo on a VSpace",
    )?;
    expect(
        inv(child, invocation::POOL_INFO, [0; 4]),
        Err(Error::IllegalOperation),
        "another label on an Untyped",
    )
}

pub const CASES: &[(&str, crate::caps::Case)] = &[
    (
        "vm: UntypedInfo, and VMIDs come back after a VSpace goes",
        untyped_info_and_vmid_reuse,
    ),
    (
        "vm: a VSpace is configured once, with a pool",
        configure_once,
    ),
    (
        "vm: region binding checks alignment, range, rights, overlap",
        region_checks,
    ),
    (
        "vm: unmap/collapse/split check their arguments and work",
        reshaping_errors,
    ),
    (
        "vm: a frame mapped into the task's own space keeps its data",
        frame_map_self,
    ),
    ("vm: register access checks index and SPSR", register_access),
    (
        "vm: VCPU binding, system registers and injection",
        vcpu_state,
    ),
    (
        "vm: a thread moves into a configured VSpace only",
        set_space_checks,
    ),
    (
        "vm: deleting a VSpace returns its tables to the pool",
        delete_returns_tables,
    ),
    (
        "vm: dirty logging checks its region and bitmap",
        log_dirty_checks,
    ),
];
