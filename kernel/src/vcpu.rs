//! VCPU objects and the world switch.
//!
//! A VCPU (4 KiB, retyped from Untyped) holds a guest's EL1 state: the system registers
//! the guest can observe, its virtual timer, the GICv3 virtual CPU interface and a queue
//! of virtual interrupts waiting for a list register. Bound to a TCB, it turns that thread
//! into a virtual CPU: its saved general registers (the TCB context) are the guest's, and
//! when the scheduler picks it the core returns to EL1 instead of EL0.
//!
//! Switching: the EL1 state is saved when the thread leaves the core and loaded when it
//! comes back (`sched::resume` calls [`switch`] only when the thread changes), so a VMM
//! always finds it in memory while its guest waits for a fault reply. FP/SIMD registers
//! belong to the thread, not the VCPU, and are switched lazily for every thread
//! ([`fp_trap`]).
//!
//! Layout (byte offsets): 0x000 bound TCB; 0x010 the [`EL1_REGS`] system registers in
//! `bulkhead_sys::vcpu_reg` order; 0x100 the virtual CPU interface (ICH_HCR, ICH_VMCR,
//! ICH_AP0R0, ICH_AP1R0, 16 list registers); 0x200 pending virtual interrupts (1024-bit
//! bitmap); 0x280 "anything pending" word; 0x400 their priorities (one byte each).

use core::sync::atomic::{AtomicU64, Ordering};

use bulkhead_sys::vcpu_reg;
use kcore::thread::{tcb, ObjMem};

use crate::arch::virt::{self, EL1_REGS, FP_WORDS, VGIC_WORDS};
use crate::sched::KObj;

/// Bound TCB.
const BOUND: u64 = 0x000;
/// Saved system registers.
const REGS: u64 = 0x010;
/// Saved virtual CPU interface.
const VGIC: u64 = 0x100;
/// Pending virtual interrupts.
const PENDING: u64 = 0x200;
/// Non-zero when a bit of `PENDING` may be set.
const ANY_PENDING: u64 = 0x280;
/// Priorities of pending virtual interrupts (bytes).
const PRIORITIES: u64 = 0x400;

/// Highest virtual INTID (exclusive).
pub const MAX_VIRQ: u64 = 1020;

/// HCR_EL2 while a guest runs: VM | SWIO | PTW | FMO | IMO | AMO | FB | BSU = inner
/// shareable | TSC | TACR | TSW | RW. TGE and DC are clear, so the guest's own stage 1 is
/// used; FB and BSU make its TLB and barrier maintenance broadcast; TSC sends its SMCs
/// here (its VMM emulates firmware); TSW traps data-cache maintenance by set/way, which
/// would act on caches shared with other VMs (its VMM treats it as done: with the caches
/// coherent, by-set/way operations have nothing to do for a guest). WFI/WFE are not
/// trapped: a waiting guest waits on its core (a later change traps them and blocks the
/// thread).
pub const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 9)
    | (1 << 10)
    | (1 << 19)
    | (1 << 21)
    | (1 << 22)
    | (1 << 31);

/// CNTHCTL_EL2 for native threads: EL0/EL1 may use the physical counter and timer (each
/// thread has its own, see `sched::switch_timer`).
pub const CNTHCTL_NATIVE: u64 = 0b11;
/// CNTHCTL_EL2 for guests: physical counter readable, physical timer trapped (a guest
/// uses its virtual timer; the physical one belongs to the kernel's threads).
pub const CNTHCTL_GUEST: u64 = 0b01;

/// The PSTATE a VCPU starts in: EL1h with D, A, I, F masked (as after a reset).
pub const SPSR_EL1H: u64 = 0x3c5;

/// The VCPU bound to thread `t` (0 = none).
pub fn of(t: u64) -> u64 {
    if t == 0 {
        0
    } else {
        KObj.rd(t + tcb::VCPU)
    }
}

/// The thread bound to VCPU `v` (0 = none).
pub fn bound(v: u64) -> u64 {
    KObj.rd(v + BOUND)
}

fn regs_of(v: u64) -> [u64; EL1_REGS] {
    core::array::from_fn(|i| KObj.rd(v + REGS + 8 * i as u64))
}

/// A freshly retyped VCPU: its MPIDR reads as the VCPU's own number, everything else is
/// architectural reset state (zero), SCTLR_EL1 with its RES1 bits.
pub fn init(v: u64, mpidr: u64) {
    KObj.wr(v + REGS + 8 * vcpu_reg::SCTLR_EL1, 0x30d0_0800);
    KObj.wr(v + REGS + 8 * vcpu_reg::VMPIDR, (1 << 31) | mpidr);
}

/// Loads or saves state at a thread switch on this core: `prev` (0 = none) leaves,
/// `next` (0 = idle) comes. Called with this core's scheduler lock held.
pub fn switch(prev: u64, next: u64) {
    let pv = of(prev);
    if pv != 0 {
        let mut r = [0u64; EL1_REGS];
        virt::save_el1(&mut r);
        for (i, w) in r.iter().enumerate() {
            KObj.wr(pv + REGS + 8 * i as u64, *w);
        }
        let mut g = [0u64; VGIC_WORDS];
        virt::save_vgic(&mut g);
        for (i, w) in g.iter().enumerate() {
            KObj.wr(pv + VGIC + 8 * i as u64, *w);
        }
    }
    let nv = of(next);
    if nv != 0 {
        virt::restore_el1(&regs_of(nv));
        let g: [u64; VGIC_WORDS] = core::array::from_fn(|i| KObj.rd(nv + VGIC + 8 * i as u64));
        virt::restore_vgic(&g);
    }
    if (pv != 0) != (nv != 0) || prev == 0 {
        virt::set_cnthctl(if nv != 0 {
            CNTHCTL_GUEST
        } else {
            CNTHCTL_NATIVE
        });
        virt::trap_debug(nv != 0);
        if nv == 0 {
            // A guest's CPACR_EL1 may disable FP/SIMD for EL1 and EL0; native threads
            // run at EL0 under it too, so it goes back to "no traps".
            virt::native_el1();
        }
    }
}

fn pending_word(v: u64, i: u64) -> &'static AtomicU64 {
    crate::mem::atomic_word(v + PENDING + 8 * i)
}

/// Queues virtual interrupt `virq` with `prio` for VCPU `v`; it reaches a list register
/// at the guest's next entry.
pub fn queue(v: u64, virq: u64, prio: u8) {
    let shift = (virq % 8) * 8;
    let pw = v + PRIORITIES + (virq / 8) * 8;
    let old = KObj.rd(pw);
    KObj.wr(pw, (old & !(0xff << shift)) | ((prio as u64) << shift));
    pending_word(v, virq / 64).fetch_or(1 << (virq % 64), Ordering::Release);
    crate::mem::atomic_word(v + ANY_PENDING).store(1, Ordering::Release);
}

/// Moves queued virtual interrupts of the running VCPU `v` into free list registers
/// (called on every return to the guest). What does not fit stays queued.
pub fn flush_pending(v: u64) {
    let any = crate::mem::atomic_word(v + ANY_PENDING);
    if any.load(Ordering::Acquire) == 0 {
        return;
    }
    any.store(0, Ordering::Relaxed);
    let nlr = virt::list_registers().min(16);
    let mut free = virt::empty_lrs() & ((1u64 << nlr) - 1);
    // List registers already holding an interrupt: a vINTID must never be in two of them
    // (the GIC architecture makes that UNPREDICTABLE), so a pending edge that is already
    // pending there merges with it, and one that is active there becomes active and
    // pending in the same register.
    let mut occupied = !free & ((1u64 << nlr) - 1);
    for i in 0..(MAX_VIRQ.div_ceil(64)) {
        let w = pending_word(v, i);
        let mut bits = w.load(Ordering::Acquire);
        while bits != 0 {
            if free == 0 {
                any.store(1, Ordering::Relaxed);
                return;
            }
            let b = bits.trailing_zeros() as u64;
            bits &= bits - 1;
            let virq = i * 64 + b;
            if w.fetch_and(!(1 << b), Ordering::AcqRel) & (1 << b) == 0 {
                continue;
            }
            let held = (0..nlr)
                .filter(|n| occupied & (1 << n) != 0)
                .map(|n| (n, virt::read_lr(n)))
                .find(|(_, val)| val & 0xffff_ffff == virq);
            if let Some((n, val)) = held {
                if val & (1 << 62) == 0 {
                    virt::write_lr(n, val | (1 << 62));
                }
                continue;
            }
            let lr = free.trailing_zeros() as usize;
            free &= free - 1;
            occupied |= 1 << lr;
            let prio = (KObj.rd(v + PRIORITIES + (virq / 8) * 8) >> ((virq % 8) * 8)) & 0xff;
            // State pending (01), group 1, priority, virtual INTID (ICH_LR<n>_EL2).
            virt::write_lr(lr, (1 << 62) | (1 << 60) | (prio << 48) | virq);
        }
    }
}

/// The virtual timer of the guest on this core fired (PPI 27): mask it and queue the
/// interrupt for that guest. The guest unmasks its timer when it programs the next event
/// (CNTV_CTL_EL0.IMASK), as Linux does.
pub fn vtimer_fired(running: u64) {
    let v = of(running);
    let ctl = crate::arch::virt::vtimer_mask();
    if v != 0 && ctl & 1 != 0 {
        queue(v, 27, 0xa0);
    }
}

/// Reads saved system register `i` of `v`.
pub fn read_reg(v: u64, i: u64) -> Option<u64> {
    (i < vcpu_reg::COUNT).then(|| KObj.rd(v + REGS + 8 * i))
}

/// Writes saved system register `i` of `v` (its thread is not running).
pub fn write_reg(v: u64, i: u64, val: u64) -> bool {
    if i >= vcpu_reg::COUNT {
        return false;
    }
    KObj.wr(v + REGS + 8 * i, val);
    true
}

/// Binds VCPU `v` and thread `t` (both unbound).
pub fn bind(v: u64, t: u64) {
    KObj.wr(v + BOUND, t);
    KObj.wr(t + tcb::VCPU, v);
    KObj.wr(t + tcb::CTX + 33 * 8, SPSR_EL1H);
}

/// Undoes [`bind`] (the thread is stopped by the caller first).
pub fn unbind(v: u64) {
    let t = bound(v);
    if t != 0 {
        KObj.wr(t + tcb::VCPU, 0);
        KObj.wr(t + tcb::CTX + 33 * 8, 0);
    }
    KObj.wr(v + BOUND, 0);
}

/// Lazy FP/SIMD switching: the thread that trapped on an FP instruction gets its
/// registers; the previous owner's are saved first. `owner` is this core's current owner
/// (kept in its scheduler state); returns the new owner.
pub fn fp_trap(owner: u64, running: u64) -> u64 {
    let mut a = [0u64; FP_WORDS];
    if owner != 0 {
        virt::fp_save(&mut a);
        for (i, w) in a.iter().enumerate() {
            KObj.wr(owner + tcb::FP + 8 * i as u64, *w);
        }
    }
    for (i, w) in a.iter_mut().enumerate() {
        *w = KObj.rd(running + tcb::FP + 8 * i as u64);
    }
    virt::fp_restore(&a);
    running
}
