//! Attack 6: storms (many exits in a row, each answered correctly), vCPU 1's storm
//! alongside vCPU 0, and the soak: rounds of attacks for as long as the command line
//! says (`attack.soak=SECONDS`), while the other VM runs.
//!
//! WFI is not trapped: a guest waits on its own core until an interrupt comes. The WFI
//! storm arms the virtual timer a little ahead each time, so every wait ends with the
//! timer's interrupt, which the kernel takes at EL2 and injects (INTID 27).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{self, hvc, smc, trapped};
use crate::console::verdict;
use crate::gic::{self, VTIMER};
use crate::memory::OTHER_RAM;
use crate::psci::{self, NOT_SUPPORTED, VERSION};

pub const HVCS: u64 = 10_000;
const SMCS: u64 = 2_000;
const WFIS: u64 = 2_000;
const WFES: u64 = 10_000;
const ABORTS: u64 = 2_000;

/// Runs the storms of attack 6 on vCPU 0.
pub fn run() {
    let version = hvc(VERSION, 0, 0, 0);
    let t0 = arch::now();
    let mut wrong = 0;
    for _ in 0..HVCS {
        wrong += (hvc(VERSION, 0, 0, 0) != version) as u64;
    }
    let ms = arch::micros_since(t0) / 1000;
    verdict(
        "hvc-storm",
        wrong == 0,
        format_args!(
            "{} PSCI_VERSION calls by HVC in {} ms, {} wrong answers",
            HVCS, ms, wrong
        ),
        "every call answered",
    );

    let t0 = arch::now();
    let mut wrong = 0;
    for i in 0..SMCS {
        wrong += (smc(0x8200_0000 | (i & 0xffff), i, 0, 0) != NOT_SUPPORTED) as u64;
    }
    let ms = arch::micros_since(t0) / 1000;
    verdict(
        "smc-storm",
        wrong == 0,
        format_args!(
            "{} unknown SiP calls by SMC in {} ms, {} not NOT_SUPPORTED",
            SMCS, ms, wrong
        ),
        "NOT_SUPPORTED for every one",
    );

    let t0 = arch::now();
    let (mut fired, mut waits, mut others) = (0u64, 0u64, 0u64);
    for _ in 0..WFIS {
        arch::timer_in(arch::ticks_us(20));
        let start = arch::now();
        loop {
            arch::wfi();
            waits += 1;
            let i = arch::ack();
            if i < 1020 {
                arch::eoi(i);
                if i == VTIMER {
                    fired += 1;
                    break;
                }
                others += 1;
            }
            if arch::micros_since(start) > 1_000_000 {
                break;
            }
        }
    }
    arch::timer_off();
    let ms = arch::micros_since(t0) / 1000;
    verdict(
        "wfi-storm",
        fired == WFIS && others == 0,
        format_args!(
            "{} WFIs woken by the virtual timer in {} ms: {} timer interrupts, {} waits, {} other interrupts",
            WFIS, ms, fired, waits, others
        ),
        "every wait ended by its timer interrupt",
    );

    let t0 = arch::now();
    for _ in 0..WFES {
        arch::wfe_local();
    }
    verdict(
        "wfe-storm",
        true,
        format_args!(
            "{} SEVL+WFE pairs in {} ms",
            WFES,
            arch::micros_since(t0) / 1000
        ),
        "completion",
    );

    let t0 = arch::now();
    let mut aborted = 0;
    for i in 0..ABORTS {
        let ipa = OTHER_RAM[(i % 3) as usize] + 8 * i;
        if matches!(trapped(|| { arch::read64(ipa); }), Some(f) if f.is_sea(0x25)) {
            aborted += 1;
        }
    }
    verdict(
        "abort-storm",
        aborted == ABORTS,
        format_args!(
            "{} reads outside RAM in {} ms: {} external aborts",
            ABORTS,
            arch::micros_since(t0) / 1000,
            aborted
        ),
        "an external abort for every one",
    );
}

/// vCPU 1's work: hypercalls, trapped SGIs to nobody and set/way maintenance until
/// vCPU 0 says stop (and, unless `attack.vcpu1-aborts=0`, stores outside RAM), then
/// CPU_OFF.
static STOP: AtomicU64 = AtomicU64::new(0);
/// Whether vCPU 1 also makes stores outside RAM (set by vCPU 0 before CPU_ON).
pub static WORKER_ABORTS_ON: AtomicU64 = AtomicU64::new(0);
static WORKER_CALLS: AtomicU64 = AtomicU64::new(0);
static WORKER_ABORTS: AtomicU64 = AtomicU64::new(0);
static WORKER_BAD: AtomicU64 = AtomicU64::new(0);
static WORKER_STALE: AtomicU64 = AtomicU64::new(0);
static WORKER_DONE: AtomicU64 = AtomicU64::new(0);

/// vCPU 1 after CPU_ON: the context id in `ctx`.
pub fn worker(ctx: u64) -> ! {
    psci::STARTED.store(ctx, Ordering::Release);
    let aborts_on = WORKER_ABORTS_ON.load(Ordering::Acquire) != 0;
    let (mut calls, mut aborts, mut stale, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut i = 0u64;
    while STOP.load(Ordering::Acquire) == 0 {
        i += 1;
        if hvc(VERSION, 0, 0, 0) >> 16 >= 1 {
            calls += 1;
        } else {
            bad += 1;
        }
        arch::sgi1r(gic::sgi1r(gic::SGI_SELF, 0, 0, 0, 1 << 3));
        if trapped(|| {
            // SAFETY: trapped by HCR_EL2.TSW (see `sysreg`); no memory effects here.
            unsafe { core::arch::asm!("dc cisw, {}", in(reg) i << 4, options(nostack)) }
        })
        .is_some()
        {
            bad += 1;
        }
        if aborts_on {
            let ipa = OTHER_RAM[(i % 3) as usize];
            let mut at = 0;
            match trapped(|| at = arch::store_at(ipa, i)) {
                Some(f) if f.is_sea(0x25) && f.write() && f.elr == at => aborts += 1,
                // The abort came with ELR_EL1 as the previous exception return left it.
                Some(f) if f.elr == at + 4 => stale += 1,
                _ => bad += 1,
            }
        }
        WORKER_CALLS.store(calls, Ordering::Relaxed);
        WORKER_ABORTS.store(aborts, Ordering::Relaxed);
        WORKER_STALE.store(stale, Ordering::Relaxed);
        WORKER_BAD.store(bad, Ordering::Relaxed);
    }
    WORKER_DONE.store(1, Ordering::Release);
    hvc(psci::CPU_OFF, 0, 0, 0);
    loop {
        arch::wfi();
    }
}

/// The soak: rounds of attacks until `seconds` have passed, then vCPU 1 is stopped and
/// must be OFF. Reports both.
pub fn soak(seconds: u64) {
    let t0 = arch::now();
    let mut rounds = 0u64;
    let mut bad = 0u64;
    while arch::micros_since(t0) < seconds * 1_000_000 {
        rounds += 1;
        if !crate::memory::soak_round() {
            bad += 1;
        }
        for _ in 0..50 {
            arch::sgi1r(gic::sgi1r(gic::SGI_SELF, 0, 0, 1, 1));
            if hvc(0xc600_0002, 0, 0, 0) != NOT_SUPPORTED {
                bad += 1;
            }
        }
        arch::timer_in(arch::ticks_us(500));
        if !gic::wait_for(VTIMER, 1_000_000) {
            bad += 1;
        }
    }
    arch::timer_off();
    let (stray, others) = gic::drain(gic::SGI_SELF);
    verdict(
        "soak",
        rounds > 0 && bad == 0 && stray == 0 && others == 0,
        format_args!(
            "{} rounds in {} s (aborts at every other RAM block, SGIs to another cluster, test hypercalls, a timer wait): {} wrong",
            rounds, seconds, bad + stray + others
        ),
        "every access aborted, every call refused, every wait woken, no stray SGI",
    );

    STOP.store(1, Ordering::Release);
    let t1 = arch::now();
    while WORKER_DONE.load(Ordering::Acquire) == 0 && arch::micros_since(t1) < 2_000_000 {
        core::hint::spin_loop();
    }
    let mut state = hvc(psci::AFFINITY_INFO, 1, 0, 0);
    while state == 0 && arch::micros_since(t1) < 3_000_000 {
        state = hvc(psci::AFFINITY_INFO, 1, 0, 0);
    }
    let (calls, aborts, stale, wrong) = (
        WORKER_CALLS.load(Ordering::Relaxed),
        WORKER_ABORTS.load(Ordering::Relaxed),
        WORKER_STALE.load(Ordering::Relaxed),
        WORKER_BAD.load(Ordering::Relaxed),
    );
    verdict(
        "vcpu1-storm",
        WORKER_DONE.load(Ordering::Acquire) == 1 && calls > 0 && wrong == 0 && state == 1,
        format_args!(
            "vCPU 1 alongside: {} hypercalls, trapped SGIs and set/way operations, {} wrong; after CPU_OFF AFFINITY_INFO says {}",
            calls,
            wrong,
            if state == 1 { "OFF" } else { "not OFF" }
        ),
        "all answered, then OFF (1)",
    );
    if WORKER_ABORTS_ON.load(Ordering::Relaxed) == 0 {
        crate::console::skipped("vcpu1-aborts", "turned off by attack.vcpu1-aborts=0");
    } else {
        verdict(
            "vcpu1-aborts",
            aborts > 0 && stale == 0,
            format_args!(
                "vCPU 1's stores outside RAM: {} external aborts as injected, {} with a stale ELR_EL1",
                aborts, stale
            ),
            "every abort with ELR_EL1 at the store",
        );
    }
}
