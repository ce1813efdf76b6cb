//! An executable model of Bulkhead's capability system.
//!
//! The semantics are those of `docs/design/capabilities.md`; this crate states them as
//! plainly as it can (an explicit object table, CNodes as maps of slots, the derivation
//! tree as explicit parent pointers, the derivation order as a plain list) so that it can
//! serve as the reference the kernel's own implementation (`kcore::cap`) is compared
//! against, operation by operation.
//!
//! ```
//! use cap_model::{Addr, BootConfig, Model, Op};
//! use bulkhead_sys::cap::{rights, ObjectType};
//!
//! let mut m = Model::boot(&BootConfig::standard());
//! let root = |index| Addr { index, depth: 64 };
//! // Make an endpoint in root slot 4 from the untyped in slot 2, then copy it read-only.
//! m.apply(&Op::Retype {
//!     untyped: root(2),
//!     ty: ObjectType::Endpoint as u64,
//!     size_bits: 0,
//!     dest: root(1),
//!     offset: 4,
//!     count: 1,
//! })
//! .unwrap();
//! m.apply(&Op::Copy { dest: root(5), src: root(4), rights: rights::READ }).unwrap();
//! assert_eq!(m.snapshot().len(), 5);
//! ```
#![forbid(unsafe_code)]

mod cap;
pub mod gen;
pub mod invariants;
pub mod isolation;
mod model;
mod ops;
pub mod seq;
pub mod vm;

pub use cap::{IrqCap, ObjRef};
pub use model::Model;

/// Derivation depth (number of ancestors) at which a cap can no longer be copied or minted.
pub const MAX_DERIVATION_DEPTH: u32 = 65535;

/// A slot address relative to the caller's CSpace root (resolved per the doc's "Addressing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    /// The index, whose top `depth` bits are consumed by the lookup.
    pub index: u64,
    /// How many bits of the index to resolve (1 ..= 64).
    pub depth: u32,
}

/// One capability operation, as the caller issues it.
///
/// The object invocations (from `TcbReadRegister` on) mirror `docs/abi.md`: the invoked
/// cap is resolved first (a bad address is `FailedLookup` or `RangeError`, an empty slot
/// `InvalidCapability`, a cap of another type `IllegalOperation`), then the arguments in
/// the kernel's order; a cap argument that does not resolve is `FailedLookup` (or
/// `RangeError`), one that is empty or of the wrong type `InvalidCapability`. Where the
/// kernel takes a cap argument as an index at depth 64, the model takes an [`Addr`].
/// Threads are always inactive in the model (it has no Resume), so the "not inactive"
/// errors never arise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Copy `src` to the empty slot `dest`, masking its rights.
    Copy {
        /// Destination slot.
        dest: Addr,
        /// Source slot.
        src: Addr,
        /// Rights mask.
        rights: u8,
    },
    /// Copy `src` to `dest`, masking its rights and setting a badge.
    Mint {
        /// Destination slot.
        dest: Addr,
        /// Source slot.
        src: Addr,
        /// Rights mask.
        rights: u8,
        /// Badge (0: keep the source's).
        badge: u64,
    },
    /// Move the cap in `src` to the empty slot `dest`.
    Move {
        /// Destination slot.
        dest: Addr,
        /// Source slot.
        src: Addr,
    },
    /// Move the cap in `src` to `dest`, setting its badge.
    Mutate {
        /// Destination slot.
        dest: Addr,
        /// Source slot.
        src: Addr,
        /// Badge (0: keep the cap's).
        badge: u64,
    },
    /// Delete the cap in `slot`.
    Delete {
        /// The slot.
        slot: Addr,
    },
    /// Delete every descendant of the cap in `slot`.
    Revoke {
        /// The slot.
        slot: Addr,
    },
    /// Capability transfer by IPC with the Grant right: the cap in `src` (the sender's
    /// slot) is copied, all its rights, into the empty `dest` (the receiver's receive
    /// slot) as a child of `src`. Both addresses resolve in the one CSpace of the model.
    Grant {
        /// The receiver's receive slot.
        dest: Addr,
        /// The sender's slot.
        src: Addr,
    },
    /// `dest` names a slot holding a CNode cap; new caps go to that CNode's slots offset..offset+count.
    Retype {
        /// The slot holding the Untyped cap.
        untyped: Addr,
        /// The object type number (`bulkhead_sys::cap::ObjectType`).
        ty: u64,
        /// Size argument (Untyped: log2 bytes; CNode: radix; otherwise ignored).
        size_bits: u32,
        /// The slot holding the destination CNode's cap.
        dest: Addr,
        /// First destination slot in that CNode.
        offset: u64,
        /// How many objects to create.
        count: u64,
    },
    /// TcbReadRegister (label 20): `RangeError` for a register above SPSR (33). The value
    /// is not modelled.
    TcbReadRegister {
        /// The TCB cap.
        tcb: Addr,
        /// Register index (`bulkhead_sys::reg`).
        reg: u64,
    },
    /// TcbWriteRegister (label 21): as ReadRegister; an SPSR value other than EL0t, or
    /// EL1t/EL1h for a thread bound to a VCPU, or with bits above 31, is `InvalidArgument`.
    TcbWriteRegister {
        /// The TCB cap.
        tcb: Addr,
        /// Register index.
        reg: u64,
        /// The value.
        value: u64,
    },
    /// TcbSetSpace (label 22): the thread runs in the VSpace from now on (leaving the one
    /// it was in). `InvalidCapability` (not a VSpace), `IllegalOperation` (VSpace not
    /// configured), `NotEnoughMemory` (64 threads in it already).
    TcbSetSpace {
        /// The TCB cap.
        tcb: Addr,
        /// The VSpace cap.
        vspace: Addr,
    },
    /// VSpaceConfigure (label 23): the VSpace gets the table pool and a VMID.
    /// `InvalidCapability` (not a TablePool), `IllegalOperation` (already configured),
    /// `NotEnoughMemory` (64 VSpaces configured in the system).
    VSpaceConfigure {
        /// The VSpace cap.
        vspace: Addr,
        /// The TablePool cap.
        pool: Addr,
    },
    /// VSpaceBindRegion (label 24): binds the frame to `[ipa, ipa + size)` as a memory
    /// region. Errors in the kernel's order: `InvalidCapability` (not a Frame),
    /// `IllegalOperation` (not configured), `InvalidArgument` (rights beyond RWX or
    /// without Read), `InvalidCapability` (Write without the cap's Write, or a cap
    /// without Read), `AlignmentError`, `RangeError` (beyond 40 bits), `DeleteFirst` (the
    /// frame is in this space already, or the range overlaps a region), `NotEnoughMemory`
    /// (16 regions, or 128 mappings and regions in the system).
    VSpaceBindRegion {
        /// The VSpace cap.
        vspace: Addr,
        /// The Frame cap.
        frame: Addr,
        /// Where the region starts.
        ipa: u64,
        /// Map rights (`bulkhead_sys::map_rights`).
        rights: u64,
    },
    /// VSpaceUnmapRange (label 25): removes every leaf inside `[ipa, ipa + len)`; returns
    /// how many. `IllegalOperation` (not configured), `AlignmentError` (ipa or len not
    /// page aligned, or the range beyond 40 bits).
    VSpaceUnmapRange {
        /// The VSpace cap.
        vspace: Addr,
        /// Start of the range.
        ipa: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// FrameMap (label 28): maps the frame page by page into a VSpace (tables from its
    /// pool) or, with `space` `None` (`SELF_SPACE`), into the caller's own space (tables
    /// from the kernel's reserve). Errors in the kernel's order: `FailedLookup` /
    /// `InvalidCapability` (`space` not a VSpace), `InvalidArgument` (rights beyond RWX or
    /// without Read), `InvalidCapability` (rights beyond the cap's), `InvalidArgument`
    /// (memory type not 0 or 1), `IllegalOperation` (VSpace not configured),
    /// `AlignmentError`, `RangeError`, `DeleteFirst` (the frame is in this space already),
    /// `NotEnoughMemory` (128 mappings and regions); then, page by page,
    /// `NotEnoughMemory` (the pool has no table) and `DeleteFirst` (a page already
    /// mapped). Tables linked before such a failure stay linked (so the pool's free count
    /// drops), as the kernel leaves them.
    FrameMap {
        /// The Frame cap.
        frame: Addr,
        /// The VSpace cap, or `None` for the caller's own space.
        space: Option<Addr>,
        /// Where the frame goes.
        ipa: u64,
        /// Map rights | memory type << 8 (0 normal, 1 device).
        arg: u64,
    },
    /// FrameUnmap (label 29): every FrameMap mapping of the frame goes (its regions
    /// stay). `InvalidArgument` if it had none.
    FrameUnmap {
        /// The Frame cap.
        frame: Addr,
    },
    /// UntypedInfo (label 36): returns the Untyped's watermark and size in bytes.
    UntypedInfo {
        /// The Untyped cap.
        untyped: Addr,
    },
    /// PoolInfo (label 30): returns the pool's free and total tables.
    PoolInfo {
        /// The TablePool cap.
        pool: Addr,
    },
    /// VcpuBindTcb (label 31): `InvalidCapability` (not a TCB), `DeleteFirst` (the VCPU
    /// or the thread is bound already).
    VcpuBindTcb {
        /// The VCPU cap.
        vcpu: Addr,
        /// The TCB cap.
        tcb: Addr,
    },
    /// VcpuInjectIrq (label 32): `RangeError` for an INTID from 1020 or a priority above
    /// 255. The queue of pending virtual interrupts is not modelled.
    VcpuInjectIrq {
        /// The VCPU cap.
        vcpu: Addr,
        /// Virtual INTID.
        virq: u64,
        /// Priority.
        priority: u64,
    },
    /// VcpuReadSysreg (label 33): `RangeError` for an index from `vcpu_reg::COUNT`.
    VcpuReadSysreg {
        /// The VCPU cap.
        vcpu: Addr,
        /// `bulkhead_sys::vcpu_reg` index.
        reg: u64,
    },
    /// VcpuWriteSysreg (label 34): as ReadSysreg. Register values are not modelled.
    VcpuWriteSysreg {
        /// The VCPU cap.
        vcpu: Addr,
        /// `bulkhead_sys::vcpu_reg` index.
        reg: u64,
        /// The value.
        value: u64,
    },
    /// IrqControlGet (label 13): claims the interrupt and puts an IRQHandler cap for it
    /// into the empty `dest`, as a child of the IRQControl cap. `RangeError` (ID above
    /// 32 bits), lookup errors of `dest`, `DeleteFirst`, `RangeError` (an SGI 0–15, the
    /// kernel's timer PPI 26, 1020 or more), `RevokeFirst` (claimed already), `RangeError`
    /// (the IRQControl cap at the derivation depth limit).
    IrqControlGet {
        /// The IRQControl cap.
        control: Addr,
        /// Interrupt ID.
        irq: u64,
        /// The empty slot for the IRQHandler cap.
        dest: Addr,
    },
    /// IrqHandlerSetNotification (label 14): the interrupt signals the notification with
    /// the badge of the given cap. `InvalidCapability` unless it is a Notification cap
    /// with Write.
    IrqHandlerSetNotification {
        /// The IRQHandler cap.
        handler: Addr,
        /// The Notification cap.
        notification: Addr,
    },
    /// IrqHandlerAck (label 15): re-enables the interrupt (not modelled: no state).
    IrqHandlerAck {
        /// The IRQHandler cap.
        handler: Addr,
    },
    /// IrqHandlerClear (label 16): unbinds the notification (the IRQ stays claimed).
    IrqHandlerClear {
        /// The IRQHandler cap.
        handler: Addr,
    },
}

/// What a non-empty slot holds, as both implementations can report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CapView {
    /// Untyped memory `[base, base + 2^size_bits)`, used up to `base + watermark`.
    Untyped {
        /// Start of the region.
        base: u64,
        /// log2 of the region's size.
        size_bits: u32,
        /// Bytes used from the base.
        watermark: u64,
        /// Device memory (only Untyped and Frames may be made from it).
        device: bool,
    },
    /// A CNode of `2^radix` slots, with a guard for addressing.
    CNode {
        /// Address of the CNode object.
        addr: u64,
        /// log2 of the number of slots.
        radix: u32,
        /// Guard size in bits.
        guard_bits: u32,
        /// Guard value.
        guard: u64,
    },
    /// An IPC endpoint.
    Endpoint {
        /// Address of the object.
        addr: u64,
        /// Rights (`bulkhead_sys::cap::rights`).
        rights: u8,
        /// Badge, 0 if unbadged.
        badge: u64,
    },
    /// A notification.
    Notification {
        /// Address of the object.
        addr: u64,
        /// Rights (`bulkhead_sys::cap::rights`).
        rights: u8,
        /// Badge, 0 if unbadged.
        badge: u64,
    },
    /// A thread control block.
    Tcb {
        /// Address of the object.
        addr: u64,
    },
    /// A frame of `2^size_bits` bytes (12, 21 or 30).
    Frame {
        /// Address of the object.
        addr: u64,
        /// log2 of the frame's size.
        size_bits: u32,
        /// Rights (`bulkhead_sys::cap::rights`).
        rights: u8,
    },
    /// A stage-2 page table.
    PageTable {
        /// Address of the object.
        addr: u64,
    },
    /// A stage-2 address space (root and metadata).
    VSpace {
        /// Address of the object.
        addr: u64,
    },
    /// A virtual CPU.
    Vcpu {
        /// Address of the object.
        addr: u64,
    },
    /// A pool of stage-2 tables.
    TablePool {
        /// Address of the object.
        addr: u64,
        /// log2 of its size.
        size_bits: u32,
    },
}

/// A slot is identified by the address of its CNode object and its index there.
pub type SlotId = (u64, u64);

/// A non-empty slot: its cap and the slot of the cap's parent in the derivation tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// The capability.
    pub cap: CapView,
    /// Where its parent is, `None` for a root of the derivation tree.
    pub parent: Option<SlotId>,
}

/// All non-empty slots of all CNodes that exist (including leaked/unreachable ones).
pub type Snapshot = std::collections::BTreeMap<SlotId, SlotView>;

/// The initial state both implementations build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Address of the root CNode object (outside every untyped).
    pub root_addr: u64,
    /// Radix of the root CNode (e.g. 8).
    pub root_radix: u32,
    /// Guard size of the caller's root cap (e.g. 56, so depth-64 addresses resolve in one level).
    pub root_guard_bits: u32,
    /// Initial untypeds: (base, size_bits, device); their caps go to root slots 2, 3, ...
    pub untypeds: Vec<(u64, u32, bool)>,
}

impl BootConfig {
    /// Root CNode at 0x10_0000 with 256 slots and a 56-bit guard (so `Addr { index: i,
    /// depth: 64 }` names root slot `i`), a 1 MiB RAM untyped at 0x100_0000 (slot 2) and a
    /// 64 KiB device untyped at 0x900_0000 (slot 3).
    pub fn standard() -> Self {
        BootConfig {
            root_addr: 0x10_0000,
            root_radix: 8,
            root_guard_bits: 56,
            untypeds: vec![(0x100_0000, 20, false), (0x900_0000, 16, true)],
        }
    }

    /// Like [`BootConfig::standard`] but the root has 16 slots and no guard, so depth 4
    /// names a root slot and `Addr { index: (s << r) | i, depth: 4 + r }` names slot `i` of
    /// a radix-`r` CNode (guard 0) whose cap is in root slot `s`.
    pub fn nested() -> Self {
        BootConfig {
            root_radix: 4,
            root_guard_bits: 0,
            ..Self::standard()
        }
    }
}
