//! The measuring side of `cargo xtask bench boot`: wall time from QEMU's start to the
//! first marker of the Linux guest's init (`bulkhead-guest: Linux ...`, see
//! [`crate::guest::INIT_SCRIPT`]), for Debian's arm64 cloud kernel with the busybox
//! initramfs,
//!
//! - *natively*: the kernel booted directly at EL1 on QEMU virt (no `virtualization=on`),
//!   with the VM's CPU count, RAM size, device tree and cmdline, so that the guest sees
//!   the same hardware description in both runs;
//! - *under Bulkhead*: [`SYSTEM`] (the Linux VM of `tests/systems/linux.toml`) built and
//!   run as `cargo xtask run` would run it (its `smp`, EL2 entry, no icount); the marker
//!   is the VMM's decoded `[linux] INFO  linux| bulkhead-guest: Linux ...` line;
//! - *two VMs at once under Bulkhead*: [`SYSTEM_TWO`], two copies of that VM (same vCPUs
//!   and cmdline) on cores of their own, booting together; the clock stops when both
//!   VMs' markers (`linux-a| bulkhead-guest: Linux`, `linux-b| ...`) have arrived.
//!
//! The runs go in rounds of one of each kind, native first, [`rounds`] rounds. Each is
//! timed from just before QEMU is spawned to the read of the console bytes that complete
//! the (last) marker line (a reader thread stamps every read, so decoding does not delay
//! the time), then QEMU is killed. `bench.rs` turns the samples into figures.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bulkhead_sys::vm_layout;

use crate::decode::{Console, DefmtTables, Origin};
use crate::guest::{self, GuestFiles};
use crate::image::{self, Built};
use crate::qemu::{self, RunConfig};
use crate::say;
use crate::setup::{self, shown, QEMU};
use crate::system;

/// The benchmark's system: one Linux VM.
pub const SYSTEM: &str = "tests/systems/bench-boot.toml";
/// Two copies of [`SYSTEM`]'s VM booting at once.
pub const SYSTEM_TWO: &str = "tests/systems/bench-boot-two.toml";
/// What the guest's `/init` prints first; the clock stops at the line holding it.
pub const MARKER: &str = "bulkhead-guest: Linux";
/// The cmdline word that makes the guest's init power off after its markers.
pub const POWEROFF: &str = "bulkhead.poweroff";
/// Rounds (one run of each kind) unless [`ROUNDS_ENV`] says otherwise; `bench.rs` reports
/// the medians. The issue asks for 10: 3 keeps `cargo xtask bench` well inside its
/// 15 minutes on a 2-CPU machine.
pub const DEFAULT_ROUNDS: usize = 3;
/// The environment variable that sets the number of rounds.
pub const ROUNDS_ENV: &str = "BULKHEAD_BENCH_ROUNDS";
/// How long one boot may take before the run is abandoned.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Kernel lines that mean the Bulkhead run failed (as `qemu::run` checks).
const FAILURE_MARKERS: &[&str] = &["KERNEL PANIC", "KERNEL EXCEPTION"];
/// Lines kept for failure reports.
const TAIL_LINES: usize = 30;

/// What [`measure`] gives: boot times in milliseconds, in run order.
#[derive(Debug, Clone)]
pub struct BootSamples {
    /// The native runs.
    pub native_ms: Vec<u64>,
    /// The runs of one VM under Bulkhead.
    pub bulkhead_ms: Vec<u64>,
    /// The runs of two VMs under Bulkhead, until both markers.
    pub two_vms_ms: Vec<u64>,
    /// The VM's vCPUs (the native run's CPUs).
    pub vcpus: u64,
    /// The CPUs QEMU gives Bulkhead.
    pub bulkhead_smp: u32,
    /// The host's 1-minute load average before the first run and after the last (Linux
    /// hosts): how quiet the machine was.
    pub load: Option<(f64, f64)>,
}

/// The host's 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The number of rounds: [`ROUNDS_ENV`] if set (a whole number from 1 to 100), else
/// [`DEFAULT_ROUNDS`].
pub fn rounds() -> Result<usize> {
    parse_rounds(std::env::var(ROUNDS_ENV).ok().as_deref())
}

fn parse_rounds(value: Option<&str>) -> Result<usize> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_ROUNDS);
    };
    match v.parse::<usize>() {
        Ok(n @ 1..=100) => Ok(n),
        _ => bail!("{ROUNDS_ENV}={v}: give a number of rounds from 1 to 100"),
    }
}

/// The markers that end a run of `system` under Bulkhead: each VM's name, `| ` and
/// [`MARKER`], as the VMM prints the guest's console lines.
pub fn vm_markers(system: &system::System) -> Vec<String> {
    system
        .vms
        .iter()
        .map(|vm| format!("{}| {MARKER}", vm.name))
        .collect()
}

/// Checks that `two` is two copies of `one`'s VM (same vCPUs and cmdline, each powering
/// off), with names of their own.
fn check_two(one: &system::Vm, two: &system::System) -> Result<()> {
    let [a, b] = two.vms.as_slice() else {
        bail!("{SYSTEM_TWO} must describe exactly two [[vm]]s");
    };
    for vm in [a, b] {
        if vm.vcpus != one.vcpus || vm.cmdline != one.cmdline {
            bail!(
                "{SYSTEM_TWO}: VM `{}` must boot the guest of {SYSTEM} (vcpus {}, cmdline `{}`)",
                vm.name,
                one.vcpus,
                one.cmdline
            );
        }
    }
    if a.name == b.name || a.name.contains(&b.name) || b.name.contains(&a.name) {
        bail!("{SYSTEM_TWO}: the VMs need names that tell their console lines apart");
    }
    Ok(())
}

/// Prepares the three kinds of run and times [`rounds`] rounds of one run of each
/// (native, one VM, two VMs); consoles go to `out` as
/// `console-boot-{native,bulkhead,two-vms}-<i>.log` (and `.bin`, the raw bytes).
pub fn measure(out: &Path) -> Result<BootSamples> {
    let rounds = rounds()?;
    setup::ensure_target()?;
    setup::ensure_qemu()?;
    let root = setup::repo_root();
    let system = system::load(&root.join(SYSTEM))?;
    let [vm] = system.vms.as_slice() else {
        bail!("{SYSTEM} must describe exactly one [[vm]]");
    };
    if !vm.cmdline.split_whitespace().any(|w| w == POWEROFF) {
        bail!("{SYSTEM}: the VM's cmdline must contain `{POWEROFF}`");
    }
    let two = system::load(&root.join(SYSTEM_TWO))?;
    check_two(vm, &two)?;
    // The guest's files first (fetched the first time): the native run boots them as
    // they are, and the Bulkhead builds embed them.
    let files = guest::linux_guest(vm.vcpus, &vm.cmdline)?;
    let built = image::build(&system, image::DEFAULT_LOG)?;
    let built_two = image::build(&two, image::DEFAULT_LOG)?;
    let smp = system.smp.unwrap_or(system::DEFAULT_SMP);
    let smp_two = two.smp.unwrap_or(system::DEFAULT_SMP);
    let markers_two = vm_markers(&two);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", shown(out)))?;

    let mut samples = BootSamples {
        native_ms: Vec::new(),
        bulkhead_ms: Vec::new(),
        two_vms_ms: Vec::new(),
        vcpus: vm.vcpus,
        bulkhead_smp: smp,
        load: None,
    };
    let load_before = load_average();
    say!(
        "boot: {rounds} rounds of: natively ({} CPUs at EL1), one VM under Bulkhead \
         ({smp} CPUs at EL2, the VM on {}), two VMs under Bulkhead ({smp_two} CPUs), \
         to `{MARKER}` (both VMs')",
        vm.vcpus,
        vm.vcpus
    );
    for i in 1..=rounds {
        let path = |kind: &str, ext: &str| out.join(format!("console-boot-{kind}-{i}.{ext}"));
        let native = time_to_markers(
            native_command(&files, vm.vcpus, &vm.cmdline)?,
            Decoder::text(),
            &path("native", "bin"),
            &path("native", "log"),
            &[MARKER.to_string()],
            vm.vcpus,
        )
        .with_context(|| format!("native run {i}"))?;
        let (cmd, decoder) = bulkhead_command(&built, smp, &path("bulkhead", "bin"))?;
        let bulkhead = time_to_markers(
            cmd,
            decoder,
            &path("bulkhead", "bin"),
            &path("bulkhead", "log"),
            &[MARKER.to_string()],
            vm.vcpus,
        )
        .with_context(|| format!("Bulkhead run {i}"))?;
        let (cmd, decoder) = bulkhead_command(&built_two, smp_two, &path("two-vms", "bin"))?;
        let both = time_to_markers(
            cmd,
            decoder,
            &path("two-vms", "bin"),
            &path("two-vms", "log"),
            &markers_two,
            vm.vcpus,
        )
        .with_context(|| format!("two-VM run {i}"))?;
        let (n, b, t) = (millis(native), millis(bulkhead), millis(both));
        say!(
            "boot: round {i}/{rounds}: native {n} ms, one VM under Bulkhead {b} ms, \
             two VMs {t} ms"
        );
        samples.native_ms.push(n);
        samples.bulkhead_ms.push(b);
        samples.two_vms_ms.push(t);
    }
    samples.load = load_before.zip(load_average());
    Ok(samples)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The native run: the guest's kernel, initramfs and device tree straight on QEMU virt at
/// EL1, with the VM's CPU count and RAM. With `-dtb`, QEMU keeps the VM's device tree but
/// points its `/chosen` at the initramfs where it loaded it, sets `bootargs` from
/// `-append` and rewrites the memory node from `-m`.
fn native_command(g: &GuestFiles, vcpus: u64, cmdline: &str) -> Result<Command> {
    // QEMU virt's RAM starts at 1 GiB, as the VM's does; its GIC, PL011 and PSCI (HVC at
    // EL1) are where the VM's device tree says.
    const QEMU_VIRT_RAM: u64 = 0x4000_0000;
    if vm_layout::RAM_BASE != QEMU_VIRT_RAM {
        bail!(
            "the VM's RAM starts at {:#x}, QEMU virt's at {QEMU_VIRT_RAM:#x}: the native run \
             cannot use the VM's device tree",
            vm_layout::RAM_BASE
        );
    }
    let mib = (1u64 << vm_layout::RAM_BITS) >> 20;
    let mut cmd = Command::new(QEMU);
    cmd.args(["-M", "virt,gic-version=3"])
        .args(["-cpu", "cortex-a57"])
        .args(["-smp", &vcpus.to_string()])
        .args(["-m", &format!("{mib}M")])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&g.image)
        .arg("-initrd")
        .arg(&g.initrd)
        .arg("-dtb")
        .arg(&g.dtb)
        .args(["-append", cmdline])
        .env("QEMU_AUDIO_DRV", "none");
    Ok(cmd)
}

/// The Bulkhead run: QEMU as `qemu::run` starts it (no icount), and the decoder of its
/// console.
fn bulkhead_command(built: &Built, smp: u32, raw: &Path) -> Result<(Command, Decoder)> {
    let cfg = RunConfig {
        smp,
        timeout: Some(TIMEOUT.as_secs()),
        expect: vec![MARKER.into()],
        vms: Vec::new(),
        forbid: Vec::new(),
        exit_status: None,
        virtualization: true,
        gdb: false,
        icount: false,
        echo: false,
        raw_path: raw.to_path_buf(),
        log_path: raw.with_extension("log"),
    };
    let cmd = qemu::command(&built.manifest.board, &cfg, &built.manifest.kernel)?;
    // Loading the defmt tables reads every ELF: done here, before the clock starts.
    let tables = DefmtTables::load(&built.manifest)?;
    Ok((cmd, Decoder::Defmt(Box::new(Console::new(tables)))))
}

/// A console line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    text: String,
    /// The kernel reported a failure.
    failure: bool,
}

/// Turns console bytes into lines.
enum Decoder {
    /// Plain text (the native serial console): lines end at `\n`, `\r` dropped.
    Text(Vec<u8>),
    /// Bulkhead's defmt console.
    Defmt(Box<Console<DefmtTables>>),
}

impl Decoder {
    fn text() -> Self {
        Decoder::Text(Vec::new())
    }

    fn push(&mut self, data: &[u8]) -> Vec<Seen> {
        match self {
            Decoder::Text(pending) => {
                let mut out = Vec::new();
                for &b in data {
                    match b {
                        b'\n' => out.push(Seen {
                            text: String::from_utf8_lossy(pending).into_owned(),
                            failure: false,
                        }),
                        b'\r' => continue,
                        b => {
                            pending.push(b);
                            continue;
                        }
                    }
                    pending.clear();
                }
                out
            }
            Decoder::Defmt(console) => console
                .push(data)
                .into_iter()
                .map(|l| {
                    let text = l.plain();
                    Seen {
                        failure: l.origin == Origin::Kernel
                            && FAILURE_MARKERS.iter().any(|m| text.contains(m)),
                        text,
                    }
                })
                .collect(),
        }
    }
}

/// How many CPUs the marker line says the guest brought up (`... up on N CPU(s)`).
fn marker_cpus(line: &str) -> Option<u64> {
    let rest = line.split(" up on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Kills QEMU when dropped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Event {
    /// Console bytes and when they were read.
    Out(Instant, Vec<u8>),
    OutEnd,
    Err(String),
}

/// Starts `cmd` and returns the time from just before the start to the read that
/// completed the last of the first lines containing each of `markers`; then stops QEMU.
/// The raw console goes to `raw`, its lines (and QEMU's stderr, as `[qemu] ...`) to
/// `log`, each after the milliseconds since the start at which it was read. Fails on a
/// timeout, a kernel failure line, QEMU exiting first, or a marker line saying the guest
/// brought up other than `vcpus` CPUs.
fn time_to_markers(
    mut cmd: Command,
    mut decoder: Decoder,
    raw: &Path,
    log: &Path,
    markers: &[String],
    vcpus: u64,
) -> Result<Duration> {
    let create = |p: &Path| File::create(p).with_context(|| format!("cannot create {}", shown(p)));
    let mut raw_file = create(raw)?;
    let log_file = create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let mut child = Reap(
        cmd.spawn()
            .with_context(|| format!("cannot start {QEMU} (is it installed?)"))?,
    );
    if let Some(mut out) = child.0.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .send(Event::Out(Instant::now(), buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Event::OutEnd);
        });
    }
    if let Some(err) = child.0.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                if tx.send(Event::Err(line)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);

    let deadline = start + TIMEOUT;
    let mut seen = vec![false; markers.len()];
    let waiting = |seen: &[bool]| {
        markers
            .iter()
            .zip(seen)
            .filter(|(_, s)| !**s)
            .map(|(m, _)| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let mut record = Record {
        log: log_file,
        log_path: log,
        tail: VecDeque::new(),
    };
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Event::Out(at, data)) => {
                let _ = raw_file.write_all(&data);
                for Seen { text, failure } in decoder.push(&data) {
                    record.keep(at.saturating_duration_since(start), &text);
                    if failure {
                        drop(child);
                        return Err(
                            record.failed(&format!("the kernel reported a failure: {text}"))
                        );
                    }
                    let Some(i) = (0..markers.len())
                        .find(|&i| !seen[i] && text.contains(markers[i].as_str()))
                    else {
                        continue;
                    };
                    seen[i] = true;
                    if let Some(n) = marker_cpus(&text).filter(|&n| n != vcpus) {
                        drop(child);
                        return Err(
                            record.failed(&format!("the guest came up on {n} CPU(s), not {vcpus}"))
                        );
                    }
                    if seen.iter().all(|&s| s) {
                        drop(child);
                        return Ok(at.saturating_duration_since(start));
                    }
                }
            }
            Ok(Event::Err(text)) => record.keep(start.elapsed(), &format!("[qemu] {text}")),
            Ok(Event::OutEnd) | Err(RecvTimeoutError::Disconnected) => {
                let status = child
                    .0
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| qemu::status_text(&s));
                // What QEMU said on stderr before it went.
                while let Ok(ev) = rx.recv_timeout(Duration::from_millis(100)) {
                    if let Event::Err(text) = ev {
                        record.keep(start.elapsed(), &format!("[qemu] {text}"));
                    }
                }
                return Err(record.failed(&format!(
                    "QEMU exited (status {status}) before the console showed {}",
                    waiting(&seen)
                )));
            }
            Err(RecvTimeoutError::Timeout) => {
                drop(child);
                return Err(record.failed(&format!(
                    "timeout after {} s waiting for {}",
                    TIMEOUT.as_secs(),
                    waiting(&seen)
                )));
            }
        }
    }
}

/// The decoded console of a run: its log file and last lines.
struct Record<'a> {
    log: File,
    log_path: &'a Path,
    tail: VecDeque<String>,
}

impl Record<'_> {
    /// Logs `line`, read `at` after QEMU's start (the log shows when each line came).
    fn keep(&mut self, at: Duration, line: &str) {
        // The log is a convenience copy; a full disk must not end the run.
        let _ = writeln!(self.log, "{:>6} ms  {line}", at.as_millis());
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    /// The error for a failed run, with the last lines of its console.
    fn failed(&self, why: &str) -> anyhow::Error {
        let lines: Vec<&str> = self.tail.iter().map(String::as_str).collect();
        anyhow!(
            "{why} (console in {}); its last lines:\n{}",
            shown(self.log_path),
            lines.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_across_reads() {
        let mut d = Decoder::text();
        assert!(d.push(b"[    0.1] Booting").is_empty());
        let lines = d.push(b" Linux\r\nbulkhead-guest: Linux 6.1 up on 2 CPU(s)\r\npart");
        let texts: Vec<&str> = lines.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "[    0.1] Booting Linux",
                "bulkhead-guest: Linux 6.1 up on 2 CPU(s)"
            ]
        );
        assert!(lines.iter().all(|s| !s.failure));
        assert_eq!(d.push(b"ial\n")[0].text, "partial");
    }

    #[test]
    fn load_average_of_proc() {
        assert_eq!(parse_loadavg("3.72 2.58 1.85 3/245 31337\n"), Some(3.72));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn cpus_of_the_marker() {
        let line = "[linux] INFO  linux| bulkhead-guest: Linux 6.1.0-56-cloud-arm64 up on 2 CPU(s)";
        assert!(line.contains(MARKER));
        assert_eq!(marker_cpus(line), Some(2));
        assert_eq!(
            marker_cpus("bulkhead-guest: Linux 6.1 up on four CPUs"),
            None
        );
        assert_eq!(marker_cpus("bulkhead-guest: Linux 6.1"), None);
    }

    #[test]
    fn native_command_matches_the_vm() {
        let g = GuestFiles {
            image: "Image".into(),
            initrd: "initramfs.cpio".into(),
            dtb: "vm-2cpu.dtb".into(),
        };
        let cmd = native_command(&g, 2, "console=ttyAMA0 bulkhead.poweroff").unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].as_str()
        };
        assert_eq!(after("-M"), "virt,gic-version=3", "EL1: no virtualization");
        assert_eq!(after("-smp"), "2");
        assert_eq!(after("-m"), "256M");
        assert_eq!(after("-kernel"), "Image");
        assert_eq!(after("-initrd"), "initramfs.cpio");
        assert_eq!(after("-dtb"), "vm-2cpu.dtb");
        assert_eq!(after("-append"), "console=ttyAMA0 bulkhead.poweroff");
    }

    #[test]
    fn the_system_is_one_poweroff_vm() {
        let system = system::load(&setup::repo_root().join(SYSTEM)).unwrap();
        let [vm] = system.vms.as_slice() else {
            panic!("{SYSTEM}: not one VM");
        };
        assert_eq!(vm.vcpus, 2);
        assert!(vm.cmdline.split_whitespace().any(|w| w == POWEROFF));
        let two = system::load(&setup::repo_root().join(SYSTEM_TWO)).unwrap();
        check_two(vm, &two).unwrap();
        assert_eq!(
            vm_markers(&two),
            [
                "linux-a| bulkhead-guest: Linux",
                "linux-b| bulkhead-guest: Linux"
            ]
        );
        let line = "[vmm] INFO  linux-b| bulkhead-guest: Linux 6.1.0-56-cloud-arm64 up on 2 CPU(s)";
        assert!(line.contains(vm_markers(&two)[1].as_str()));
        assert!(!line.contains(vm_markers(&two)[0].as_str()));
    }

    #[test]
    fn rounds_from_the_environment() {
        assert_eq!(parse_rounds(None).unwrap(), DEFAULT_ROUNDS);
        assert_eq!(parse_rounds(Some("")).unwrap(), DEFAULT_ROUNDS);
        assert_eq!(parse_rounds(Some("10")).unwrap(), 10);
        assert_eq!(parse_rounds(Some(" 1 ")).unwrap(), 1);
        for bad in ["0", "101", "ten", "-3"] {
            assert!(parse_rounds(Some(bad)).is_err(), "{bad}");
        }
    }
}
