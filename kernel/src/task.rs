//! Boot tasks: native EL0 tasks from the boot payload, each in its own stage-2 space.
//!
//! This is the minimal task support of the bring-up (one task at a time on the boot
//! core, run in payload order); the capability kernel replaces it with TCBs, CNodes and
//! VSpace objects. A task runs at EL0 with stage-1 translation off (HCR_EL2.TGE | DC), so
//! its addresses are IPAs translated by its stage-2 table; it gets a VMID of its own.
//! Anything it does wrong ends it with a decoded report and the kernel moves on.

use kcore::addr::{Ipa, PhysAddr, PhysRange, PAGE_SIZE};
use kcore::bootimage::{Payload, Task as BootTask};
use kcore::elf::{Elf, ElfError, PF_W, PF_X};
use kcore::stage2::{self, MapError, MemType, Perms};

use crate::arch::regs::{isb, sysreg_write, tlbi_vmid_all_cores};
use crate::cspace::{self, CSpace};
use crate::mem::{self, IdentityMem};
use crate::sched::{self, KObj};
use crate::sync::SpinLock;
use kcore::thread::{tcb, ObjMem, State};

/// Top of every task's stack (IPA).
pub const STACK_TOP: u64 = 0x1_0000_0000;
/// Per payload slot: the TCB of that boot task's first thread until its first syscall
/// (logged once), else 0.
pub static FIRST_SYSCALL_PENDING: [core::sync::atomic::AtomicU64; kcore::bootimage::MAX_TASKS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; kcore::bootimage::MAX_TASKS];

/// Where a boot task's first thread finds its IPC buffer (one page, read/write).
pub const IPC_BUFFER: u64 = 0xf000_0000;
/// Priority of a boot task's first thread.
pub const ROOT_PRIORITY: u64 = 254;
/// Stack pages per task.
pub const STACK_PAGES: u64 = 8;
/// HCR_EL2 while a native task runs: VM | SWIO | FMO | IMO | AMO | TSC | TGE | TVM | TTLB
/// | TACR | RW | DC (the value seL4 uses for native threads, see ../shared facts; no
/// TWI/TWE so a task's WFI simply waits).
pub const HCR_NATIVE: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 19)
    | (1 << 27)
    | (1 << 26)
    | (1 << 25)
    | (1 << 21)
    | (1 << 31)
    | (1 << 12);

/// Why a task could not be loaded.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub enum LoadError {
    /// The ELF image was refused.
    Elf(ElfError),
    /// A segment could not be mapped.
    Map(MapError),
    /// Out of memory.
    NoMemory,
}

/// A loaded boot task: an address space, a CSpace and its first thread.
pub struct Task {
    /// Name from the payload.
    pub name: &'static str,
    /// Payload slot (its log tag).
    pub slot: usize,
    /// Its first thread's TCB (a kernel-allocated frame).
    pub tcb: u64,
    /// Stage-2 root (8 KiB).
    pub root: PhysAddr,
    /// VMID of its stage-2.
    pub vmid: u16,
    /// Its CSpace (root CNode in `cnode_frames`).
    pub cspace: CSpace,
    /// The frames of its root CNode.
    pub cnode_frames: PhysAddr,
}

impl Task {
    /// VTTBR_EL2 value for this task.
    pub fn vttbr(&self) -> u64 {
        ((self.vmid as u64) << 48) | self.root.0
    }
}

/// Tables for boot tasks come straight from the frame allocator.
struct FrameTables;

impl stage2::TableAlloc for FrameTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        mem::alloc_zeroed()
    }
    fn free_table(&mut self, table: PhysAddr) {
        mem::free(table)
    }
}

fn map(root: PhysAddr, ipa: u64, pa: PhysAddr, perms: Perms) -> Result<(), MapError> {
    stage2::map_page(
        &IdentityMem,
        root,
        Ipa(ipa),
        pa,
        perms,
        MemType::Normal,
        &mut FrameTables,
    )
}

fn load(t: &BootTask<'static>, untyped: &[PhysRange], control: bool) -> Result<Task, LoadError> {
    let elf = Elf::parse(t.elf).map_err(LoadError::Elf)?;
    let root = mem::alloc_zeroed_aligned(2, stage2::ROOT_SIZE).ok_or(LoadError::NoMemory)?;
    let pages = cspace::ROOT_BYTES / PAGE_SIZE;
    let Some(cnode_frames) = mem::alloc_zeroed_aligned(pages, cspace::ROOT_BYTES) else {
        mem::free(root);
        mem::free(PhysAddr(root.0 + PAGE_SIZE));
        return Err(LoadError::NoMemory);
    };
    let cspace = if untyped.is_empty() {
        cspace::make_empty_root(cnode_frames)
    } else {
        cspace::make_root(cnode_frames, untyped, control)
    };
    let Some(tcb_frame) = mem::alloc_zeroed() else {
        mem::free(root);
        mem::free(PhysAddr(root.0 + PAGE_SIZE));
        for i in 0..pages {
            mem::free(PhysAddr(cnode_frames.0 + i * PAGE_SIZE));
        }
        return Err(LoadError::NoMemory);
    };
    let task = Task {
        name: t.name,
        slot: t.slot,
        tcb: tcb_frame.0,
        root,
        vmid: t.slot as u16 + 1,
        cspace,
        cnode_frames,
    };
    // From here on, `destroy` releases whatever was mapped if loading fails.
    match populate(&task, &elf) {
        Ok(()) => {}
        Err(e) => {
            destroy(&task, false);
            return Err(e);
        }
    }
    // The first thread: registers (boot info in x1..x3: first Untyped slot, their
    // count, the root CNode's radix), EL0t with interrupts unmasked, the task's address
    // space, a CSpace root derived from the root CNode's own cap, top priority.
    let regs = [
        (tcb::reg(0), t.arg),
        (tcb::reg(1), 2),
        (tcb::reg(2), task.cspace.untypeds),
        (tcb::reg(3), cspace::ROOT_RADIX as u64),
        (
            tcb::reg(4),
            if control {
                cspace::irq_control_slot(task.cspace.untypeds)
            } else {
                0
            },
        ),
        (
            tcb::reg(5),
            if control {
                cspace::irq_control_slot(task.cspace.untypeds) + 1
            } else {
                0
            },
        ),
        (tcb::CTX + 31 * 8, STACK_TOP),
        (tcb::CTX + 32 * 8, elf.entry()),
        (tcb::CTX + 33 * 8, 0),
        (tcb::PRIO, ROOT_PRIORITY),
        (tcb::IPC_BUF, IPC_BUFFER),
        (tcb::reg(6), IPC_BUFFER),
        (tcb::VTTBR, task.vttbr()),
        (tcb::TASK, t.slot as u64),
        // On the core the payload names, if that core is online.
        (tcb::CORE, {
            let online = crate::arch::cpu::ONLINE.load(core::sync::atomic::Ordering::Acquire);
            if (t.core as usize) < online {
                t.core as u64
            } else {
                0
            }
        }),
        (tcb::STATE, State::Ready as u64),
    ];
    for (off, v) in regs {
        KObj.wr(task.tcb + off, v);
    }
    cspace::give_root(&task.cspace, task.tcb);
    Ok(task)
}

fn populate(task: &Task, elf: &Elf<'static>) -> Result<(), LoadError> {
    for seg in elf.segments() {
        let perms = Perms {
            read: true,
            write: seg.flags & PF_W != 0,
            exec: seg.flags & PF_X != 0,
        };
        let first = seg.vaddr & !(PAGE_SIZE - 1);
        let end = seg.vaddr + seg.mem_size;
        let mut page = first;
        while page < end {
            let frame = mem::alloc_zeroed().ok_or(LoadError::NoMemory)?;
            // Copy the part of the file data that falls into this page.
            let lo = page.max(seg.vaddr);
            let hi = (page + PAGE_SIZE).min(seg.vaddr + seg.data.len() as u64);
            if lo < hi {
                let src = &seg.data[(lo - seg.vaddr) as usize..(hi - seg.vaddr) as usize];
                mem::write_frame(frame, (lo - page) as usize, src);
            }
            if let Err(e) = map(task.root, page, frame, perms) {
                mem::free(frame);
                return Err(LoadError::Map(e));
            }
            page += PAGE_SIZE;
        }
    }
    let buf = mem::alloc_zeroed().ok_or(LoadError::NoMemory)?;
    if let Err(e) = map(task.root, IPC_BUFFER, buf, Perms::RW) {
        mem::free(buf);
        return Err(LoadError::Map(e));
    }
    for i in 1..=STACK_PAGES {
        let frame = mem::alloc_zeroed().ok_or(LoadError::NoMemory)?;
        if let Err(e) = map(task.root, STACK_TOP - i * PAGE_SIZE, frame, Perms::RW) {
            mem::free(frame);
            return Err(LoadError::Map(e));
        }
    }
    Ok(())
}

/// Unmaps and frees everything the task owns and drops its TLB entries everywhere.
/// `alone`: it is the only task, so every thread of the system is its thread.
fn destroy(task: &Task, alone: bool) {
    sched::forget_vttbr();
    // Its threads go first (they may be queued anywhere), then its capabilities (the
    // threads it made stop as their TCBs go with them).
    if alone {
        sched::reset();
    } else {
        sched::stop(task.tcb, 0);
    }
    cspace::take_root(task.tcb);
    cspace::destroy(&task.cspace);
    mem::free(PhysAddr(task.tcb));
    for i in 0..cspace::ROOT_BYTES / PAGE_SIZE {
        mem::free(PhysAddr(task.cnode_frames.0 + i * PAGE_SIZE));
    }
    // Frames the task mapped with FRAME_MAP are objects of their own: unmapped, not
    // freed.
    crate::vm::forget_own_space(task.root.0);
    sysreg_write!("vttbr_el2", task.vttbr());
    isb();
    let mut leaf = |pa: PhysAddr| {
        if !crate::vm::is_mapped_frame(pa.0) {
            mem::free(pa)
        }
    };
    stage2::teardown(&IdentityMem, task.root, &mut leaf, &mut mem::free);
    // The task can no longer run anywhere; drop every cached translation of its VMID.
    tlbi_vmid_all_cores();
    mem::free(task.root);
    mem::free(PhysAddr(task.root.0 + PAGE_SIZE));
}

/// Copies `len` bytes at `addr` of the address space with stage-2 root `root` into
/// `buf`, page by page, through its tables. Fails unless every byte is mapped readable.
pub fn copy_from_space(root: PhysAddr, addr: u64, buf: &mut [u8]) -> bool {
    let mut done = 0usize;
    while done < buf.len() {
        let Some(a) = addr.checked_add(done as u64) else {
            return false;
        };
        let Some((pa, perms)) = stage2::translate(&IdentityMem, root, Ipa(a)) else {
            return false;
        };
        if !perms.read {
            return false;
        }
        let n = ((PAGE_SIZE - pa.page_offset()) as usize).min(buf.len() - done);
        mem::read_frame(pa, &mut buf[done..done + n]);
        done += n;
    }
    true
}

/// The boot tasks: one after the other (the first gets all free RAM), or, when the
/// payload gives any task RAM of its own, all at once from boot (see
/// `kcore::bootimage`).
pub struct Runner {
    payload: Option<Payload<'static>>,
    /// RAM handed out as Untyped memory.
    untyped: heapless::Vec<PhysRange, { kcore::frames::MAX_RANGES }>,
    next: usize,
    /// The tasks running now.
    pub running: heapless::Vec<Task, { kcore::bootimage::MAX_TASKS }>,
    /// Tasks that ended by a fault.
    pub faulted: usize,
    /// All tasks start at boot.
    concurrent: bool,
    /// Per payload slot: the memory it was given (all-at-once mode), and how many times
    /// it has been started again after a fault.
    given: [heapless::Vec<PhysRange, { kcore::frames::MAX_RANGES }>; kcore::bootimage::MAX_TASKS],
    restarted: [u32; kcore::bootimage::MAX_TASKS],
}

/// The boot tasks.
pub static RUNNER: SpinLock<Runner> = SpinLock::new(Runner {
    payload: None,
    untyped: heapless::Vec::new(),
    next: 0,
    running: heapless::Vec::new(),
    faulted: 0,
    concurrent: false,
    given: [const { heapless::Vec::new() }; kcore::bootimage::MAX_TASKS],
    restarted: [0; kcore::bootimage::MAX_TASKS],
});

/// How a task ended.
pub enum End {
    /// Exit syscall with this status.
    Exited(u64),
    /// Killed by a fault (already reported).
    Faulted,
}

impl Runner {
    /// Installs the payload and the RAM that becomes Untyped memory.
    pub fn set_payload(&mut self, p: Payload<'static>, untyped: &[PhysRange]) {
        self.payload = Some(p);
        self.untyped = untyped.iter().copied().collect();
        self.concurrent = p.tasks().any(|t| t.memory != [0, 0]);
    }

    /// The running task whose first thread is `tcb`.
    pub fn task_of(&self, tcb: u64) -> Option<&Task> {
        self.running.iter().find(|t| t.tcb == tcb)
    }

    /// Ends the task whose first thread is `tcb` and frees what it had; then starts the
    /// next one (one-after-the-other mode).
    pub fn end(&mut self, tcb: u64, how: End) {
        let Some(i) = self.running.iter().position(|t| t.tcb == tcb) else {
            return;
        };
        let t = self.running.swap_remove(i);
        let faulted = matches!(how, End::Faulted);
        match how {
            End::Exited(status) => {
                defmt::info!("task {=str} exited with status {=u64}", t.name, status)
            }
            End::Faulted => self.faulted += 1,
        }
        destroy(&t, !self.concurrent);
        if !self.concurrent {
            self.load_next();
        } else if faulted {
            self.restart(t.slot);
        }
    }

    /// Starts the task of payload slot `slot` again (it ended by a fault) with the same
    /// memory, if its restart budget allows; its `x0` carries the restart's number in
    /// bits 63:56.
    fn restart(&mut self, slot: usize) {
        let Some(bt) = self.payload.and_then(|p| p.task(slot)) else {
            return;
        };
        let n = self.restarted[slot] + 1;
        if n > bt.restarts {
            if bt.restarts > 0 {
                defmt::warn!(
                    "task {=str} ended by a fault again: its {=u32} restart(s) are used up",
                    bt.name,
                    bt.restarts
                );
            }
            return;
        }
        self.restarted[slot] = n;
        defmt::warn!(
            "task {=str} ended by a fault; starting it again (restart {=u32} of {=u32})",
            bt.name,
            n,
            bt.restarts
        );
        let mut again = bt;
        again.arg |= (n as u64) << kcore::bootimage::RESTART_SHIFT;
        let mem = self.given[slot].clone();
        self.start(&again, &mem, slot == 0);
    }

    fn start(&mut self, bt: &BootTask<'static>, untyped: &[PhysRange], control: bool) {
        match load(bt, untyped, control) {
            Ok(t) => {
                defmt::info!(
                    "task {=str} started at EL0: entry {=u64:#x}, VMID {=u16}, arg {=u64}",
                    t.name,
                    KObj.rd(t.tcb + tcb::CTX + 32 * 8),
                    t.vmid,
                    bt.arg
                );
                FIRST_SYSCALL_PENDING[t.slot].store(t.tcb, core::sync::atomic::Ordering::Relaxed);
                sched::ipc(|m, w| w(m, t.tcb));
                let _ = self.running.push(t);
            }
            Err(e) => defmt::error!("task {=str} not started: {}", bt.name, e),
        }
    }

    /// Starts the next task (one after the other), or every task (all at once).
    pub fn load_next(&mut self) {
        let Some(p) = self.payload else { return };
        if self.concurrent {
            if self.next > 0 {
                return;
            }
            self.next = p.len();
            // Each task's own blocks first, then the first task gets the rest.
            let mut own: [heapless::Vec<PhysRange, 2>; kcore::bootimage::MAX_TASKS] =
                core::array::from_fn(|_| heapless::Vec::new());
            for bt in p.tasks() {
                for bits in bt.memory.into_iter().filter(|&b| b != 0) {
                    match kcore::frames::carve_aligned(&mut self.untyped, bits) {
                        Some(r) => {
                            let _ = own[bt.slot].push(r);
                        }
                        None => defmt::error!(
                            "task {=str}: no free aligned block of 2^{=u32} bytes left",
                            bt.name,
                            bits
                        ),
                    }
                }
            }
            for bt in p.tasks() {
                let mut mine: heapless::Vec<PhysRange, { kcore::frames::MAX_RANGES }> =
                    own[bt.slot].iter().copied().collect();
                if bt.slot == 0 {
                    for r in self.untyped.iter() {
                        let _ = mine.push(*r);
                    }
                }
                self.given[bt.slot] = mine.clone();
                self.start(&bt, &mine, bt.slot == 0);
            }
            return;
        }
        while let Some(bt) = p.task(self.next) {
            self.next += 1;
            // Only the first task gets the Untyped memory (it is never handed out twice).
            let untyped: heapless::Vec<PhysRange, { kcore::frames::MAX_RANGES }> = if bt.slot == 0 {
                self.untyped.iter().copied().collect()
            } else {
                heapless::Vec::new()
            };
            let before = self.running.len();
            self.start(&bt, &untyped, bt.slot == 0);
            if self.running.len() > before {
                return;
            }
        }
    }
}

/// Leaves the kernel: runs whatever thread is due (see `sched::resume`); when no boot
/// task is left, shuts the kernel down.
pub fn run_current(runner: crate::sync::Guard<'_, Runner>) -> ! {
    if runner.running.is_empty() {
        let faulted = runner.faulted;
        drop(runner);
        defmt::info!(
            "all boot tasks finished ({=usize} ended by a fault); kernel shutting down",
            faulted
        );
        crate::arch::psci::exit(0)
    }
    drop(runner);
    sched::resume()
}
