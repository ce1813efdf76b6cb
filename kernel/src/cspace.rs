//! Capability spaces on the target: slot memory through the identity map, the first
//! task's CSpace with its Untyped memory, and the dispatch of capability invocations to
//! `kcore::cap`.
//!
//! Locking: all capability operations run under the whole of `CAPS`, the kernel's
//! capability-and-IPC lock, which they share with the IPC slow paths; the same-core IPC
//! fast path takes only its own core's part of it (`docs/design/ipc.md`). Stage-2 faults
//! and interrupts take neither.

use bulkhead_sys::cap::SLOT_BITS;
use bulkhead_sys::{invocation, Error, MessageInfo};
use kcore::addr::{PhysAddr, PhysRange};
use kcore::cap::{self, Addr, Cap, Cte, SlotMem, CTE_WORDS};
use kcore::frames::pow2_blocks;

use crate::arch::cpu::MAX_CPUS;
use crate::sched::{self, KObj};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use kcore::brlock::BrLock;
use kcore::thread::{self, tcb, ObjMem, State};

/// Slots in kernel memory (CNode objects in retyped RAM, identity mapped).
pub struct KernelSlots;

fn slot_ptr(addr: u64) -> *mut u64 {
    addr as usize as *mut u64
}

impl SlotMem for KernelSlots {
    fn read(&self, addr: u64) -> Cte {
        let mut w = [0u64; CTE_WORDS];
        for (i, v) in w.iter_mut().enumerate() {
            // SAFETY: `addr` is a slot of a CNode object: the capability code only reaches
            // slots through CNode caps the kernel made, whose objects lie in RAM the kernel
            // owns (retyped from Untyped or allocated at boot) and keeps identity mapped;
            // slots are 32-byte aligned, so each word is aligned.
            *v = unsafe { core::ptr::read_volatile(slot_ptr(addr).add(i)) };
        }
        Cte::decode(w)
    }

    fn write(&mut self, addr: u64, cte: Cte) {
        for (i, v) in cte.encode().into_iter().enumerate() {
            // SAFETY: as in `read`; only this core writes while it holds CAPS.
            unsafe { core::ptr::write_volatile(slot_ptr(addr).add(i), v) };
        }
    }

    fn clear(&mut self, addr: u64, size: u64) {
        // SAFETY: a new object retyped from non-device Untyped memory: RAM inside the
        // untyped's region, which no other object uses (retype never overlaps objects).
        unsafe { core::ptr::write_bytes(addr as usize as *mut u8, 0, size as usize) };
    }

    fn destroyed(&mut self, cap: &Cap) {
        defmt::trace!("destroyed: {=u64:#x}", cap.encode()[0]);
        match *cap {
            // The thread stops; the CSpace root cap inside the dead TCB stays in the
            // derivation tree until its Untyped is revoked (deleting it here could recurse
            // without bound through TCB -> CNode -> TCB chains).
            Cap::Tcb { addr } => {
                sched::stop(addr, Error::Aborted as u64);
                crate::vm::tcb_destroyed(addr);
            }
            Cap::VSpace { addr } => crate::vm::vspace_destroyed(addr),
            Cap::TablePool { addr, .. } => crate::vm::pool_destroyed(addr),
            Cap::Frame { addr, .. } => crate::vm::frame_destroyed(addr),
            Cap::Vcpu { addr } => crate::vm::vcpu_destroyed(addr),
            Cap::IrqHandler { irq } => crate::irq::release(irq),
            Cap::Endpoint { addr, .. } | Cap::Notification { addr, .. } => {
                if matches!(cap, Cap::Notification { .. }) {
                    crate::irq::notification_destroyed(addr);
                }
                sched::ipc_with(self, |m, w| {
                    thread::abort_endpoint(m, addr, Error::Aborted as u64, w)
                })
            }
            _ => {}
        }
    }
}

/// The capability-and-IPC lock (see the module docs): a [`BrLock`] with one flag per core.
/// Capability operations and the IPC slow paths take every flag ([`CapsLock::lock`]); the
/// same-core IPC fast path takes only its own core's ([`CapsLock::read`]). A core waiting
/// for a flag counts as quiescent for stage-2 reclamation, so a core holding the whole
/// lock may wait for a grace period.
pub struct CapsLock {
    flags: BrLock<MAX_CPUS>,
    /// Cores whose flags a writer takes: all of them until boot has counted the cores
    /// that came online (no fast path runs before that), then only those.
    cores: AtomicUsize,
    /// Per core: it holds every flag (see [`CapsLock::held_here`]).
    writer: [AtomicBool; MAX_CPUS],
}

fn quiescent_wait(paused: &mut bool) -> impl FnMut(bool) + '_ {
    |start| {
        if start {
            *paused = crate::vm::pause();
        } else {
            crate::vm::unpause(*paused);
        }
    }
}

impl CapsLock {
    /// Takes the whole lock (every core's flag).
    pub fn lock(&self) -> CapsGuard {
        let daif = crate::arch::regs::mask_irqs();
        let mut paused = false;
        let n = self.cores.load(Ordering::Acquire);
        self.flags.write(n, &mut quiescent_wait(&mut paused));
        self.writer[crate::arch::cpu::index()].store(true, Ordering::Relaxed);
        CapsGuard {
            slots: KernelSlots,
            cores: n,
            daif,
        }
    }

    /// Takes this core's flag only (the IPC fast path), or `None` if this core is not one
    /// whose flag writers take.
    pub fn read(&self) -> Option<CapsReadGuard> {
        let me = crate::arch::cpu::index();
        if me >= self.cores.load(Ordering::Relaxed) {
            return None;
        }
        let daif = crate::arch::regs::mask_irqs();
        let mut paused = false;
        self.flags.read(me, &mut quiescent_wait(&mut paused));
        Some(CapsReadGuard {
            slots: KernelSlots,
            core: me,
            daif,
        })
    }

    /// True if this core holds the whole lock (for code called both with and without it).
    pub fn held_here(&self) -> bool {
        self.writer[crate::arch::cpu::index()].load(Ordering::Relaxed)
    }

    /// From now on writers take only the flags of cores `0..n` (boot calls this once,
    /// with the number of cores online, before any task runs).
    pub fn set_cores(&self, n: usize) {
        let g = self.lock();
        self.cores.store(n.clamp(1, MAX_CPUS), Ordering::Release);
        // The guard releases the flags it took (all of them).
        drop(g);
    }
}

/// Holds the whole capability-and-IPC lock.
pub struct CapsGuard {
    slots: KernelSlots,
    cores: usize,
    daif: u64,
}

impl core::ops::Deref for CapsGuard {
    type Target = KernelSlots;
    fn deref(&self) -> &KernelSlots {
        &self.slots
    }
}

impl core::ops::DerefMut for CapsGuard {
    fn deref_mut(&mut self) -> &mut KernelSlots {
        &mut self.slots
    }
}

impl Drop for CapsGuard {
    fn drop(&mut self) {
        CAPS.writer[crate::arch::cpu::index()].store(false, Ordering::Relaxed);
        CAPS.flags.write_release(self.cores);
        crate::arch::regs::restore_irqs(self.daif);
    }
}

/// Holds this core's flag of the capability-and-IPC lock: capability slots may be read
/// (no writer runs), and this core's threads and, under an endpoint's own lock, that
/// endpoint's queue may be changed.
pub struct CapsReadGuard {
    slots: KernelSlots,
    core: usize,
    daif: u64,
}

impl core::ops::Deref for CapsReadGuard {
    type Target = KernelSlots;
    fn deref(&self) -> &KernelSlots {
        &self.slots
    }
}

impl Drop for CapsReadGuard {
    fn drop(&mut self) {
        CAPS.flags.release(self.core);
        crate::arch::regs::restore_irqs(self.daif);
    }
}

/// The capability-and-IPC lock.
pub static CAPS: CapsLock = CapsLock {
    flags: BrLock::new(),
    cores: AtomicUsize::new(MAX_CPUS),
    writer: [const { AtomicBool::new(false) }; MAX_CPUS],
};

/// Radix of a boot task's root CNode.
pub const ROOT_RADIX: u32 = 10;
/// Most Untyped caps the first task receives (slots 2 ..).
pub const MAX_UNTYPEDS: usize = 64;

/// A task's CSpace root: the CNode cap it resolves addresses against.
#[derive(Clone, Copy, Debug)]
pub struct CSpace {
    /// The root CNode cap (held by the task, outside any slot).
    pub root: Cap,
    /// Untyped caps in slots `2 .. 2 + untypeds`.
    pub untypeds: u64,
}

/// Builds a root CNode at `frames` (which must be `2^(ROOT_RADIX + 5)` bytes of zeroed,
/// aligned RAM the kernel owns) holding its own cap in slot 1 and one Untyped cap per
/// aligned block of `ram` from slot 2, then (with `control`) the IRQControl and
/// SchedControl caps.
pub fn make_root(frames: PhysAddr, ram: &[PhysRange], control: bool) -> CSpace {
    let mut blocks: heapless::Vec<(u64, u32, bool), MAX_UNTYPEDS> = heapless::Vec::new();
    'outer: for r in ram {
        for (base, bits) in pow2_blocks(*r, 12, bulkhead_sys::cap::MAX_UNTYPED_BITS) {
            if blocks.push((base, bits, false)).is_err() {
                break 'outer;
            }
        }
    }
    let mut slots = CAPS.lock();
    let root = cap::boot(&mut *slots, frames.0, ROOT_RADIX, 64 - ROOT_RADIX, &blocks);
    if let (true, Cap::CNode { addr, .. }) = (control, root) {
        let slot = irq_control_slot(blocks.len() as u64);
        cap::place_initial(&mut *slots, addr, slot, Cap::IrqControl);
        cap::place_initial(&mut *slots, addr, slot + 1, Cap::SchedControl);
    }
    CSpace {
        root,
        untypeds: blocks.len() as u64,
    }
}

/// The slot of the IRQ control cap in a root CNode with `untypeds` Untyped caps.
pub fn irq_control_slot(untypeds: u64) -> u64 {
    2 + untypeds
}

/// An empty root CNode for tasks that get no memory (just its own cap in slot 1).
pub fn make_empty_root(frames: PhysAddr) -> CSpace {
    let mut slots = CAPS.lock();
    let root = cap::boot(&mut *slots, frames.0, ROOT_RADIX, 64 - ROOT_RADIX, &[]);
    CSpace { root, untypeds: 0 }
}

/// Gives a boot task's first thread its CSpace root: a copy of the root CNode's own cap
/// (slot 1), placed in the TCB's CSpace slot as its child.
pub fn give_root(cs: &CSpace, tcb_addr: u64) {
    if let Cap::CNode { addr, .. } = cs.root {
        let _ = cap::derive_into(
            &mut *CAPS.lock(),
            addr + (1 << SLOT_BITS),
            tcb_addr + tcb::CSPACE_SLOT,
        );
    }
}

/// Deletes the CSpace root cap of a boot task's first thread.
pub fn take_root(tcb_addr: u64) {
    cap::delete_at(&mut *CAPS.lock(), tcb_addr + tcb::CSPACE_SLOT);
}

/// Deletes every cap of a task's CSpace (objects whose last cap goes are destroyed).
pub fn destroy(cs: &CSpace) {
    if let Cap::CNode { addr, radix, .. } = cs.root {
        cap::delete_all_in(&mut *CAPS.lock(), addr, radix);
    }
}

fn depth(mr: u64, shift: u32) -> u32 {
    ((mr >> shift) & 0xff) as u32
}

/// The cap at `cptr` (depth 64) in thread `t`'s CSpace.
pub fn cap_of(t: u64, cptr: u64) -> Result<Cap, Error> {
    let mem = CAPS.lock();
    let root = mem.read(t + tcb::CSPACE_SLOT).cap;
    let slot = cap::lookup(
        &*mem,
        &root,
        Addr {
            index: cptr,
            depth: 64,
        },
    )?;
    Ok(mem.read(slot).cap)
}

/// As [`cap_of`], keeping the capability lock for the caller.
pub fn cap_of_locked(t: u64, cptr: u64) -> (Result<Cap, Error>, CapsGuard) {
    let mem = CAPS.lock();
    let root = mem.read(t + tcb::CSPACE_SLOT).cap;
    let cap = cap::lookup(
        &*mem,
        &root,
        Addr {
            index: cptr,
            depth: 64,
        },
    )
    .map(|slot| mem.read(slot).cap);
    (cap, mem)
}

fn cap_at(mem: &KernelSlots, root: &Cap, cptr: u64) -> Result<Cap, Error> {
    let slot = cap::lookup(
        mem,
        root,
        Addr {
            index: cptr,
            depth: 64,
        },
    )?;
    Ok(mem.read(slot).cap)
}

fn vspace_at(mem: &KernelSlots, root: &Cap, cptr: u64) -> Result<u64, Error> {
    match cap_at(mem, root, cptr)? {
        Cap::VSpace { addr } => Ok(addr),
        _ => Err(Error::InvalidCapability),
    }
}

/// Performs an object invocation (a Call on a cap that is not an endpoint) for thread
/// `caller` on the cap at `cptr` (depth 64 in its CSpace). Some invocations return values
/// (x1, x2).
pub fn invoke(
    caller: u64,
    cptr: u64,
    info: MessageInfo,
    mr: [u64; 4],
) -> Result<Option<[u64; 2]>, Error> {
    let mut out = None;
    invoke_into(caller, cptr, info, mr, &mut out).map(|()| out)
}

fn invoke_into(
    caller: u64,
    cptr: u64,
    info: MessageInfo,
    mr: [u64; 4],
    out: &mut Option<[u64; 2]>,
) -> Result<(), Error> {
    let mut mem = CAPS.lock();
    let mem = &mut *mem;
    let root = mem.read(caller + tcb::CSPACE_SLOT).cap;
    let label = info.label();
    let invoked = Addr {
        index: cptr,
        depth: 64,
    };
    if label == invocation::UNTYPED_RETYPE {
        let dest = Addr {
            index: mr[1],
            depth: depth(mr[2], 0),
        };
        let ty = mr[0] & 0xffff_ffff;
        let size_bits = (mr[0] >> 32) as u32;
        let count = mr[2] >> 32;
        return cap::retype(mem, &root, invoked, ty, size_bits, dest, mr[3], count);
    }
    let slot = cap::lookup(mem, &root, invoked)?;
    let node = mem.read(slot).cap;
    if let Cap::Untyped {
        size_bits,
        watermark,
        ..
    } = node
    {
        if label != invocation::UNTYPED_INFO {
            return Err(Error::IllegalOperation);
        }
        *out = Some([watermark, 1 << size_bits]);
        return Ok(());
    }
    if let Cap::Tcb { addr } = node {
        return invoke_tcb(mem, caller, &root, addr, label, mr, out);
    }
    match node {
        Cap::VSpace { addr: vs } => {
            return match label {
                invocation::VSPACE_CONFIGURE => match cap_at(mem, &root, mr[0])? {
                    Cap::TablePool { addr, size_bits } => {
                        *out = Some(crate::vm::configure(vs, addr, size_bits)?);
                        Ok(())
                    }
                    _ => Err(Error::InvalidCapability),
                },
                invocation::VSPACE_BIND_REGION => match cap_at(mem, &root, mr[0])? {
                    Cap::Frame {
                        addr,
                        size_bits,
                        rights,
                    } => crate::vm::bind_region(vs, addr, size_bits, rights, mr[1], mr[2]),
                    _ => Err(Error::InvalidCapability),
                },
                invocation::VSPACE_UNMAP_RANGE => {
                    let n = crate::vm::unmap_range(vs, mr[0], mr[1])?;
                    *out = Some([n, 0]);
                    Ok(())
                }
                invocation::VSPACE_COLLAPSE => crate::vm::collapse(vs, mr[0], mr[1]),
                invocation::VSPACE_LOG_DIRTY => {
                    let bitmap = if mr[1] == 0 {
                        None
                    } else {
                        match cap_at(mem, &root, mr[1])? {
                            Cap::Frame {
                                addr,
                                size_bits,
                                rights,
                            } if rights & bulkhead_sys::cap::rights::WRITE != 0 => {
                                Some((addr, size_bits))
                            }
                            _ => return Err(Error::InvalidCapability),
                        }
                    };
                    let n = crate::vm::log_dirty(vs, mr[0], bitmap)?;
                    *out = Some([n, 0]);
                    Ok(())
                }
                invocation::VSPACE_SPLIT => crate::vm::split(vs, mr[0], mr[1]),
                _ => Err(Error::IllegalOperation),
            };
        }
        Cap::Frame {
            addr,
            size_bits,
            rights,
        } => {
            return match label {
                invocation::FRAME_MAP => {
                    let (vs, own) = if mr[0] == invocation::SELF_SPACE {
                        let own_vs = KObj.rd(caller + tcb::VSPACE);
                        (own_vs, KObj.rd(caller + tcb::VTTBR))
                    } else {
                        (vspace_at(mem, &root, mr[0])?, 0)
                    };
                    crate::vm::map_frame(addr, size_bits, rights, vs, own, mr[1], mr[2])
                }
                invocation::FRAME_UNMAP => crate::vm::unmap_frame(addr),
                _ => Err(Error::IllegalOperation),
            };
        }
        Cap::TablePool { addr, size_bits } => {
            if label != invocation::POOL_INFO {
                return Err(Error::IllegalOperation);
            }
            *out = Some(crate::vm::pool_info(addr, size_bits));
            return Ok(());
        }
        Cap::Vcpu { addr: v } => {
            return match label {
                invocation::VCPU_BIND_TCB => match cap_at(mem, &root, mr[0])? {
                    Cap::Tcb { addr } => crate::vm::bind_vcpu(v, addr),
                    _ => Err(Error::InvalidCapability),
                },
                invocation::VCPU_INJECT_IRQ => {
                    if mr[0] >= crate::vcpu::MAX_VIRQ || mr[1] > 255 {
                        return Err(Error::RangeError);
                    }
                    crate::vcpu::queue(v, mr[0], mr[1] as u8);
                    let t = crate::vcpu::bound(v);
                    if t != 0 {
                        sched::kick_thread(t);
                    }
                    Ok(())
                }
                invocation::VCPU_READ_SYSREG => {
                    let val = crate::vcpu::read_reg(v, mr[0]).ok_or(Error::RangeError)?;
                    *out = Some([val, 0]);
                    Ok(())
                }
                invocation::VCPU_WRITE_SYSREG => {
                    let t = crate::vcpu::bound(v);
                    if t != 0 && thread::state(&KObj, t) == State::Ready {
                        return Err(Error::IllegalOperation);
                    }
                    if crate::vcpu::write_reg(v, mr[0], mr[1]) {
                        Ok(())
                    } else {
                        Err(Error::RangeError)
                    }
                }
                _ => Err(Error::IllegalOperation),
            };
        }
        _ => {}
    }
    if let Cap::IrqControl = node {
        if label != invocation::IRQ_CONTROL_GET {
            return Err(Error::IllegalOperation);
        }
        let irq = u32::try_from(mr[0]).map_err(|_| Error::RangeError)?;
        let dest = cap::lookup(
            mem,
            &root,
            Addr {
                index: mr[1],
                depth: 64,
            },
        )?;
        if !mem.read(dest).cap.is_null() {
            return Err(Error::DeleteFirst);
        }
        crate::irq::claim(irq)?;
        let r = cap::issue_child(mem, slot, dest, Cap::IrqHandler { irq });
        if r.is_err() {
            // No cap names it: it is not claimed either.
            crate::irq::release(irq);
        }
        return r;
    }
    if let Cap::SchedControl = node {
        if label != invocation::SCHED_CONTROL_SET_WINDOWS {
            return Err(Error::IllegalOperation);
        }
        let core = mr[0] as usize;
        let n = mr[1] as usize;
        if core >= crate::arch::cpu::ONLINE.load(core::sync::atomic::Ordering::Acquire) {
            return Err(Error::RangeError);
        }
        if n > crate::sched::MAX_WINDOWS {
            return Err(Error::RangeError);
        }
        let mut w = [(0u8, 0u32); crate::sched::MAX_WINDOWS];
        for (i, win) in w.iter_mut().enumerate().take(n) {
            let part = ((mr[2] >> (4 * i)) & 0xf) as u8;
            let ticks = ((mr[3] >> (8 * i)) & 0xff) as u32;
            if part as usize >= crate::sched::MAX_PARTITIONS || ticks == 0 {
                return Err(Error::RangeError);
            }
            *win = (part, ticks);
        }
        crate::sched::set_windows(core, &w[..n]);
        return Ok(());
    }
    if let Cap::IrqHandler { irq } = node {
        return match label {
            invocation::IRQ_HANDLER_SET_NOTIFICATION => {
                let s = cap::lookup(
                    mem,
                    &root,
                    Addr {
                        index: mr[0],
                        depth: 64,
                    },
                )?;
                match mem.read(s).cap {
                    Cap::Notification {
                        addr,
                        rights,
                        badge,
                    } if rights & bulkhead_sys::cap::rights::WRITE != 0 => {
                        crate::irq::bind(irq, addr, badge);
                        Ok(())
                    }
                    _ => Err(Error::InvalidCapability),
                }
            }
            invocation::IRQ_HANDLER_ACK => {
                crate::irq::ack(irq);
                Ok(())
            }
            invocation::IRQ_HANDLER_CLEAR => {
                crate::irq::clear(irq);
                Ok(())
            }
            _ => Err(Error::IllegalOperation),
        };
    }
    let Cap::CNode { .. } = node else {
        return Err(if node.is_null() {
            Error::InvalidCapability
        } else {
            Error::IllegalOperation
        });
    };
    let dest = Addr {
        index: mr[0],
        depth: depth(mr[2], 0),
    };
    let src = Addr {
        index: mr[1],
        depth: depth(mr[2], 8),
    };
    let rights = ((mr[2] >> 16) & 0xff) as u8;
    match label {
        invocation::CNODE_COPY => cap::copy(mem, &node, dest, src, rights),
        invocation::CNODE_MINT => cap::mint(mem, &node, dest, src, rights, mr[3]),
        invocation::CNODE_MOVE => cap::move_cap(mem, &node, dest, src),
        invocation::CNODE_MUTATE => cap::mutate(mem, &node, dest, src, mr[3]),
        invocation::CNODE_DELETE => cap::delete(mem, &node, dest),
        invocation::CNODE_REVOKE => cap::revoke(mem, &node, dest),
        _ => Err(Error::IllegalOperation),
    }
}

fn invoke_tcb(
    mem: &mut KernelSlots,
    caller: u64,
    root: &Cap,
    t: u64,
    label: u64,
    mr: [u64; 4],
    out: &mut Option<[u64; 2]>,
) -> Result<(), Error> {
    let st = thread::state(&KObj, t);
    match label {
        invocation::TCB_READ_REGISTER | invocation::TCB_WRITE_REGISTER => {
            // Not while it runs or may be picked to run (its registers are live then).
            if st == State::Ready {
                return Err(Error::IllegalOperation);
            }
            let i = mr[0];
            if i > bulkhead_sys::reg::SPSR {
                return Err(Error::RangeError);
            }
            if label == invocation::TCB_READ_REGISTER {
                *out = Some([KObj.rd(t + tcb::CTX + 8 * i), 0]);
                return Ok(());
            }
            if i == bulkhead_sys::reg::SPSR {
                // Only EL0t, or EL1t/EL1h for a VCPU thread (AArch64, M[4] = 0); never EL2.
                let m = mr[1] & 0x1f;
                let ok = m == 0 || (crate::vcpu::of(t) != 0 && (m == 0b00100 || m == 0b00101));
                if !ok || mr[1] >> 32 != 0 {
                    return Err(Error::InvalidArgument);
                }
            }
            KObj.wr(t + tcb::CTX + 8 * i, mr[1]);
            Ok(())
        }
        invocation::TCB_SET_SPACE => {
            if st != State::Inactive {
                return Err(Error::IllegalOperation);
            }
            let vs = vspace_at(mem, root, mr[0])?;
            crate::vm::set_space(t, vs)
        }
        invocation::TCB_CONFIGURE => {
            let slot = cap::lookup(
                mem,
                root,
                Addr {
                    index: mr[0],
                    depth: 64,
                },
            )?;
            if !matches!(mem.read(slot).cap, Cap::CNode { .. }) {
                return Err(Error::InvalidCapability);
            }
            if mr[1] > 255 {
                return Err(Error::RangeError);
            }
            if !mr[3].is_multiple_of(kcore::addr::PAGE_SIZE) {
                return Err(Error::AlignmentError);
            }
            if st != State::Inactive {
                return Err(Error::IllegalOperation);
            }
            KObj.wr(t + tcb::IPC_BUF, mr[3]);
            cap::delete_at(mem, t + tcb::CSPACE_SLOT);
            cap::derive_into(mem, slot, t + tcb::CSPACE_SLOT)?;
            KObj.wr(t + tcb::PRIO, mr[1]);
            KObj.wr(t + tcb::FAULT_EP, mr[2]);
            KObj.wr(t + tcb::VTTBR, KObj.rd(caller + tcb::VTTBR));
            KObj.wr(t + tcb::TASK, KObj.rd(caller + tcb::TASK));
            let vs = KObj.rd(caller + tcb::VSPACE);
            if vs != 0 {
                crate::vm::set_space(t, vs)?;
            }
            Ok(())
        }
        invocation::TCB_WRITE_REGISTERS => {
            if st != State::Inactive {
                return Err(Error::IllegalOperation);
            }
            KObj.wr(t + tcb::CTX + 32 * 8, mr[0]);
            KObj.wr(t + tcb::CTX + 31 * 8, mr[1]);
            KObj.wr(t + tcb::reg(0), mr[2]);
            KObj.wr(t + tcb::reg(1), mr[3]);
            // EL0t with interrupts unmasked, or EL1h masked for a VCPU thread.
            let spsr = if crate::vcpu::of(t) != 0 {
                crate::vcpu::SPSR_EL1H
            } else {
                0
            };
            KObj.wr(t + tcb::CTX + 33 * 8, spsr);
            Ok(())
        }
        invocation::TCB_RESUME => {
            if mem.read(t + tcb::CSPACE_SLOT).cap.is_null() || KObj.rd(t + tcb::VTTBR) == 0 {
                return Err(Error::IllegalOperation);
            }
            if st == State::Inactive {
                sched::ipc_with(mem, |m, w| {
                    m.wr(t + tcb::STATE, State::Ready as u64);
                    w(m, t);
                });
            }
            Ok(())
        }
        invocation::TCB_SET_PARTITION => {
            if mr[0] as usize >= sched::MAX_PARTITIONS {
                return Err(Error::RangeError);
            }
            if st != State::Inactive {
                return Err(Error::IllegalOperation);
            }
            sched::set_queue_field(t, tcb::PARTITION, mr[0]);
            Ok(())
        }
        invocation::TCB_SET_AFFINITY => {
            let online = crate::arch::cpu::ONLINE.load(core::sync::atomic::Ordering::Acquire);
            if mr[0] as usize >= online {
                return Err(Error::RangeError);
            }
            if st != State::Inactive {
                return Err(Error::IllegalOperation);
            }
            sched::set_core(mem, t, mr[0] as usize);
            Ok(())
        }
        invocation::TCB_SUSPEND => {
            sched::stop(t, Error::Aborted as u64);
            Ok(())
        }
        invocation::TCB_SET_PRIORITY => {
            if mr[0] > 255 {
                return Err(Error::RangeError);
            }
            sched::set_queue_field(t, tcb::PRIO, mr[0]);
            Ok(())
        }
        _ => Err(Error::IllegalOperation),
    }
}

/// DebugSlot: the encoded cap at (`index`, `depth`) in thread `t`'s CSpace, the slot's
/// address and its parent's.
pub fn describe(t: u64, index: u64, depth: u64) -> Result<([u64; 2], u64, Option<u64>), Error> {
    let mem = CAPS.lock();
    let root = mem.read(t + tcb::CSPACE_SLOT).cap;
    let d = u32::try_from(depth).map_err(|_| Error::RangeError)?;
    let slot = cap::lookup(&*mem, &root, Addr { index, depth: d })?;
    Ok((
        mem.read(slot).cap.encode(),
        slot,
        cap::parent_of(&*mem, slot),
    ))
}

/// Bytes a root CNode takes.
pub const ROOT_BYTES: u64 = 1 << (ROOT_RADIX + SLOT_BITS);
