//! `cargo xtask bench [GROUP...] [--record]`: runs benchmark groups, prints their figures
//! beside the values recorded in `docs/benchmarks.md`, writes `target/bench/results.json`
//! and, with `--record`, rewrites the recorded table there (`bench_doc`).
//!
//! Groups:
//! - `ipc`: the benchmark system under QEMU's `-icount shift=0`, where the PMU cycle
//!   counter counts instructions, so the figures repeat exactly from run to run. It runs
//!   twice and both runs must give the same numbers.
//! - `stage2`: the portable stage-2 walker on the host, lock-free against a global-lock
//!   baseline, with 1 and 2 threads (`src/bin/bench-stage2.rs`, built in release); the
//!   in-kernel fault against a VMM round trip under -icount; guest populate wall time.
//! - `vmexit`: guest exits served by the VMM, under -icount (the stage-2 system's run).
//! - `boot`: wall time from QEMU's start to the Linux guest's init marker, natively, as
//!   one VM under Bulkhead and as two VMs booting at once, in interleaved rounds, and
//!   the ratios to native (`bench_boot`).
//! - `size`: the kernel's sections, the boot payload and the boot image of the default
//!   and the bring-up system, per board (`bench_size`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};

use crate::bench_boot;
use crate::bench_doc::{self, GroupRecord, Recorded, Spec, NONE, NOT_MEASURED};
use crate::bench_size;
use crate::image;
use crate::qemu::{self, RunConfig};
use crate::say;
use crate::setup;
use crate::system;

/// The benchmark groups, in the order they run: (name, what it measures).
pub const GROUPS: &[(&str, &str)] = &[
    (
        "ipc",
        "syscall, IPC round trips and one-way IPC in instructions, under QEMU -icount",
    ),
    (
        "stage2",
        "stage-2 faults: the host walker lock-free vs a global lock (1 and 2 threads), an in-kernel fault vs a VMM round trip (icount), guest populate time with 1, 2, 4 vCPUs vs the kernel-lock build",
    ),
    (
        "vmexit",
        "guest exits served by the VMM, in instructions under QEMU -icount",
    ),
    (
        "boot",
        "Linux boot to its init, wall time: natively on QEMU, one VM and two VMs at once under Bulkhead, and the ratios",
    ),
    (
        "size",
        "kernel text, rodata, data and bss, boot payload and boot image sizes (default and bring-up systems)",
    ),
];

/// Options of `bench`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BenchOptions {
    /// The groups to run, each once, in `GROUPS` order; none means all.
    pub groups: Vec<String>,
    /// Rewrite the recorded table in docs/benchmarks.md.
    pub record: bool,
}

/// A catalogued benchmark: what the table says about it besides its value.
struct Row {
    name: &'static str,
    group: &'static str,
    unit: &'static str,
    what: &'static str,
    reference: &'static str,
    target: &'static str,
    /// No run measures it yet (the kernel side does not exist): shown as not measured.
    placeholder: bool,
}

const fn row(
    group: &'static str,
    name: &'static str,
    unit: &'static str,
    what: &'static str,
) -> Row {
    Row {
        name,
        group,
        unit,
        what,
        reference: NONE,
        target: NONE,
        placeholder: false,
    }
}

const fn placeholder(
    group: &'static str,
    name: &'static str,
    unit: &'static str,
    what: &'static str,
) -> Row {
    Row {
        placeholder: true,
        ..row(group, name, unit, what)
    }
}

/// Every benchmark, in table order. References for `ipc` from `../shared` facts: seL4
/// release, fastpath, hypervisor mode, on this QEMU 7.2 virt / cortex-a57, one way.
const ROWS: &[Row] = &[
    row(
        "ipc",
        "syscall-null",
        "instructions",
        "an unknown syscall (kernel entry, decode, error return, exit)",
    ),
    Row {
        reference: "seL4 532 (255 + 277)",
        target: "≤ 480 (230 + 250)",
        ..row(
            "ipc",
            "ipc-roundtrip-4",
            "instructions",
            "Call + ReplyRecv round trip, 4-word message, same core",
        )
    },
    Row {
        reference: "seL4 1502 (764 + 738)",
        ..row(
            "ipc",
            "ipc-roundtrip-10",
            "instructions",
            "the same with a 10-word message (IPC buffers)",
        )
    },
    // One-way figures, as sel4bench takes them (userland/ktest/src/bench.rs): median of
    // 64 samples, the counter-read pair subtracted.
    row(
        "ipc",
        "ipc-overhead",
        "instructions",
        "the measurement itself: the counter read before an svc and the one after it, back to back (isb; mrs), subtracted from each one-way figure",
    ),
    Row {
        reference: "seL4 255",
        target: "≤ 230",
        ..row(
            "ipc",
            "ipc-call-0",
            "instructions",
            "one-way Call, 0 words, same core and VSpace, equal priorities: client's counter read before the Call to the server's after its ReplyRecv returns",
        )
    },
    Row {
        reference: "seL4 277",
        target: "≤ 250",
        ..row(
            "ipc",
            "ipc-replyrecv-0",
            "instructions",
            "one-way ReplyRecv, 0 words: server's read before its ReplyRecv to the client's after its Call returns",
        )
    },
    Row {
        reference: "seL4 764",
        ..row(
            "ipc",
            "ipc-call-10",
            "instructions",
            "one-way Call, 10 words (6 through the IPC buffers)",
        )
    },
    Row {
        reference: "seL4 738",
        ..row(
            "ipc",
            "ipc-replyrecv-10",
            "instructions",
            "one-way ReplyRecv, 10 words",
        )
    },
    Row {
        reference: "seL4 695",
        ..row(
            "ipc",
            "ipc-send-up",
            "instructions",
            "one-way Send, 0 words, to a higher-priority thread blocked in Recv (sender's read before the Send to the receiver's after its Recv returns)",
        )
    },
    row(
        "ipc",
        "ipc-roundtrip-4-other-vspace",
        "instructions",
        "the 4-word round trip with the server in an address space of its own (a VSpace object: every switch loads the other stage-2), same core",
    ),
    row(
        "stage2",
        "stage2-host-cpus",
        "CPUs",
        "host: CPUs available to the stage-2 benchmark (the scaling figures need 2)",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-1t",
        "faults/s",
        "host: lock-free walker, 1 thread; a fault maps one 4 KiB page",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-2t",
        "faults/s",
        "the same, 2 threads faulting alternate 2 MiB regions of one tree",
    ),
    Row {
        target: "≥ 1.7",
        ..row(
            "stage2",
            "stage2-host-lockfree-scaling",
            "x",
            "lock-free: 2-thread rate / 1-thread rate",
        )
    },
    row(
        "stage2",
        "stage2-host-lock-1t",
        "faults/s",
        "host: baseline, every fault under one global lock, 1 thread",
    ),
    row(
        "stage2",
        "stage2-host-lock-2t",
        "faults/s",
        "the same, 2 threads faulting alternate 2 MiB regions of one tree",
    ),
    row(
        "stage2",
        "stage2-host-lock-scaling",
        "x",
        "global lock: 2-thread rate / 1-thread rate",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-over-lock-1t",
        "x",
        "lock-free rate / global-lock rate, 1 thread",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-over-lock-2t",
        "x",
        "lock-free rate / global-lock rate, 2 threads",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-2t-shared-l3",
        "faults/s",
        "lock-free, 2 threads taking alternate runs of 16 pages (the same level-3 tables)",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-shared-l3-scaling",
        "x",
        "its 2-thread rate / the 1-thread rate",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-2t-adjacent",
        "faults/s",
        "lock-free, 2 threads taking alternate pages (entries in the same cache lines)",
    ),
    row(
        "stage2",
        "stage2-host-lockfree-adjacent-scaling",
        "x",
        "its 2-thread rate / the 1-thread rate",
    ),
    // Part (b): tests/systems/bench-stage2.toml under -icount (the guest times its own
    // loads with the PMU cycle counter, which then counts EL2 too).
    Row {
        target: "≤ 1000",
        ..row(
            "stage2",
            "stage2-fault-kernel",
            "instructions",
            "a guest load whose stage-2 fault the kernel resolves in place (a bound RAM region), guest fault to guest resume, less a plain load",
        )
    },
    row(
        "stage2",
        "stage2-fault-vmm",
        "instructions",
        "the same load when the fault goes to the VMM, which maps a frame and replies",
    ),
    Row {
        target: "≥ 5",
        ..row(
            "stage2",
            "stage2-vmm-over-kernel",
            "x",
            "VMM round-trip fault / in-kernel fault",
        )
    },
    row(
        "stage2",
        "stage2-load-plain",
        "instructions",
        "the non-faulting load the two are measured against",
    ),
    // Part (c): tests/systems/bench-populate*.toml, wall time (no icount; QEMU runs the
    // vCPUs in parallel threads), median of runs alternating between the two builds.
    row(
        "stage2",
        "stage2-populate-1vcpu",
        "µs",
        "wall time for 1 vCPU to fault in 60 MiB of guest RAM (15360 in-kernel faults), lock-free build",
    ),
    row("stage2", "stage2-populate-2vcpu", "µs", "the same, 2 vCPUs each faulting its half"),
    row("stage2", "stage2-populate-4vcpu", "µs", "the same, 4 vCPUs each faulting its quarter"),
    row(
        "stage2",
        "stage2-populate-1vcpu-lock",
        "µs",
        "1 vCPU, kernel-lock baseline build (every in-kernel fault under one global lock)",
    ),
    row("stage2", "stage2-populate-2vcpu-lock", "µs", "2 vCPUs, baseline build"),
    row("stage2", "stage2-populate-4vcpu-lock", "µs", "4 vCPUs, baseline build"),
    row(
        "stage2",
        "stage2-populate-speedup-4",
        "x",
        "lock-free build: 1-vCPU time / 4-vCPU time (bounded by the host's CPUs)",
    ),
    row(
        "stage2",
        "stage2-populate-speedup-4-lock",
        "x",
        "baseline build: 1-vCPU time / 4-vCPU time",
    ),
    Row {
        target: "≤ 1500",
        ..row(
            "vmexit",
            "vmexit-hvc-roundtrip",
            "instructions",
            "guest HVC to the VMM and back (fault IPC, ReplyRecv with the results), less an empty measurement",
        )
    },
    row(
        "vmexit",
        "vmexit-mmio-read",
        "instructions",
        "guest MMIO read emulated by the VMM (a PL011 register), round trip",
    ),
    placeholder(
        "vmexit",
        "vmexit-virtual-ipi",
        "instructions",
        "virtual IPI from vCPU 0 to vCPU 1 (needs the VMM's GIC distributor emulation)",
    ),
    placeholder(
        "vmexit",
        "vmexit-irq-to-guest",
        "instructions",
        "physical interrupt routed to a guest's handler (needs passthrough interrupts)",
    ),
    // tests/systems/bench-boot.toml against the same guest on QEMU directly, wall time
    // (no icount), median of runs alternating between the two (`bench_boot`).
    row(
        "boot",
        "boot-native-ms",
        "ms",
        "wall time from QEMU start to the guest init's first line: Debian's arm64 kernel and busybox initramfs booted directly at EL1 (2 CPUs, 256 MiB, the VM's device tree and cmdline)",
    ),
    row(
        "boot",
        "boot-bulkhead-ms",
        "ms",
        "the same guest as a 2-vCPU VM under Bulkhead (QEMU with 4 CPUs, entered at EL2), QEMU start to the same line",
    ),
    Row {
        reference: "Bao 1.14×",
        target: "≤ 1.10",
        ..row(
            "boot",
            "boot-ratio",
            "x",
            "boot time under Bulkhead / native boot time (of the medians)",
        )
    },
    row(
        "boot",
        "boot-two-vms-ms",
        "ms",
        "two such VMs booting at once under Bulkhead (cores 0-1 and 2-3), QEMU start until both guests' lines have arrived",
    ),
    Row {
        reference: "Bao 1.49×",
        target: "≤ 1.30",
        ..row(
            "boot",
            "boot-two-vms-ratio",
            "x",
            "two-VM boot time / native boot time (of the medians)",
        )
    },
    // tests/systems/boot.toml and systems/default.toml built for qemu-virt (`bench_size`).
    row(
        "size",
        "size-kernel-text",
        "bytes",
        "kernel .text (qemu-virt, release)",
    ),
    row(
        "size",
        "size-kernel-rodata",
        "bytes",
        "kernel .rodata less the boot payload it embeds",
    ),
    row("size", "size-kernel-data", "bytes", "kernel .data"),
    row(
        "size",
        "size-kernel-bss",
        "bytes",
        "kernel .bss (zeroed at boot, not in the image)",
    ),
    row(
        "size",
        "size-kernel-stacks",
        "bytes",
        "kernel stacks, 8 cores × (32 KiB + a 4 KiB guard page), not in the image",
    ),
    row(
        "size",
        "size-payload-bringup",
        "bytes",
        "boot payload of the bring-up system (tests/systems/boot.toml: one small task)",
    ),
    row(
        "size",
        "size-image-bringup",
        "bytes",
        "its boot image: the kernel ELF's loaded bytes (text, rodata with the payload, data)",
    ),
    row(
        "size",
        "size-payload-default",
        "bytes",
        "boot payload of the default system (systems/default.toml: the VMM with the Linux guest's kernel and initramfs)",
    ),
    row(
        "size",
        "size-image-default",
        "bytes",
        "its boot image, as above",
    ),
];

/// One measured figure.
#[derive(Clone, Debug, PartialEq)]
struct Figure {
    group: &'static str,
    name: String,
    value: f64,
    unit: String,
}

/// What a group run gives.
struct GroupRun {
    figures: Vec<Figure>,
    notes: Vec<String>,
    machine: String,
}

/// The unit as the tables show it.
fn shown_unit(unit: &str) -> &str {
    match unit {
        "x" => "×",
        u => u,
    }
}

/// The value as the tables show it: rates in millions, ratios to two decimals, byte
/// counts in groups of three digits.
fn shown_value(value: f64, unit: &str) -> String {
    match unit {
        "faults/s" => format!("{:.1} M", value / 1e6),
        "x" => format!("{value:.2}"),
        "bytes" if value >= 0.0 && value.fract() == 0.0 && value < 1e15 => {
            let digits = format!("{value:.0}");
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        _ if value.fract() == 0.0 && value.abs() < 1e15 => format!("{value:.0}"),
        _ => format!("{value}"),
    }
}

fn parse_icount(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|l| l.split("BENCH ").nth(1))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

fn bench_dir() -> PathBuf {
    setup::repo_root().join("target").join("bench")
}

/// A benchmark system run under QEMU's -icount: which system, and the console line that
/// says it finished.
struct IcountSystem {
    group: &'static str,
    path: &'static str,
    done: &'static str,
}

/// The stage-2 fault benchmark system (part (b) of the `stage2` group).
const STAGE2_SYSTEM: IcountSystem = IcountSystem {
    group: "stage2",
    path: "tests/systems/bench-stage2.toml",
    done: "task vmm exited with status 0",
};

/// The exit benchmarks come from the same guest run.
const VMEXIT_SYSTEM: IcountSystem = IcountSystem {
    group: "vmexit",
    ..STAGE2_SYSTEM
};

/// The `ipc` group's system.
const IPC_SYSTEM: IcountSystem = IcountSystem {
    group: "ipc",
    path: "tests/systems/bench.toml",
    done: "task bench exited with status 0",
};

fn icount_once(sys: &IcountSystem, built: &image::Built, i: u32) -> Result<Vec<(String, u64)>> {
    let out = bench_dir();
    std::fs::create_dir_all(&out)?;
    let cfg = RunConfig {
        smp: 1,
        timeout: Some(120),
        expect: vec![sys.done.into()],
        vms: Vec::new(),
        forbid: Vec::new(),
        exit_status: None,
        virtualization: true,
        gdb: false,
        icount: true,
        echo: false,
        raw_path: out.join(format!("console-{}-{i}.bin", sys.group)),
        log_path: out.join(format!("console-{}-{i}.log", sys.group)),
    };
    let r = qemu::run(built, &cfg)?;
    if let Err(why) = r.verdict {
        bail!(
            "benchmark run failed: {why}\n{}",
            r.tail.into_iter().collect::<Vec<_>>().join("\n")
        );
    }
    let log = std::fs::read_to_string(&cfg.log_path).context("reading the benchmark console")?;
    let figures = parse_icount(&log);
    if figures.is_empty() || figures.iter().any(|(_, v)| *v == 0) {
        bail!("the benchmark printed no (or zero) figures: {figures:?}");
    }
    Ok(figures)
}

/// Builds `sys` and runs it twice under -icount; the two runs must agree.
fn run_icount(sys: &IcountSystem) -> Result<GroupRun> {
    setup::ensure_target()?;
    setup::ensure_qemu()?;
    let g = sys.group;
    let system = system::load(&setup::repo_root().join(sys.path))?;
    let built = image::build(&system, "info")?;
    say!("{g}: running {} twice under -icount shift=0", sys.path);
    let a = icount_once(sys, &built, 1)?;
    let b = icount_once(sys, &built, 2)?;
    if a != b {
        bail!("two runs gave different instruction counts: {a:?} vs {b:?}");
    }
    say!("{g}: both runs identical");
    Ok(GroupRun {
        figures: a
            .into_iter()
            .map(|(name, v)| Figure {
                group: g,
                name,
                value: v as f64,
                unit: "instructions".into(),
            })
            .collect(),
        notes: Vec::new(),
        machine: qemu_version().map_or_else(
            || "QEMU -icount shift=0".to_string(),
            |v| format!("QEMU {v}, -icount shift=0 (host-independent)"),
        ),
    })
}

/// The `ipc` group's own sanity check: the one-way Call and ReplyRecv, measured from
/// readings on both sides, must add up to about the round trip timed on the client alone
/// (they differ in message length, 0 against 4 words, and the server's priority; a
/// pairing of the wrong readings would be off by a whole IPC or more).
fn check_ipc(figures: &[Figure]) -> Result<()> {
    let get = |n: &str| {
        figures
            .iter()
            .find(|f| f.name == n)
            .map(|f| f.value)
            .with_context(|| format!("the ipc benchmark printed no `{n}`"))
    };
    let round_trip = get("ipc-roundtrip-4")?;
    let pair = get("ipc-call-0")? + get("ipc-replyrecv-0")?;
    if (pair - round_trip).abs() > round_trip / 4.0 {
        bail!(
            "one-way Call + ReplyRecv ({pair}) is far from the round trip ({round_trip}): \
             the one-way readings are not paired as the benchmark assumes"
        );
    }
    Ok(())
}

fn qemu_version() -> Option<String> {
    let out = Command::new(setup::QEMU).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.lines().next()?.split("version ").nth(1)?;
    Some(v.split_whitespace().next()?.to_string())
}

/// Parses the `FIGURE <name> <value> <unit>` and `NOTE <text>` lines of bench-stage2.
fn parse_host(out: &str) -> Result<(Vec<Figure>, Vec<String>)> {
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("FIGURE ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            let [name, value, unit] = w[..] else {
                bail!("bench-stage2 printed a malformed figure: `{line}`");
            };
            figures.push(Figure {
                group: "stage2",
                name: name.to_string(),
                value: value
                    .parse()
                    .with_context(|| format!("bench-stage2: bad value in `{line}`"))?,
                unit: unit.to_string(),
            });
        } else if let Some(note) = line.strip_prefix("NOTE ") {
            notes.push(note.to_string());
        }
    }
    if figures.is_empty() {
        bail!("bench-stage2 printed no figures");
    }
    Ok((figures, notes))
}

/// The host's CPU model and how many CPUs the process may use.
fn host_machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cpus} CPUs available")
}

/// The `stage2` group. The measurement must run optimised, and `cargo xtask` is a dev
/// build, so it is a separate binary of this package that `cargo run --release` builds
/// (with xtask's dependencies, in release, the first time: a minute or so) and runs. Its
/// progress goes straight to the terminal; its figures come back on stdout.
fn run_stage2() -> Result<GroupRun> {
    say!("stage2: building (release) and running the host stage-2 walker benchmark");
    let mut cmd = setup::cargo();
    cmd.args([
        "run",
        "--release",
        "--package",
        "xtask",
        "--bin",
        "bench-stage2",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", setup::describe(&cmd)))?;
    if !out.status.success() {
        bail!(
            "the host stage-2 benchmark failed ({}): `{}`",
            out.status,
            setup::describe(&cmd)
        );
    }
    let (mut figures, mut notes) = parse_host(&String::from_utf8_lossy(&out.stdout))?;
    say!("stage2: in-kernel fault against a VMM round trip, under -icount");
    let mut q = run_icount(&STAGE2_SYSTEM)?;
    q.figures.retain(|f| f.name.starts_with("stage2-"));
    let get = |n: &str| q.figures.iter().find(|f| f.name == n).map(|f| f.value);
    if let (Some(k), Some(v)) = (get("stage2-fault-kernel"), get("stage2-fault-vmm")) {
        figures.push(Figure {
            group: "stage2",
            name: "stage2-vmm-over-kernel".into(),
            value: v / k,
            unit: "x".into(),
        });
    }
    figures.extend(q.figures);
    notes.push(format!("fault figures: {}", q.machine));
    say!("stage2: populate time with 1, 2 and 4 vCPUs, lock-free against the kernel-lock build");
    let (pop, pop_note) = run_populate()?;
    figures.extend(pop);
    notes.push(pop_note);
    Ok(GroupRun {
        figures,
        notes,
        machine: host_machine(),
    })
}

/// Runs of each populate build (alternating; the median is reported).
const POPULATE_RUNS: usize = 3;

fn wall_once(built: &image::Built, tag: &str, i: usize) -> Result<Vec<(String, u64)>> {
    let out = bench_dir();
    std::fs::create_dir_all(&out)?;
    let cfg = RunConfig {
        smp: 4,
        timeout: Some(300),
        expect: vec!["task vmm exited with status 0".into()],
        vms: Vec::new(),
        forbid: Vec::new(),
        exit_status: None,
        virtualization: true,
        gdb: false,
        icount: false,
        echo: false,
        raw_path: out.join(format!("console-{tag}-{i}.bin")),
        log_path: out.join(format!("console-{tag}-{i}.log")),
    };
    let r = qemu::run(built, &cfg)?;
    if let Err(why) = r.verdict {
        bail!(
            "populate run failed: {why}\n{}",
            r.tail.into_iter().collect::<Vec<_>>().join("\n")
        );
    }
    let log = std::fs::read_to_string(&cfg.log_path).context("reading the benchmark console")?;
    Ok(parse_icount(&log))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Part (c): the populate benchmark, lock-free and baseline builds alternately.
fn run_populate() -> Result<(Vec<Figure>, String)> {
    setup::ensure_target()?;
    setup::ensure_qemu()?;
    let root = setup::repo_root();
    let free = image::build(
        &system::load(&root.join("tests/systems/bench-populate.toml"))?,
        "info",
    )?;
    let lock = image::build(
        &system::load(&root.join("tests/systems/bench-populate-baseline.toml"))?,
        "info",
    )?;
    let mut samples: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for i in 0..POPULATE_RUNS {
        for (built, suffix) in [(&free, ""), (&lock, "-lock")] {
            for (name, v) in wall_once(built, &format!("populate{suffix}"), i)? {
                samples
                    .entry(format!("{name}{suffix}"))
                    .or_default()
                    .push(v);
            }
        }
    }
    let mut figures: Vec<Figure> = samples
        .into_iter()
        .map(|(name, v)| Figure {
            group: "stage2",
            name,
            value: median(v) as f64,
            unit: "µs".into(),
        })
        .collect();
    let get = |n: &str| figures.iter().find(|f| f.name == n).map(|f| f.value);
    let mut ratios = Vec::new();
    for suffix in ["", "-lock"] {
        if let (Some(a), Some(b)) = (
            get(&format!("stage2-populate-1vcpu{suffix}")),
            get(&format!("stage2-populate-4vcpu{suffix}")),
        ) {
            ratios.push(Figure {
                group: "stage2",
                name: format!("stage2-populate-speedup-4{suffix}"),
                value: a / b,
                unit: "x".into(),
            });
        }
    }
    figures.extend(ratios);
    Ok((
        figures,
        format!(
            "populate figures: QEMU with 4 vCPU threads (no icount) on {}, median of {POPULATE_RUNS} runs per build",
            host_machine()
        ),
    ))
}

/// The `boot` group: Linux boot time natively and under Bulkhead (`bench_boot`).
fn run_boot() -> Result<GroupRun> {
    let s = bench_boot::measure(&bench_dir())?;
    let (figures, note) = boot_figures(&s);
    Ok(GroupRun {
        figures,
        notes: vec![note],
        machine: qemu_version().map_or_else(host_machine, |v| {
            format!("{}, QEMU {v} (wall time)", host_machine())
        }),
    })
}

/// The `boot` figures of the samples (medians and their ratios to native), and the
/// group's note (every run, and each kind's median and range).
fn boot_figures(s: &bench_boot::BootSamples) -> (Vec<Figure>, String) {
    let native = median(s.native_ms.clone());
    let bulkhead = median(s.bulkhead_ms.clone());
    let two = median(s.two_vms_ms.clone());
    let fig = |name: &str, value: f64, unit: &str| Figure {
        group: "boot",
        name: name.to_string(),
        value,
        unit: unit.to_string(),
    };
    let kind = |what: &str, v: &[u64]| {
        let list = v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let (lo, hi) = (v.iter().min().unwrap_or(&0), v.iter().max().unwrap_or(&0));
        format!(
            "{what} median {} ms, range {lo}–{hi} ms ({list})",
            median(v.to_vec())
        )
    };
    let load = s.load.map_or_else(String::new, |(before, after)| {
        format!(" (host load average {before:.2} before the runs, {after:.2} after)")
    });
    let note = format!(
        "wall time, {} interleaved rounds; {}; {}; {}; noisy: QEMU's CPU threads ({} native, \
         {} under Bulkhead) share the host's {} CPUs with each other and anything else \
         running, so record on a quiet machine{load}",
        s.native_ms.len(),
        kind("native", &s.native_ms),
        kind("one VM", &s.bulkhead_ms),
        kind("two VMs", &s.two_vms_ms),
        s.vcpus,
        s.bulkhead_smp,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    (
        vec![
            fig("boot-native-ms", native as f64, "ms"),
            fig("boot-bulkhead-ms", bulkhead as f64, "ms"),
            fig("boot-ratio", bulkhead as f64 / native as f64, "x"),
            fig("boot-two-vms-ms", two as f64, "ms"),
            fig("boot-two-vms-ratio", two as f64 / native as f64, "x"),
        ],
        note,
    )
}

/// The `size` group: both systems built, their sizes read (`bench_size`).
fn run_size() -> Result<GroupRun> {
    say!(
        "size: building {} and {} and reading the kernel's sections",
        bench_size::DEFAULT,
        bench_size::BRINGUP
    );
    let (default, bringup) = bench_size::measure()?;
    let rustc = Command::new("rustc")
        .arg("--version")
        .current_dir(setup::repo_root())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .into()
        })
        .filter(|v: &String| !v.is_empty())
        .unwrap_or_else(|| "rustc".to_string());
    Ok(GroupRun {
        figures: size_figures(&default, &bringup),
        notes: Vec::new(),
        machine: format!(
            "board {}, release build, {rustc} (host-independent)",
            default.board
        ),
    })
}

/// The `size` figures: the kernel's sections (the default system's; the bring-up
/// system's kernel is the same but for the payload) and each system's payload and image.
fn size_figures(default: &bench_size::Sizes, bringup: &bench_size::Sizes) -> Vec<Figure> {
    let fig = |name: &str, value: u64| Figure {
        group: "size",
        name: name.to_string(),
        value: value as f64,
        unit: "bytes".to_string(),
    };
    vec![
        fig("size-kernel-text", default.text),
        fig("size-kernel-rodata", default.own_rodata()),
        fig("size-kernel-data", default.data),
        fig("size-kernel-bss", default.bss),
        fig("size-kernel-stacks", default.stacks),
        fig("size-payload-bringup", bringup.payload),
        fig("size-image-bringup", bringup.image),
        fig("size-payload-default", default.payload),
        fig("size-image-default", default.image),
    ]
}

/// The catalog's rows followed by any figure it does not know, as the doc shows them.
fn specs(figures: &[Figure]) -> Vec<Spec> {
    let mut specs: Vec<Spec> = ROWS
        .iter()
        .map(|r| Spec {
            name: r.name.to_string(),
            label: format!("`{}`: {}", r.name, r.what),
            unit: shown_unit(r.unit).to_string(),
            reference: r.reference.to_string(),
            target: r.target.to_string(),
        })
        .collect();
    for f in figures {
        if !specs.iter().any(|s| s.name == f.name) {
            specs.push(Spec {
                name: f.name.clone(),
                label: format!("`{}`", f.name),
                unit: shown_unit(&f.unit).to_string(),
                reference: NONE.to_string(),
                target: NONE.to_string(),
            });
        }
    }
    specs
}

/// The terminal table: every row of the groups run, with the recorded value beside the
/// new one.
fn table(groups: &[&str], figures: &[Figure], recorded: &Recorded) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "benchmark".into(),
        "value".into(),
        "unit".into(),
        "recorded".into(),
        "reference".into(),
        "target".into(),
        "what".into(),
    ]];
    let known = ROWS
        .iter()
        .filter(|r| groups.contains(&r.group))
        .map(|r| (r.name, Some(r)));
    let extra = figures
        .iter()
        .filter(|f| !ROWS.iter().any(|r| r.name == f.name))
        .map(|f| (f.name.as_str(), None));
    for (name, row) in known.chain(extra) {
        let fig = figures.iter().find(|f| f.name == name);
        let (value, unit) = match (fig, row) {
            (Some(f), _) => (shown_value(f.value, &f.unit), shown_unit(&f.unit)),
            (None, Some(r)) if r.placeholder => (NOT_MEASURED.to_string(), shown_unit(r.unit)),
            (None, Some(r)) => ("(missing)".to_string(), shown_unit(r.unit)),
            (None, None) => continue,
        };
        rows.push([
            name.to_string(),
            value,
            unit.to_string(),
            recorded.value(name).unwrap_or("-").to_string(),
            row.map_or("-", |r| r.reference).to_string(),
            row.map_or("-", |r| r.target).to_string(),
            row.map_or("", |r| r.what).to_string(),
        ]);
    }
    let mut width = [0usize; 7];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(width).enumerate() {
            let pad = w - c.chars().count();
            match i {
                // Numbers right-aligned.
                1 | 3 => line.push_str(&format!("{}{c}  ", " ".repeat(pad))),
                6 => line.push_str(c),
                _ => line.push_str(&format!("{c}{}  ", " ".repeat(pad))),
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".to_string()
    }
}

/// `target/bench/results.json`: every figure of the run.
fn results_json(
    command: &str,
    date: &str,
    figures: &[Figure],
    not_measured: &[&str],
    notes: &[String],
    failed: &[(&str, String)],
) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "[]".to_string()
        } else {
            format!("[\n    {}\n  ]", items.join(",\n    "))
        }
    };
    let figs = figures
        .iter()
        .map(|f| {
            format!(
                "{{\"group\": {}, \"name\": {}, \"value\": {}, \"unit\": {}}}",
                json_str(f.group),
                json_str(&f.name),
                json_num(f.value),
                json_str(&f.unit)
            )
        })
        .collect();
    let failed = failed
        .iter()
        .map(|(g, e)| format!("{{\"group\": {}, \"error\": {}}}", json_str(g), json_str(e)))
        .collect();
    format!(
        "{{\n  \"command\": {},\n  \"date\": {},\n  \"figures\": {},\n  \"not_measured\": {},\n  \"notes\": {},\n  \"failed\": {}\n}}\n",
        json_str(command),
        json_str(date),
        list(figs),
        list(not_measured.iter().map(|n| json_str(n)).collect()),
        list(notes.iter().map(|n| json_str(n)).collect()),
        list(failed),
    )
}

fn doc_path() -> PathBuf {
    setup::repo_root().join("docs").join("benchmarks.md")
}

fn read_doc(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", setup::shown(path))),
    }
}

/// Runs the benchmarks.
pub fn bench(opts: &BenchOptions) -> Result<ExitCode> {
    let groups: Vec<&str> = GROUPS
        .iter()
        .map(|g| g.0)
        .filter(|g| opts.groups.is_empty() || opts.groups.iter().any(|o| o == g))
        .collect();
    for g in &opts.groups {
        if !GROUPS.iter().any(|k| k.0 == g) {
            bail!("unknown benchmark group `{g}` (known: {})", known_groups());
        }
    }
    let mut command = String::from("cargo xtask bench");
    if !opts.groups.is_empty() {
        command = format!("{command} {}", groups.join(" "));
    }
    if opts.record {
        command.push_str(" --record");
    }
    let doc = doc_path();
    let recorded = bench_doc::parse(&read_doc(&doc)?);
    let date = bench_doc::today();

    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let mut ran = Vec::new();
    let mut failed: Vec<(&str, String)> = Vec::new();
    for &g in &groups {
        let result = match g {
            "ipc" => run_icount(&IPC_SYSTEM).and_then(|r| check_ipc(&r.figures).map(|()| r)),
            "stage2" => run_stage2(),
            "vmexit" => run_icount(&VMEXIT_SYSTEM).map(|mut r| {
                r.figures.retain(|f| f.name.starts_with("vmexit-"));
                r
            }),
            "boot" => run_boot(),
            "size" => run_size(),
            _ => unreachable!("group {g} has no runner"),
        };
        match result {
            Ok(run) => {
                for n in &run.notes {
                    say!("{g}: note: {n}");
                }
                figures.extend(run.figures);
                notes.extend(run.notes.iter().map(|n| format!("{g}: {n}")));
                ran.push(GroupRecord {
                    group: g.to_string(),
                    date: date.clone(),
                    command: command.clone(),
                    machine: run.machine,
                    notes: if run.notes.is_empty() {
                        NONE.to_string()
                    } else {
                        run.notes.join("; ").replace('|', "/")
                    },
                });
            }
            Err(e) => {
                say!("{g}: failed: {e:#}");
                failed.push((g, format!("{e:#}")));
            }
        }
    }

    let ok: Vec<&str> = ran.iter().map(|g| g.group.as_str()).collect();
    print!("{}", table(&ok, &figures, &recorded));
    let not_measured: Vec<&str> = ROWS
        .iter()
        .filter(|r| r.placeholder && ok.contains(&r.group))
        .filter(|r| !figures.iter().any(|f| f.name == r.name))
        .map(|r| r.name)
        .collect();
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("results.json");
    std::fs::write(
        &path,
        results_json(&command, &date, &figures, &not_measured, &notes, &failed),
    )?;
    say!("results in {}", setup::shown(&path));

    if opts.record && !ran.is_empty() {
        let fresh: Vec<(String, String, String)> = figures
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    shown_value(f.value, &f.unit),
                    shown_unit(&f.unit).to_string(),
                )
            })
            .collect();
        let new = bench_doc::update(&recorded, &specs(&figures), &fresh, &ran);
        let text = bench_doc::splice(&read_doc(&doc)?, &bench_doc::render(&new));
        std::fs::write(&doc, text).with_context(|| format!("writing {}", setup::shown(&doc)))?;
        say!("recorded {} in {}", ok.join(", "), setup::shown(&doc));
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        let names: Vec<&str> = failed.iter().map(|f| f.0).collect();
        say!(
            "failed: {}{}",
            names.join(", "),
            if opts.record && !ran.is_empty() {
                " (not recorded; the others were)"
            } else {
                ""
            }
        );
        Ok(ExitCode::FAILURE)
    }
}

/// The known group names, for messages.
pub fn known_groups() -> String {
    GROUPS.iter().map(|g| g.0).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bench_lines() {
        let log = "[bench] INFO  BENCH ipc-roundtrip-4 812\nnoise\n[bench] INFO  BENCH x 5\n";
        assert_eq!(
            parse_icount(log),
            vec![("ipc-roundtrip-4".to_string(), 812), ("x".to_string(), 5)]
        );
    }

    #[test]
    fn parses_host_figures() {
        let out = "FIGURE stage2-host-cpus 2 CPUs\nnoise\n\
                   FIGURE stage2-host-lockfree-1t 128659484 faults/s\n\
                   FIGURE stage2-host-lockfree-scaling 1.97 x\nNOTE only 1 CPU\n";
        let (figs, notes) = parse_host(out).unwrap();
        assert_eq!(figs.len(), 3);
        assert_eq!(figs[1].name, "stage2-host-lockfree-1t");
        assert_eq!(figs[1].value, 128_659_484.0);
        assert_eq!(figs[2].unit, "x");
        assert_eq!(notes, ["only 1 CPU"]);
        assert!(parse_host("FIGURE a 1\n").is_err());
        assert!(parse_host("FIGURE a one x\n").is_err());
        assert!(parse_host("nothing\n").is_err());
    }

    #[test]
    fn ipc_one_way_adds_up_to_the_round_trip() {
        let figs = |call: f64, reply: f64| {
            [
                ("ipc-roundtrip-4", 1620.0),
                ("ipc-call-0", call),
                ("ipc-replyrecv-0", reply),
            ]
            .map(|(name, value)| Figure {
                group: "ipc",
                name: name.into(),
                value,
                unit: "instructions".into(),
            })
        };
        check_ipc(&figs(829.0, 782.0)).unwrap();
        assert!(check_ipc(&figs(829.0 + 1620.0, 782.0)).is_err());
        assert!(check_ipc(&figs(20.0, 30.0)).is_err());
        assert!(check_ipc(&figs(829.0, 782.0)[..2]).is_err());
    }

    #[test]
    fn values_as_shown() {
        assert_eq!(shown_value(128_659_484.0, "faults/s"), "128.7 M");
        assert_eq!(shown_value(1.974, "x"), "1.97");
        assert_eq!(shown_value(1289.0, "instructions"), "1289");
        assert_eq!(shown_value(29_886_696.0, "bytes"), "29,886,696");
        assert_eq!(shown_value(696.0, "bytes"), "696");
        assert_eq!(shown_value(100_000.0, "bytes"), "100,000");
        assert_eq!(shown_unit("x"), "×");
    }

    #[test]
    fn catalog_is_consistent() {
        for (i, r) in ROWS.iter().enumerate() {
            assert!(GROUPS.iter().any(|g| g.0 == r.group), "{}", r.name);
            assert!(
                ROWS[..i].iter().all(|o| o.name != r.name),
                "{} twice",
                r.name
            );
            // Cells must not break the Markdown table.
            for cell in [r.name, r.what, r.reference, r.target, r.unit] {
                assert!(!cell.contains('|') && !cell.contains('\n'), "{cell}");
            }
        }
    }

    #[test]
    fn table_shows_recorded_values_and_placeholders() {
        let recorded = bench_doc::parse(
            "<!-- bench:results:begin -->\n\
             | benchmark | value | previous | unit | reference | target |\n|---|---|---|---|---|---|\n\
             | `stage2-host-lockfree-1t`: x | 120.0 M | — | faults/s | — | — |\n\
             <!-- bench:results:end -->\n",
        );
        let figs = [Figure {
            group: "stage2",
            name: "stage2-host-lockfree-1t".into(),
            value: 128_659_484.0,
            unit: "faults/s".into(),
        }];
        let t = table(&["stage2", "vmexit"], &figs, &recorded);
        let line = t
            .lines()
            .find(|l| l.starts_with("stage2-host-lockfree-1t "))
            .unwrap();
        assert!(
            line.contains("128.7 M") && line.contains("120.0 M"),
            "{line}"
        );
        let line = t
            .lines()
            .find(|l| l.starts_with("vmexit-virtual-ipi "))
            .unwrap();
        assert!(line.contains(NOT_MEASURED), "{line}");
        assert!(!t.contains("ipc-roundtrip-4"));
    }

    #[test]
    fn boot_medians_and_ratio() {
        let s = bench_boot::BootSamples {
            native_ms: vec![1100, 950, 1000],
            bulkhead_ms: vec![2600, 2500, 3100],
            two_vms_ms: vec![4000, 3500, 3600],
            vcpus: 2,
            bulkhead_smp: 4,
            load: Some((0.5, 1.25)),
        };
        let (figs, note) = boot_figures(&s);
        let get = |n: &str| figs.iter().find(|f| f.name == n).unwrap();
        assert_eq!(get("boot-native-ms").value, 1000.0);
        assert_eq!(get("boot-bulkhead-ms").value, 2600.0);
        assert_eq!(get("boot-bulkhead-ms").unit, "ms");
        assert_eq!(shown_value(get("boot-ratio").value, "x"), "2.60");
        assert_eq!(get("boot-two-vms-ms").value, 3600.0);
        assert_eq!(shown_value(get("boot-two-vms-ratio").value, "x"), "3.60");
        // Every figure has its catalogued row.
        for f in &figs {
            assert!(ROWS
                .iter()
                .any(|r| r.name == f.name && r.group == "boot" && r.unit == f.unit));
        }
        assert!(note.contains("3 interleaved rounds"), "{note}");
        assert!(
            note.contains("native median 1000 ms, range 950–1100 ms (1100, 950, 1000)"),
            "{note}"
        );
        assert!(note.contains("one VM median 2600 ms, range 2500–3100 ms"));
        assert!(note.contains("two VMs median 3600 ms, range 3500–4000 ms"));
        assert!(note.ends_with("(host load average 0.50 before the runs, 1.25 after)"));
        assert!(!note.contains('|'));
    }

    #[test]
    fn size_figures_are_catalogued() {
        let s = bench_size::Sizes {
            board: "qemu-virt".into(),
            text: 93_764,
            rodata: 30_000_000,
            data: 984,
            bss: 283_408,
            stacks: 294_912,
            payload: 29_886_696,
            image: 30_100_000,
        };
        let figs = size_figures(&s, &s);
        assert_eq!(figs.len(), 9);
        for f in &figs {
            assert!(
                ROWS.iter()
                    .any(|r| r.name == f.name && r.group == "size" && r.unit == f.unit),
                "{}",
                f.name
            );
        }
        assert_eq!(figs[1].value, 113_304.0);
        // Every catalogued size row is measured.
        for r in ROWS.iter().filter(|r| r.group == "size") {
            assert!(figs.iter().any(|f| f.name == r.name), "{}", r.name);
        }
    }

    #[test]
    fn json_escapes_and_lists() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        let j = results_json(
            "cargo xtask bench",
            "2024-01-01",
            &[Figure {
                group: "ipc",
                name: "syscall-null".into(),
                value: 317.0,
                unit: "instructions".into(),
            }],
            &["stage2-fault-kernel"],
            &[],
            &[],
        );
        assert!(j.contains(
            "{\"group\": \"ipc\", \"name\": \"syscall-null\", \"value\": 317, \"unit\": \"instructions\"}"
        ));
        assert!(j.contains("\"notes\": [],"));
        assert!(j.contains("\"not_measured\": [\n    \"stage2-fault-kernel\"\n  ]"));
    }
}
