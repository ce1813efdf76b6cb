//! Attack 4: firmware calls (the SMC Calling Convention, Arm DEN 0028, and PSCI, Arm
//! DEN 0022) with function IDs nobody implements and PSCI arguments that name CPUs or
//! entry points that do not exist.
//!
//! Expected: an unknown function ID returns NOT_SUPPORTED (-1) in x0, whether by HVC or
//! by SMC (which the hypervisor traps, HCR_EL2.TSC), the VMM's own test hypercalls
//! included (a Linux VM's VMM does not offer them). CPU_ON and AFFINITY_INFO take a
//! target in MPIDR affinity format, every other bit RES0: a target with a RES0 bit set
//! or naming no CPU gives INVALID_PARAMETERS (-2); CPU_ON of a CPU that is on gives
//! ALREADY_ON (-4), and an entry point that cannot be executed (outside RAM, or not
//! word-aligned) INVALID_ADDRESS (-9, PSCI 1.0 and later).

use crate::arch::{self, hvc, smc};
use crate::console::{verdict, Hex};

pub const VERSION: u64 = 0x8400_0000;
pub const CPU_OFF: u64 = 0x8400_0002;
pub const CPU_ON: u64 = 0xc400_0003;
pub const AFFINITY_INFO: u64 = 0xc400_0004;
pub const SYSTEM_OFF: u64 = 0x8400_0008;
const FEATURES: u64 = 0x8400_000a;

pub const NOT_SUPPORTED: u64 = -1i64 as u64;
const INVALID_PARAMETERS: u64 = -2i64 as u64;
const ALREADY_ON: u64 = -4i64 as u64;
const INVALID_ADDRESS: u64 = -9i64 as u64;

/// Function IDs nobody answers: SMCCC_VERSION's neighbours in the Arm architecture
/// range, PSCI IDs past the last one, SiP, OEM and standard-hypervisor ranges, a
/// trusted-OS ID, a 32-bit and a 64-bit nonsense ID, and the VMM's test hypercalls
/// (vendor-specific hypervisor range 0xc6000001..4), which only its test VMs get.
pub const UNKNOWN: [u64; 12] = [
    0x8000_7fff,
    0x8400_00ff,
    0xc400_0fff,
    0x8200_0000,
    0xc300_0001,
    0xc500_0002,
    0xbf00_0000,
    0xffff_ffff,
    0xc600_0001,
    0xc600_0002,
    0xc600_0003,
    0xc600_0004,
];

/// Set by vCPU 1 once it is up (its context id).
pub static STARTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The context id vCPU 1 is started with.
pub const CONTEXT: u64 = 0x5eed;

fn signed(v: u64) -> i64 {
    v as i64
}

/// Runs attack 4; leaves vCPU 1 started (it joins the storms).
pub fn run() {
    let mut bad = 0;
    for id in UNKNOWN {
        bad += (hvc(id, 1, 2, 3) != NOT_SUPPORTED) as u64;
        bad += (smc(id, 1, 2, 3) != NOT_SUPPORTED) as u64;
    }
    let features = hvc(FEATURES, 0x8400_00ff, 0, 0);
    verdict(
        "unknown-calls",
        bad == 0 && features == NOT_SUPPORTED,
        format_args!(
            "{} unknown function IDs by HVC and by SMC, the VMM's test hypercalls included: NOT_SUPPORTED each ({} others); PSCI_FEATURES of one: {}",
            UNKNOWN.len(),
            bad,
            signed(features)
        ),
        "NOT_SUPPORTED (-1) for every one",
    );

    let version = hvc(VERSION, 0, 0, 0);
    verdict(
        "psci-version",
        version >> 16 >= 1,
        format_args!("PSCI_VERSION: {}.{}", version >> 16, version & 0xffff),
        "PSCI 1.0 or later",
    );

    let targets: [u64; 8] = [
        2,
        3,
        0xff,
        0x100,
        0x1_0000,
        0x1_0000_0000,
        0x8000_0000,
        u64::MAX,
    ];
    let entry = arch::entry();
    let mut answers = [0u64; 8];
    for (a, &t) in answers.iter_mut().zip(&targets) {
        *a = hvc(CPU_ON, t, entry, 0);
    }
    verdict(
        "cpu-on-absent",
        answers.iter().all(|&a| a == INVALID_PARAMETERS),
        format_args!(
            "CPU_ON of {}: {}",
            Hex(&targets),
            if answers.iter().all(|&a| a == INVALID_PARAMETERS) {
                "INVALID_PARAMETERS each"
            } else {
                "other answers"
            }
        ),
        "INVALID_PARAMETERS (-2) for each",
    );
    if answers.contains(&0) {
        // A CPU was started that does not exist: nothing else here can be trusted.
        crate::console::line(format_args!("attack: a CPU_ON of no CPU succeeded"));
    }

    let me = hvc(CPU_ON, arch::cpu() as u64, entry, 0);
    verdict(
        "cpu-on-self",
        me == ALREADY_ON,
        format_args!("CPU_ON of itself: {}", signed(me)),
        "ALREADY_ON (-4)",
    );

    let entries = [0x5000_0000u64, 0x0, entry + 2, !3];
    let mut answers = [0u64; 4];
    for (a, &e) in answers.iter_mut().zip(&entries) {
        *a = hvc(CPU_ON, 1, e, CONTEXT);
    }
    verdict(
        "cpu-on-bad-entry",
        answers.iter().all(|&a| a == INVALID_ADDRESS),
        format_args!(
            "CPU_ON of vCPU 1 at {}: {} {} {} {}",
            Hex(&entries),
            signed(answers[0]),
            signed(answers[1]),
            signed(answers[2]),
            signed(answers[3])
        ),
        "INVALID_ADDRESS (-9) for each",
    );

    let on = hvc(CPU_ON, 1, entry, CONTEXT);
    let t0 = arch::now();
    while STARTED.load(core::sync::atomic::Ordering::Acquire) != CONTEXT
        && arch::micros_since(t0) < 2_000_000
    {
        core::hint::spin_loop();
    }
    let up = STARTED.load(core::sync::atomic::Ordering::Acquire) == CONTEXT;
    let again = hvc(CPU_ON, 1, entry, CONTEXT);
    let info = hvc(AFFINITY_INFO, 1, 0, 0);
    verdict(
        "cpu-on",
        on == 0 && up && again == ALREADY_ON && info == 0,
        format_args!(
            "CPU_ON of vCPU 1: {}, it ran with context id {:#x}; again: {}; AFFINITY_INFO: {} (ON)",
            signed(on),
            if up { CONTEXT } else { 0 },
            signed(again),
            signed(info)
        ),
        "SUCCESS, the context id in x0, ALREADY_ON, ON (0)",
    );

    let absent: [u64; 6] = [2, 0xff, 0x100, 0x1_0000, 0x1_0000_0000, 0x8000_0000];
    let mut answers = [0u64; 6];
    for (a, &t) in answers.iter_mut().zip(&absent) {
        *a = hvc(AFFINITY_INFO, t, 0, 0);
    }
    verdict(
        "affinity-absent",
        answers.iter().all(|&a| a == INVALID_PARAMETERS),
        format_args!(
            "AFFINITY_INFO of {}: {}",
            Hex(&absent),
            if answers.iter().all(|&a| a == INVALID_PARAMETERS) {
                "INVALID_PARAMETERS each"
            } else {
                "other answers"
            }
        ),
        "INVALID_PARAMETERS (-2) for each",
    );
}
