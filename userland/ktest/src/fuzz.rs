//! The syscall fuzzer: seeded random invocations with random arguments against the
//! task's own capabilities. The kernel must answer every one with a result (never panic
//! or hang); the fuzzer checks only that it gets to the end, and that the Untyped it
//! used is still whole afterwards.

use crate::util::*;
use bulkhead_sys::cap::ObjectType;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::cap::Cap;

/// The canary: a thread on core 1, in its own partition there, counting.
static CANARY: AtomicU64 = AtomicU64::new(0);
const CANARY_TCB: u64 = 150;

#[repr(C, align(16))]
struct Stack([u64; 512]);
static mut CANARY_STACK: Stack = Stack([0; 512]);

extern "C" fn canary(_: u64) -> ! {
    loop {
        CANARY.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the canary from an Untyped other than `ut` (which the fuzzer revokes).
fn start_canary(ut: u64) -> bool {
    let Some(other) = (2..66).find(|&i| {
        i != ut
            && matches!(
                cap_at(i),
                Cap::Untyped {
                    size_bits: 12..,
                    device: false,
                    ..
                }
            )
    }) else {
        return false;
    };
    let t = |label, mr| call(CANARY_TCB, MessageInfo::new(label, 4), mr);
    let sp = core::ptr::addr_of!(CANARY_STACK) as u64 + 512 * 8;
    let sc = (2..72).find(|&i| matches!(cap_at(i), Cap::SchedControl));
    make(other, ObjectType::Tcb, 0, CANARY_TCB).is_ok()
        && t(invocation::TCB_CONFIGURE, [ROOT, 100, 0, 0]).is_ok()
        && t(invocation::TCB_SET_AFFINITY, [1, 0, 0, 0]).is_ok()
        && t(invocation::TCB_SET_PARTITION, [1, 0, 0, 0]).is_ok()
        && t(
            invocation::TCB_WRITE_REGISTERS,
            [canary as *const () as u64, sp, 0, 0],
        )
        .is_ok()
        && sc.is_some_and(|sc| {
            // Core 1 runs partition 1 only.
            call(
                sc,
                MessageInfo::new(invocation::SCHED_CONTROL_SET_WINDOWS, 4),
                [1, 1, 1, 1],
            )
            .is_ok()
        })
        && t(invocation::TCB_RESUME, [0; 4]).is_ok()
}
use bulkhead_sys::{call, debug_log_raw, debug_slot, invocation, raw_call, MessageInfo};

/// The fuzzer's arguments, drawn from `capseq`'s seeded generator.
struct Rng(capseq::Rng);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// Mostly small numbers near interesting values, sometimes anything.
    fn arg(&mut self) -> u64 {
        match self.below(8) {
            0 => self.0.next_u64(),
            1 => u64::MAX - self.below(4),
            2 => 1 << self.below(64),
            _ => self.below(300),
        }
    }
}

/// Runs `count` random calls from `seed`; returns 0 when the kernel survived them all.
pub fn run(seed: u64, count: u64) -> u64 {
    defmt::info!("fuzz: seed {=u64:#x}, {=u64} calls", seed, count);
    let Some((ut, _, bits)) = largest_untyped() else {
        defmt::error!("fuzz: no Untyped memory");
        return 1;
    };
    if !start_canary(ut) {
        defmt::error!("fuzz: could not start the canary on core 1");
        return 1;
    }
    let mut rng = Rng(capseq::Rng::new(seed));
    let mut ok = 0u64;
    let mut canary_checks = 0u64;
    let mut last_canary = 0u64;
    for n in 0..count {
        if n % 1000 == 0 {
            // Keep the state bounded: drop everything made so far now and then.
            let _ = revoke(ut);
        }
        if n % 10_000 == 9_999 {
            // The canary on the other core must have run on since the last check.
            let mut c = CANARY.load(Ordering::Relaxed);
            if c == last_canary {
                // Not yet: its core may simply not have run (QEMU's vCPU threads share few
                // host CPUs). A stopped canary never moves again; give it two seconds.
                let (start, hz) = (crate::sched::now(), crate::sched::freq());
                while c == last_canary && crate::sched::now() - start < 2 * hz {
                    c = CANARY.load(Ordering::Relaxed);
                }
            }
            if c == last_canary {
                defmt::error!("fuzz: the canary on core 1 stopped after {=u64} calls", n);
                return 1;
            }
            last_canary = c;
            canary_checks += 1;
        }
        let r = match rng.below(16) {
            0 => {
                // Any syscall number but Exit (which would end the fuzzer itself).
                let n = match rng.arg() {
                    // Not Exit (it would end the fuzzer); the blocking IPC calls become
                    // their non-blocking forms (nobody would ever wake the fuzzer).
                    2 => continue,
                    5 => 6,
                    7 | 10 => 8,
                    13 => 14,
                    n => n,
                };
                raw_call(n, rng.arg(), rng.arg())
            }
            1 => debug_log_raw(rng.arg(), rng.below(600)).map_or_else(|e| e as u64, |_| 0),
            2 => debug_slot(rng.arg(), rng.below(70)).map_or_else(|e| e as u64, |_| 0),
            3..=6 => {
                // Retype with plausible arguments from the big untyped.
                // Never endpoints: a Call on one is IPC and would block the fuzzer.
                let ty = match rng.below(11) {
                    2 => 3,
                    t => t,
                };
                let mr0 = ty | rng.below(30) << 32;
                let mr2 = 64 | rng.below(5) << 32;
                let info = MessageInfo::new(1, 4);
                let target = if rng.below(4) == 0 { rng.arg() } else { ut };
                call(target, info, [mr0, 1, mr2, FREE + rng.below(64)])
                    .map_or_else(|e| e as u64, |_| 0)
            }
            _ => {
                let label = rng.below(9);
                // Slot arguments never name the boot caps below FREE (the root CNode's own
                // cap and the Untypeds), so the end-of-run accounting check stays possible.
                let dest = if rng.below(4) == 0 {
                    rng.arg().max(FREE)
                } else {
                    FREE + rng.below(64)
                };
                let src = if rng.below(4) == 0 {
                    rng.arg().max(FREE)
                } else {
                    FREE + rng.below(64)
                };
                let depths = if rng.below(4) == 0 {
                    rng.arg()
                } else {
                    64 | 64 << 8 | rng.below(32) << 16
                };
                let node = if rng.below(8) == 0 { rng.arg() } else { ROOT };
                let badge = rng.arg();
                call(node, MessageInfo::new(label, 4), [dest, src, depths, badge])
                    .map_or_else(|e| e as u64, |_| 0)
            }
        };
        if r == 0 {
            ok += 1;
        }
    }
    let _ = revoke(ut);
    // Everything made from the untyped is gone: all of it can be retyped again.
    let whole = retype(ut, 0, bits, ROOT, FREE, 1).is_ok();
    let _ = revoke(ut);
    defmt::info!(
        "fuzz: {=u64} calls done, {=u64} succeeded; untyped whole again: {=bool}",
        count,
        ok,
        whole
    );
    defmt::info!(
        "fuzz: canary on core 1 kept running through {=u64} checks",
        canary_checks
    );
    if whole {
        0
    } else {
        1
    }
}
