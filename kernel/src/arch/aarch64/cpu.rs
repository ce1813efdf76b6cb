//! Per-core state and the saved register context of a lower level.
//!
//! Layout contract with `entry.S`: `PerCpu` word 0 is the pointer to the running task's
//! `UserContext`, word 1 the top of this core's stack; `UserContext` holds x0..x30 at
//! 0..248, SP_EL0 at 248, ELR_EL2 at 256, SPSR_EL2 at 264. The assertions below pin it.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use static_assertions::const_assert_eq;

use super::regs::{sysreg_read, sysreg_write};

/// Cores the kernel has stacks and records for (must match `link.x` and `entry.S`).
pub const MAX_CPUS: usize = 8;
/// Bytes per core in the stack area (must match `link.x` and `entry.S`): a 4 KiB guard
/// page at the bottom, then the stack.
pub const STACK_SIZE: u64 = 0x9000;
/// Bytes of the separate stack a core reports a fatal kernel exception on.
const FATAL_STACK: usize = 0x2000;

// The board may have fewer cores than the kernel has stacks and records for.
static_assertions::const_assert!(<crate::ThisBoard as kcore::board::Board>::MAX_CPUS <= MAX_CPUS);

/// A lower level's general-purpose register state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UserContext {
    /// x0..x30.
    pub x: [u64; 31],
    /// SP_EL0.
    pub sp: u64,
    /// Where execution resumes (ELR_EL2).
    pub elr: u64,
    /// Saved PSTATE (SPSR_EL2).
    pub spsr: u64,
}

const_assert_eq!(core::mem::offset_of!(UserContext, sp), 248);
const_assert_eq!(core::mem::offset_of!(UserContext, elr), 256);
const_assert_eq!(core::mem::offset_of!(UserContext, spsr), 264);
const_assert_eq!(core::mem::size_of::<UserContext>(), 272);

/// One core's record. Only its own core writes the context pointer and stack top.
#[repr(C)]
pub struct PerCpu {
    /// The running thread's context (entry.S saves lower-level registers here). Written
    /// by its own core, or by another core that stops the thread (it then points it at
    /// this core's scratch context, so the stopped thread's TCB is never written again).
    pub ctx: AtomicPtr<UserContext>,
    /// Top of this core's kernel stack.
    pub stack_top: u64,
    /// Top of the stack for fatal kernel exceptions (a kernel stack overflow is reported
    /// from there).
    pub fatal_stack_top: u64,
    /// Logical index (0 = boot core).
    pub index: usize,
    /// MPIDR affinity of this core.
    pub mpidr: AtomicU64,
    /// Timer ticks seen.
    pub ticks: AtomicU64,
    /// SGIs received.
    pub sgis: AtomicU32,
    /// Saved DAIF while this core holds the log lock.
    pub log_daif: AtomicU64,
}

const_assert_eq!(core::mem::offset_of!(PerCpu, ctx), 0);
const_assert_eq!(core::mem::offset_of!(PerCpu, stack_top), 8);
const_assert_eq!(core::mem::offset_of!(PerCpu, fatal_stack_top), 16);

// SAFETY: every field is atomic or immutable after `init_this`.
unsafe impl Sync for PerCpu {}

extern "C" {
    static __stacks_end: u8;
}

const fn percpu(index: usize) -> PerCpu {
    PerCpu {
        ctx: AtomicPtr::new(core::ptr::null_mut()),
        stack_top: 0,
        fatal_stack_top: 0,
        index,
        mpidr: AtomicU64::new(0),
        ticks: AtomicU64::new(0),
        sgis: AtomicU32::new(0),
        log_daif: AtomicU64::new(0),
    }
}

struct PerCpuArray(UnsafeCell<[PerCpu; MAX_CPUS]>);
// SAFETY: each element is written (stack_top) only by its own core before TPIDR_EL2
// points at it; afterwards the record is shared through its Sync fields only.
unsafe impl Sync for PerCpuArray {}

static PERCPU: PerCpuArray = PerCpuArray(UnsafeCell::new([
    percpu(0),
    percpu(1),
    percpu(2),
    percpu(3),
    percpu(4),
    percpu(5),
    percpu(6),
    percpu(7),
]));

/// Set once the boot core has pointed TPIDR_EL2 at its record. Before that (and forever
/// if the kernel was entered below EL2, where TPIDR_EL2 cannot be read) `this()` is core 0.
static TPIDR_READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Cores that finished bring-up.
pub static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Sets up this core's record and points TPIDR_EL2 at it. Called once per core, first
/// thing on entry.
pub fn init_this(index: usize) {
    assert!(index < MAX_CPUS);
    let end = core::ptr::addr_of!(__stacks_end) as u64;
    // SAFETY: element `index` is written only here, by core `index` itself, before any
    // other code can reach it through TPIDR_EL2; other cores only touch their own.
    let rec = unsafe { &mut (*PERCPU.0.get())[index] };
    rec.stack_top = end - index as u64 * STACK_SIZE;
    // SAFETY: only the address of this core's element is taken.
    let fatal = unsafe { (*FATAL_STACKS.0.get()).as_ptr().add(index) } as u64;
    rec.fatal_stack_top = fatal + FATAL_STACK as u64;
    rec.mpidr.store(
        sysreg_read!("mpidr_el1") & 0xff_00ff_ffff,
        Ordering::Relaxed,
    );
    sysreg_write!("tpidr_el2", rec as *mut PerCpu as u64);
    TPIDR_READY.store(true, Ordering::Release);
}

/// This core's record.
pub fn this() -> &'static PerCpu {
    if !TPIDR_READY.load(Ordering::Acquire) {
        return get(0);
    }
    let p = sysreg_read!("tpidr_el2") as *const PerCpu;
    if p.is_null() {
        return get(0);
    }
    // SAFETY: TPIDR_EL2 is set only by `init_this` to an element of PERCPU.
    unsafe { &*p }
}

/// The record of core `index`.
pub fn get(index: usize) -> &'static PerCpu {
    // SAFETY: shared access to an element; fields mutated after init are atomic.
    unsafe { &(*PERCPU.0.get())[index] }
}

/// This core's logical index (0 before `init_this`).
pub fn index() -> usize {
    this().index
}

/// Makes `ctx` the context that lower-level exceptions on this core save into.
pub fn set_context(ctx: *mut UserContext) {
    this().ctx.store(ctx, Ordering::Release);
}

#[repr(C, align(16))]
struct FatalStacks(UnsafeCell<[[u8; FATAL_STACK]; MAX_CPUS]>);
// SAFETY: element `i` is used only by core `i`, as a stack, after a fatal exception.
unsafe impl Sync for FatalStacks {}
static FATAL_STACKS: FatalStacks = FatalStacks(UnsafeCell::new([[0; FATAL_STACK]; MAX_CPUS]));

struct Scratch(UnsafeCell<[UserContext; MAX_CPUS]>);
// SAFETY: element `i` is written only by core `i`'s entry code, and only after another
// core pointed core `i`'s context at it; nothing reads it.
unsafe impl Sync for Scratch {}
static SCRATCH: Scratch = Scratch(UnsafeCell::new(
    [UserContext {
        x: [0; 31],
        sp: 0,
        elr: 0,
        spsr: 0,
    }; MAX_CPUS],
));

/// The TCB of the thread this core runs (its save area), or 0 when idle or when the
/// thread was stopped from another core. Lock-free: only this core sets its save area to
/// a TCB, and another core only ever redirects it to the scratch area.
pub fn current_thread() -> u64 {
    let me = this();
    let p = me.ctx.load(Ordering::Acquire) as u64;
    // SAFETY: only the address of this core's scratch element is taken.
    let scratch = unsafe { (*SCRATCH.0.get()).as_ptr().add(me.index) } as u64;
    if p == scratch {
        0
    } else {
        p
    }
}

/// Points core `index`'s save area at its scratch context: the thread it runs was
/// stopped and its TCB must not be written again.
pub fn redirect_to_scratch(index: usize) {
    // SAFETY: only the address of the element is taken.
    let p = unsafe { (*SCRATCH.0.get()).as_mut_ptr().add(index) };
    get(index).ctx.store(p, Ordering::Release);
}
