//! Stage-2 objects, VCPUs and interrupts: the state the kernel keeps about objects beside
//! their caps, the invocations that change it (`docs/abi.md`, labels 13–16 and 20–34),
//! and what the destruction of an object does to it.
//!
//! The state is what `kernel/src/vm.rs`, `kernel/src/vcpu.rs` and `kernel/src/irq.rs`
//! record, reduced to what refers to objects:
//!
//! - which VSpaces are **configured**, with which table pool, and which translation
//!   tables each has linked below its root (taken from the pool, given back only when the
//!   VSpace is torn down);
//! - the kernel's registry of **mappings**: memory regions (VSpaceBindRegion) and eager
//!   mappings (FrameMap), each with its frame, address space, IPA, rights and the rights
//!   of the frame cap it was made through;
//! - the **leaves** installed in each address space (4 KiB pages of FrameMap mappings;
//!   VSpaceUnmapRange removes them without touching the registry);
//! - which VSpace each thread runs in, which TCB each VCPU is bound to, and which IRQs are
//!   claimed and bound to which notification.
//!
//! Not modelled: guests and faults (a region's pages, which guest faults install, never
//! exist here), VSpaceCollapse and VSpaceSplit (blocks, and tables that return to their
//! pool only after a QSBR grace period, so that a pool's free count is not determined by
//! the operations alone), `Busy` (another writer on a table entry), thread states (every
//! thread is inactive), register values, pending virtual interrupts, VMIDs (only their
//! number is bounded), the caller's own address space beyond what FrameMap puts there.

use crate::cap::Cap;
use crate::model::Model;
use crate::{Addr, CapView, ObjRef, Op, SlotId, MAX_DERIVATION_DEPTH};
use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::{map_rights, reg, vcpu_reg, Error};
use std::collections::{BTreeMap, BTreeSet};

/// Memory regions per VSpace (`kernel/src/vm.rs`, `MAX_REGIONS`).
pub const MAX_REGIONS: usize = 16;
/// Threads per VSpace (`MAX_THREADS`).
pub const MAX_THREADS: usize = 64;
/// Configured VSpaces in the whole system (the kernel's list `SPACES`; its 192 VMIDs
/// never run out first).
pub const MAX_SPACES: usize = 64;
/// Mappings and regions in the whole system (the kernel's registry `MAPS`).
pub const MAX_MAPPINGS: usize = 128;
/// Bits of an IPA (`kcore::stage2::IPA_BITS`).
pub const IPA_BITS: u32 = 40;
/// Interrupt IDs from here up cannot be claimed (`kernel/src/irq.rs`, `MAX_IRQ`).
pub const MAX_IRQ: u32 = 1020;
/// The kernel's own timer PPI (the EL2 physical timer of QEMU virt), never handed out.
pub const KERNEL_TIMER_IRQ: u32 = 26;
/// Virtual INTIDs from here up cannot be injected (`kernel/src/vcpu.rs`, `MAX_VIRQ`).
pub const MAX_VIRQ: u64 = 1020;
/// Bytes of a page, of a leaf, and of a translation table.
pub const PAGE: u64 = 4096;

/// An address space frames can be mapped into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// The caller's own (boot-task) address space: FrameMap with `SELF_SPACE`.
    Own,
    /// A VSpace object, by address.
    VSpace(u64),
}

/// A translation table linked below a VSpace's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// A level-2 table, by the 1 GiB slot it translates (IPA >> 30).
    L2(u64),
    /// A level-3 table, by the 2 MiB slot it translates (IPA >> 21).
    L3(u64),
}

/// Installed 4 KiB leaves as disjoint runs: start → (end, frame).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leaves(BTreeMap<u64, (u64, ObjRef)>);

impl Leaves {
    /// The runs `(start, end, frame)` in IPA order.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64, ObjRef)> + '_ {
        self.0.iter().map(|(&s, &(e, f))| (s, e, f))
    }

    /// How many leaves there are.
    pub fn pages(&self) -> u64 {
        self.0.iter().map(|(&s, &(e, _))| (e - s) / PAGE).sum()
    }

    /// The first leaf's IPA in `[start, end)`.
    pub fn first_in(&self, start: u64, end: u64) -> Option<u64> {
        if let Some((_, &(e, _))) = self.0.range(..=start).next_back() {
            if e > start {
                return Some(start);
            }
        }
        self.0.range(start..end).next().map(|(&s, _)| s)
    }

    /// Installs leaves for `[start, end)` (which holds none) mapping `frame`.
    fn insert(&mut self, start: u64, end: u64, frame: ObjRef) {
        debug_assert!(self.first_in(start, end).is_none());
        if start < end {
            self.0.insert(start, (end, frame));
        }
    }

    /// Removes every leaf in `[start, end)`; returns how many went.
    fn remove(&mut self, start: u64, end: u64) -> u64 {
        let hit: Vec<(u64, u64, ObjRef)> = self
            .0
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, f))| (s, e, f))
            .collect();
        let mut removed = 0;
        for (s, e, f) in hit {
            self.0.remove(&s);
            if s < start {
                self.0.insert(s, (start, f));
            }
            if e > end {
                self.0.insert(end, (e, f));
            }
            removed += (e.min(end) - s.max(start)) / PAGE;
        }
        removed
    }
}

/// A configured address space.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpaceState {
    /// The table pool (`None` for the caller's own space, whose tables come from the
    /// kernel's boot-task reserve and are not counted).
    pub pool: Option<ObjRef>,
    /// Tables linked below the root (they stay linked until the VSpace is torn down).
    pub tables: BTreeSet<Table>,
    /// The leaves installed.
    pub leaves: Leaves,
}

/// One entry of the kernel's mapping registry: a memory region or a FrameMap mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The frame object.
    pub frame: ObjRef,
    /// Where it is mapped.
    pub space: Space,
    /// The first IPA (aligned to the frame's size).
    pub ipa: u64,
    /// Map rights (`bulkhead_sys::map_rights`).
    pub rights: u64,
    /// Device memory type (FrameMap only).
    pub device: bool,
    /// A memory region (VSpaceBindRegion) rather than a FrameMap mapping.
    pub region: bool,
    /// The rights of the frame cap the mapping was made through.
    pub cap_rights: u8,
}

impl Mapping {
    /// One past the last IPA.
    pub fn end(&self) -> u64 {
        self.ipa + (1u64 << self.frame.size_bits)
    }
}

/// The notification a claimed IRQ signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqBinding {
    /// The notification object.
    pub notification: ObjRef,
    /// The badge of the cap given to SetNotification.
    pub badge: u64,
}

/// Everything the kernel records about objects beside their caps (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The caller's own space (always) and every configured VSpace.
    pub spaces: BTreeMap<Space, SpaceState>,
    /// The mapping registry, oldest first.
    pub mappings: Vec<Mapping>,
    /// The VSpace each thread runs in: TCB address → VSpace address.
    pub threads: BTreeMap<u64, u64>,
    /// VCPU bindings: VCPU address → TCB address.
    pub vcpus: BTreeMap<u64, u64>,
    /// Claimed interrupts (each has exactly one handler object) and their notification.
    pub irqs: BTreeMap<u32, Option<IrqBinding>>,
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            spaces: BTreeMap::from([(Space::Own, SpaceState::default())]),
            mappings: Vec::new(),
            threads: BTreeMap::new(),
            vcpus: BTreeMap::new(),
            irqs: BTreeMap::new(),
        }
    }
}

impl Vm {
    /// True if the VSpace at `vs` is configured.
    pub fn configured(&self, vs: u64) -> bool {
        self.spaces.contains_key(&Space::VSpace(vs))
    }

    /// The regions bound in the VSpace at `vs`.
    pub fn regions(&self, vs: u64) -> impl Iterator<Item = &Mapping> + '_ {
        self.mappings
            .iter()
            .filter(move |m| m.region && m.space == Space::VSpace(vs))
    }

    /// True if a mapping or region of `space` overlaps `[ipa, end)` (the kernel keeps
    /// them apart, so unmapping one never touches another).
    pub fn overlaps(&self, space: Space, ipa: u64, end: u64) -> bool {
        self.mappings
            .iter()
            .any(|m| m.space == space && ipa < m.end() && m.ipa < end)
    }

    /// The VCPU bound to the thread at `tcb`.
    pub fn vcpu_of(&self, tcb: u64) -> Option<u64> {
        self.vcpus
            .iter()
            .find_map(|(&v, &t)| (t == tcb).then_some(v))
    }

    /// How many threads run in the VSpace at `vs`.
    pub fn threads_in(&self, vs: u64) -> usize {
        self.threads.values().filter(|&&v| v == vs).count()
    }

    /// PoolInfo of a pool: (free tables, all tables). A pool of `2^n` bytes has
    /// `2^(n-12) - 1` tables (its first page is its accounting).
    pub fn pool_counts(&self, pool: ObjRef) -> (u64, u64) {
        let total = (1u64 << (pool.size_bits - 12)) - 1;
        let used: usize = self
            .spaces
            .values()
            .filter(|s| s.pool == Some(pool))
            .map(|s| s.tables.len())
            .sum();
        (total.saturating_sub(used as u64), total)
    }
}

/// True for interrupt IDs the kernel hands out: PPIs and SPIs below 1020 but its timer's.
pub fn grantable(irq: u32) -> bool {
    (16..MAX_IRQ).contains(&irq) && irq != KERNEL_TIMER_IRQ
}

/// The kernel's `check_rights`: map rights within RWX and with Read
/// (`InvalidArgument`), Write only through a cap with Write, and any mapping only
/// through a cap with Read (`InvalidCapability`). Execute needs no cap right.
pub fn check_rights(map: u64, cap_rights: u8) -> Result<(), Error> {
    if map & !map_rights::RWX != 0 || map & map_rights::READ == 0 {
        return Err(Error::InvalidArgument);
    }
    if map & map_rights::WRITE != 0 && cap_rights & rights::WRITE == 0 {
        return Err(Error::InvalidCapability);
    }
    if cap_rights & rights::READ == 0 {
        return Err(Error::InvalidCapability);
    }
    Ok(())
}

/// Alignment (`AlignmentError`) and range (`RangeError`) of a frame of `2^bits` bytes at
/// `ipa`; returns the end of the range.
fn frame_range(ipa: u64, bits: u32) -> Result<u64, Error> {
    let size = 1u64 << bits;
    if !ipa.is_multiple_of(size) {
        return Err(Error::AlignmentError);
    }
    match ipa.checked_add(size) {
        Some(end) if end <= 1 << IPA_BITS => Ok(end),
        _ => Err(Error::RangeError),
    }
}

fn as_tcb(c: Cap) -> Option<u64> {
    match c {
        Cap::Mem(CapView::Tcb { addr }) => Some(addr),
        _ => None,
    }
}

fn as_vspace(c: Cap) -> Option<u64> {
    match c {
        Cap::Mem(CapView::VSpace { addr }) => Some(addr),
        _ => None,
    }
}

fn as_pool(c: Cap) -> Option<ObjRef> {
    match c {
        Cap::Mem(v @ CapView::TablePool { .. }) => Some(v.object()),
        _ => None,
    }
}

fn as_frame(c: Cap) -> Option<(ObjRef, u8)> {
    match c {
        Cap::Mem(v @ CapView::Frame { rights, .. }) => Some((v.object(), rights)),
        _ => None,
    }
}

fn as_vcpu(c: Cap) -> Option<u64> {
    match c {
        Cap::Mem(CapView::Vcpu { addr }) => Some(addr),
        _ => None,
    }
}

fn as_handler(c: Cap) -> Option<u32> {
    match c {
        Cap::IrqHandler(irq) => Some(irq),
        _ => None,
    }
}

fn is_frame(ty: ObjectType) -> bool {
    matches!(
        ty,
        ObjectType::Frame4K | ObjectType::Frame2M | ObjectType::Frame1G | ObjectType::Frame
    )
}

impl Model {
    /// The invoked cap: resolve errors as they are; an empty slot is `InvalidCapability`.
    fn invoked(&self, a: Addr) -> Result<(SlotId, Cap), Error> {
        let s = self.resolve(a)?;
        let cap = self.slot(s).ok_or(Error::InvalidCapability)?.cap;
        Ok((s, cap))
    }

    /// The invoked cap as the type `f` accepts, else `IllegalOperation`.
    fn invoked_as<T>(&self, a: Addr, f: impl Fn(Cap) -> Option<T>) -> Result<T, Error> {
        f(self.invoked(a)?.1).ok_or(Error::IllegalOperation)
    }

    /// A cap argument as the type `f` accepts: resolve errors as they are; an empty slot
    /// or another type is `InvalidCapability`.
    fn argument_as<T>(&self, a: Addr, f: impl Fn(Cap) -> Option<T>) -> Result<T, Error> {
        let s = self.resolve(a)?;
        self.slot(s)
            .and_then(|c| f(c.cap))
            .ok_or(Error::InvalidCapability)
    }

    /// The object invocations (every [`Op`] after `Retype`).
    pub(crate) fn invoke_object(&mut self, op: &Op) -> Result<Option<[u64; 2]>, Error> {
        match *op {
            Op::TcbReadRegister { tcb, reg: r } => {
                self.invoked_as(tcb, as_tcb)?;
                if r > reg::SPSR {
                    return Err(Error::RangeError);
                }
                Ok(None)
            }
            Op::TcbWriteRegister { tcb, reg: r, value } => {
                let t = self.invoked_as(tcb, as_tcb)?;
                if r > reg::SPSR {
                    return Err(Error::RangeError);
                }
                if r == reg::SPSR {
                    // EL0t, or EL1t/EL1h (AArch64) for a VCPU thread; never EL2.
                    let mode = value & 0x1f;
                    let vcpu = self.vm.vcpu_of(t).is_some();
                    let ok = mode == 0 || (vcpu && (mode == 0b00100 || mode == 0b00101));
                    if !ok || value >> 32 != 0 {
                        return Err(Error::InvalidArgument);
                    }
                }
                Ok(None)
            }
            Op::TcbSetSpace { tcb, vspace } => {
                let t = self.invoked_as(tcb, as_tcb)?;
                let vs = self.argument_as(vspace, as_vspace)?;
                if !self.vm.configured(vs) {
                    return Err(Error::IllegalOperation);
                }
                // Counted before the thread leaves its old space (the kernel looks for a
                // free entry first, even if the thread is in this space already).
                if self.vm.threads_in(vs) >= MAX_THREADS {
                    return Err(Error::NotEnoughMemory);
                }
                self.vm.threads.insert(t, vs);
                Ok(None)
            }
            Op::VSpaceConfigure { vspace, pool } => {
                let vs = self.invoked_as(vspace, as_vspace)?;
                let p = self.argument_as(pool, as_pool)?;
                if self.vm.configured(vs) {
                    return Err(Error::IllegalOperation);
                }
                // `spaces` holds the caller's own space besides the configured VSpaces.
                if self.vm.spaces.len() > MAX_SPACES {
                    return Err(Error::NotEnoughMemory);
                }
                let state = SpaceState {
                    pool: Some(p),
                    ..SpaceState::default()
                };
                self.vm.spaces.insert(Space::VSpace(vs), state);
                Ok(None)
            }
            Op::VSpaceBindRegion {
                vspace,
                frame,
                ipa,
                rights: map,
            } => {
                let vs = self.invoked_as(vspace, as_vspace)?;
                let (f, cap_rights) = self.argument_as(frame, as_frame)?;
                if !self.vm.configured(vs) {
                    return Err(Error::IllegalOperation);
                }
                check_rights(map, cap_rights)?;
                let end = frame_range(ipa, f.size_bits)?;
                let space = Space::VSpace(vs);
                if self.in_space(f, space) || self.vm.overlaps(space, ipa, end) {
                    return Err(Error::DeleteFirst);
                }
                if self.vm.regions(vs).count() >= MAX_REGIONS
                    || self.vm.mappings.len() >= MAX_MAPPINGS
                {
                    return Err(Error::NotEnoughMemory);
                }
                self.vm.mappings.push(Mapping {
                    frame: f,
                    space,
                    ipa,
                    rights: map,
                    device: false,
                    region: true,
                    cap_rights,
                });
                Ok(None)
            }
            Op::VSpaceUnmapRange { vspace, ipa, len } => {
                let vs = self.invoked_as(vspace, as_vspace)?;
                if !self.vm.configured(vs) {
                    return Err(Error::IllegalOperation);
                }
                let end = ipa.checked_add(len).ok_or(Error::AlignmentError)?;
                if !ipa.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || end > 1 << IPA_BITS {
                    return Err(Error::AlignmentError);
                }
                let state = self.vm.spaces.get_mut(&Space::VSpace(vs));
                let n = state.expect("configured").leaves.remove(ipa, end);
                Ok(Some([n, 0]))
            }
            Op::FrameMap {
                frame,
                space,
                ipa,
                arg,
            } => {
                let (f, cap_rights) = self.invoked_as(frame, as_frame)?;
                let space = match space {
                    None => Space::Own,
                    Some(a) => Space::VSpace(self.argument_as(a, as_vspace)?),
                };
                let map = arg & 0xff;
                check_rights(map, cap_rights)?;
                let device = match arg >> 8 {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::InvalidArgument),
                };
                if !self.vm.spaces.contains_key(&space) {
                    return Err(Error::IllegalOperation);
                }
                let end = frame_range(ipa, f.size_bits)?;
                if self.in_space(f, space) || self.vm.overlaps(space, ipa, end) {
                    return Err(Error::DeleteFirst);
                }
                if self.vm.mappings.len() >= MAX_MAPPINGS {
                    return Err(Error::NotEnoughMemory);
                }
                self.map_pages(space, ipa, end, f)?;
                self.vm.mappings.push(Mapping {
                    frame: f,
                    space,
                    ipa,
                    rights: map,
                    device,
                    region: false,
                    cap_rights,
                });
                Ok(None)
            }
            Op::FrameUnmap { frame } => {
                let (f, _) = self.invoked_as(frame, as_frame)?;
                let gone = self.take_mappings(|m| m.frame == f && !m.region);
                if gone == 0 {
                    return Err(Error::InvalidArgument);
                }
                Ok(None)
            }
            Op::UntypedInfo { untyped } => {
                let (watermark, size_bits) = self.invoked_as(untyped, |c| match c {
                    Cap::Mem(CapView::Untyped {
                        watermark,
                        size_bits,
                        ..
                    }) => Some((watermark, size_bits)),
                    _ => None,
                })?;
                Ok(Some([watermark, 1 << size_bits]))
            }
            Op::PoolInfo { pool } => {
                let p = self.invoked_as(pool, as_pool)?;
                let (free, total) = self.vm.pool_counts(p);
                Ok(Some([free, total]))
            }
            Op::VcpuBindTcb { vcpu, tcb } => {
                let v = self.invoked_as(vcpu, as_vcpu)?;
                let t = self.argument_as(tcb, as_tcb)?;
                if self.vm.vcpus.contains_key(&v) || self.vm.vcpu_of(t).is_some() {
                    return Err(Error::DeleteFirst);
                }
                self.vm.vcpus.insert(v, t);
                Ok(None)
            }
            Op::VcpuInjectIrq {
                vcpu,
                virq,
                priority,
            } => {
                self.invoked_as(vcpu, as_vcpu)?;
                if virq >= MAX_VIRQ || priority > 255 {
                    return Err(Error::RangeError);
                }
                Ok(None)
            }
            Op::VcpuReadSysreg { vcpu, reg: r } | Op::VcpuWriteSysreg { vcpu, reg: r, .. } => {
                self.invoked_as(vcpu, as_vcpu)?;
                if r >= vcpu_reg::COUNT {
                    return Err(Error::RangeError);
                }
                Ok(None)
            }
            Op::IrqControlGet { control, irq, dest } => {
                let (c, cap) = self.invoked(control)?;
                if cap != Cap::IrqControl {
                    return Err(Error::IllegalOperation);
                }
                let irq = u32::try_from(irq).map_err(|_| Error::RangeError)?;
                let d = self.resolve(dest)?;
                if self.slot(d).is_some() {
                    return Err(Error::DeleteFirst);
                }
                if !grantable(irq) {
                    return Err(Error::RangeError);
                }
                if self.vm.irqs.contains_key(&irq) {
                    return Err(Error::RevokeFirst);
                }
                if self.slot(c).expect("invoked").depth >= MAX_DERIVATION_DEPTH {
                    return Err(Error::RangeError);
                }
                self.vm.irqs.insert(irq, None);
                self.put_child(d, Cap::IrqHandler(irq), c);
                Ok(None)
            }
            Op::IrqHandlerSetNotification {
                handler,
                notification,
            } => {
                let irq = self.invoked_as(handler, as_handler)?;
                let binding = self.argument_as(notification, |c| match c {
                    Cap::Mem(v @ CapView::Notification { rights, badge, .. })
                        if rights & rights::WRITE != 0 =>
                    {
                        Some(IrqBinding {
                            notification: v.object(),
                            badge,
                        })
                    }
                    _ => None,
                })?;
                self.vm.irqs.insert(irq, Some(binding));
                Ok(None)
            }
            Op::IrqHandlerAck { handler } => {
                self.invoked_as(handler, as_handler)?;
                Ok(None)
            }
            Op::IrqHandlerClear { handler } => {
                let irq = self.invoked_as(handler, as_handler)?;
                self.vm.irqs.insert(irq, None);
                Ok(None)
            }
            _ => unreachable!("not an object invocation: {op:?}"),
        }
    }

    /// True if `frame` is mapped or bound in `space` already (once per address space).
    fn in_space(&self, frame: ObjRef, space: Space) -> bool {
        self.vm
            .mappings
            .iter()
            .any(|m| m.frame == frame && m.space == space)
    }

    /// FrameMap's walk: page by page from `ipa`, the tables on the way are linked (from
    /// the pool: `NotEnoughMemory` when it has none left), then the leaf installed
    /// (`DeleteFirst` when the page is mapped already). On failure the leaves this call
    /// installed go again, but the tables it linked stay, as in the kernel.
    fn map_pages(&mut self, space: Space, ipa: u64, end: u64, frame: ObjRef) -> Result<(), Error> {
        let pool = self.vm.spaces[&space].pool;
        let mut free = pool.map(|p| self.vm.pool_counts(p).0);
        let state = self.vm.spaces.get_mut(&space).expect("configured");
        let conflict = state.leaves.first_in(ipa, end);
        // Pages before the conflict are mapped (tables linked for them); the conflicting
        // page's own tables exist, as a leaf is there.
        let stop = conflict.unwrap_or(end);
        if let Some(free) = free.as_mut().filter(|_| stop > ipa) {
            for chunk in (ipa >> 21)..=((stop - 1) >> 21) {
                for t in [Table::L2(chunk >> 9), Table::L3(chunk)] {
                    if state.tables.contains(&t) {
                        continue;
                    }
                    if *free == 0 {
                        return Err(Error::NotEnoughMemory);
                    }
                    *free -= 1;
                    state.tables.insert(t);
                }
            }
        }
        if conflict.is_some() {
            return Err(Error::DeleteFirst);
        }
        state.leaves.insert(ipa, end, frame);
        Ok(())
    }

    /// Removes the registry entries `f` selects, unmapping each one's range in its space
    /// (every leaf there, whoever's it is, as the kernel's `unmap_range` does). Returns
    /// how many went.
    fn take_mappings(&mut self, f: impl Fn(&Mapping) -> bool) -> usize {
        let (gone, kept): (Vec<Mapping>, Vec<Mapping>) =
            self.vm.mappings.iter().partition(|m| f(m));
        self.vm.mappings = kept;
        for m in &gone {
            if let Some(state) = self.vm.spaces.get_mut(&m.space) {
                state.leaves.remove(m.ipa, m.end());
            }
        }
        gone.len()
    }

    /// VSpace teardown: its threads leave it, its regions and mappings go with its leaves
    /// and tables (back to the pool), and it is unconfigured.
    fn teardown(&mut self, vs: u64) {
        if self.vm.spaces.remove(&Space::VSpace(vs)).is_none() {
            return;
        }
        self.vm.threads.retain(|_, &mut v| v != vs);
        self.vm.mappings.retain(|m| m.space != Space::VSpace(vs));
    }

    /// What the destruction of `obj` (its last cap gone) does to the state that refers to
    /// it: a Frame loses its mappings and regions; a VSpace is torn down; a TablePool
    /// tears down every VSpace drawing from it; a VCPU and its thread are unbound; a TCB
    /// leaves its VSpace and its VCPU; a Notification is unbound from every IRQ.
    pub(crate) fn object_destroyed(&mut self, obj: ObjRef) {
        match obj.ty {
            ty if is_frame(ty) => {
                self.take_mappings(|m| m.frame == obj);
            }
            ObjectType::VSpace => self.teardown(obj.addr),
            ObjectType::TablePool => {
                let users: Vec<u64> = self
                    .vm
                    .spaces
                    .iter()
                    .filter_map(|(s, st)| match s {
                        Space::VSpace(vs) if st.pool == Some(obj) => Some(*vs),
                        _ => None,
                    })
                    .collect();
                for vs in users {
                    self.teardown(vs);
                }
            }
            ObjectType::Vcpu => {
                self.vm.vcpus.remove(&obj.addr);
            }
            ObjectType::Tcb => {
                self.vm.threads.remove(&obj.addr);
                self.vm.vcpus.retain(|_, &mut t| t != obj.addr);
            }
            ObjectType::Notification => {
                for b in self.vm.irqs.values_mut() {
                    if b.is_some_and(|b| b.notification == obj) {
                        *b = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// The last IRQHandler cap of `irq` is gone: the interrupt is released.
    pub(crate) fn release_irq(&mut self, irq: u32) {
        self.vm.irqs.remove(&irq);
    }
}
