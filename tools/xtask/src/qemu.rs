//! Runs a built system under QEMU, decoding and checking its console as it arrives.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::decode::{Console, DefmtTables, Line, Origin};
use crate::expect::Expectations;
use crate::image::Built;
use crate::say;
use crate::setup::QEMU;

/// Seconds a run may take when nothing else is said.
pub const DEFAULT_TIMEOUT: u64 = 30;
/// `run`'s default timeout for a system with Linux VMs, in seconds.
pub const DEFAULT_VM_TIMEOUT: u64 = 300;
/// Decoded lines kept for failure reports.
pub const TAIL_LINES: usize = 40;
/// How long output is still read after the kernel reports a failure.
const AFTER_FAILURE: Duration = Duration::from_millis(200);
/// Kernel lines that mean the run failed.
const FAILURE_MARKERS: &[&str] = &["KERNEL PANIC", "KERNEL EXCEPTION"];

/// What to run and what to look for.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// CPU count.
    pub smp: u32,
    /// Seconds before the run is abandoned; `None` waits forever.
    pub timeout: Option<u64>,
    /// Regexes that must match decoded lines, in order.
    pub expect: Vec<String>,
    /// Per VM: regexes that must match the lines of that VM's VMM task in order
    /// (independently of `expect` and of the other VMs).
    pub vms: Vec<(String, Vec<String>)>,
    /// Regexes that fail the run as soon as a decoded line matches one.
    pub forbid: Vec<String>,
    /// After the patterns, QEMU must also exit with this status.
    pub exit_status: Option<i32>,
    /// Give QEMU's CPUs the virtualization extensions (entry at EL2). Only tests that
    /// check the kernel's refusal of a lower entry level turn this off.
    pub virtualization: bool,
    /// Start halted with a GDB stub on port 1234.
    pub gdb: bool,
    /// Run with `-icount shift=0`: one instruction per virtual clock cycle (benchmarks).
    pub icount: bool,
    /// Print decoded lines (and QEMU's stderr) as they arrive.
    pub echo: bool,
    /// Where the raw console bytes go.
    pub raw_path: PathBuf,
    /// Where the decoded lines go.
    pub log_path: PathBuf,
}

/// How a successful run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Every expected pattern appeared (QEMU was stopped, or exited as expected).
    Matched(usize),
    /// QEMU exited by itself with this status (`None`: killed by a signal).
    Exited(Option<i32>),
}

/// The result of one run.
#[derive(Debug)]
pub struct RunResult {
    /// `Ok` if the run met its expectations, else why not.
    pub verdict: std::result::Result<Done, String>,
    /// The last [`TAIL_LINES`] lines of output.
    pub tail: VecDeque<String>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

enum Event {
    Out(Vec<u8>),
    OutEnd,
    Err(String),
}

/// The QEMU command line for a board.
pub fn command(board: &str, cfg: &RunConfig, kernel: &Path) -> Result<Command> {
    // Per board: the machine (with and without EL2), extra options before the common ones.
    let (machine, extra): (&str, &[&str]) = match board {
        "qemu-virt" => (
            if cfg.virtualization {
                "virt,virtualization=on,gic-version=3"
            } else {
                "virt,gic-version=3"
            },
            &[
                "-cpu",
                "cortex-a57",
                "-m",
                "1G",
                "-semihosting-config",
                "enable=on,target=native",
            ],
        ),
        // Four Cortex-A53 (at most; -smp picks how many exist), GICv2, the Cadence UART0
        // on stdio, no semihosting (the board reports every ending with PSCI
        // SYSTEM_OFF), no DTB.
        "zcu102" => {
            if cfg.smp > 4 {
                bail!("board `zcu102` has 4 application cores, not {}", cfg.smp);
            }
            (
                if cfg.virtualization {
                    "xlnx-zcu102,virtualization=on"
                } else {
                    "xlnx-zcu102"
                },
                &["-m", "2G"],
            )
        }
        _ => bail!("board `{board}` cannot be run under QEMU"),
    };
    let mut cmd = Command::new(QEMU);
    cmd.args(["-M", machine])
        .args(extra)
        .args(["-smp", &cfg.smp.to_string()])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .args(if cfg.icount {
            &["-icount", "shift=0"][..]
        } else {
            &[][..]
        })
        .arg("-kernel")
        .arg(kernel)
        .env("QEMU_AUDIO_DRV", "none");
    if cfg.gdb {
        cmd.args(["-s", "-S"]);
    }
    Ok(cmd)
}

/// Describes an exit status as `3` or `signal 9`.
pub fn status_text(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => status.to_string(),
    }
}

fn spawn_readers(child: &mut Child, tx: &Sender<Event>) {
    if let Some(mut out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(Event::Out(buf[..n].to_vec())).is_err() {
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
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(err);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                line.clear();
                if tx.send(Event::Err(text)).is_err() {
                    return;
                }
            }
        });
    }
}

/// Per-run bookkeeping of the output.
struct Sink {
    echo: bool,
    color: bool,
    log: File,
    tail: VecDeque<String>,
}

impl Sink {
    fn keep(&mut self, plain: &str) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(plain.to_string());
        // The log is a convenience copy; a full disk must not end the run.
        let _ = writeln!(self.log, "{plain}");
    }

    fn line(&mut self, line: &Line) {
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", line.render(self.color));
            let _ = out.flush();
        }
        self.keep(&line.plain());
    }

    fn qemu_stderr(&mut self, text: &str) {
        let text = format!("[qemu] {text}");
        if self.echo {
            eprintln!("{text}");
        }
        self.keep(&text);
    }
}

fn create(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Runs `built` under QEMU as `cfg` says. Errors are problems starting the run; how the
/// run itself went is in the result's verdict.
pub fn run(built: &Built, cfg: &RunConfig) -> Result<RunResult> {
    let tables = DefmtTables::load(&built.manifest)?;
    let mut console = Console::new(tables);
    let mut expect = Expectations::new(&cfg.expect, &cfg.vms, &cfg.forbid)?;
    let mut raw = create(&cfg.raw_path)?;
    let mut sink = Sink {
        echo: cfg.echo,
        color: cfg.echo
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none(),
        log: create(&cfg.log_path)?,
        tail: VecDeque::new(),
    };
    let kernel = if built.boot_flat {
        &built.manifest.image
    } else {
        &built.manifest.kernel
    };
    let mut cmd = command(&built.manifest.board, cfg, kernel)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if cfg.gdb {
        say!("QEMU is halted, waiting for a debugger on port 1234; attach with:");
        say!(
            "  gdb-multiarch {} -ex 'target remote :1234'",
            kernel.display()
        );
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {QEMU} (is it installed?)"))?;
    let (tx, rx) = mpsc::channel();
    spawn_readers(&mut child, &tx);
    drop(tx);

    let deadline = cfg.timeout.map(|s| start + Duration::from_secs(s));
    let mut failure: Option<(Instant, String)> = None;
    let mut stdout_open = true;
    let verdict = loop {
        let now = Instant::now();
        let timed_out = deadline.is_some_and(|d| now >= d);
        if let Some((until, reason)) = &failure {
            if now >= *until || !stdout_open || timed_out {
                break Err(reason.clone());
            }
        }
        if timed_out {
            let secs = cfg.timeout.unwrap_or_default();
            break Err(timeout_text(secs, &expect, cfg.exit_status));
        }
        if !stdout_open {
            match child.try_wait() {
                Ok(Some(status)) => break exit_verdict(&status, &expect, cfg.exit_status),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break Err(format!("cannot wait for QEMU: {e}")),
            }
            continue;
        }
        let mut wait = Duration::from_millis(250);
        for t in [deadline, failure.as_ref().map(|f| f.0)]
            .into_iter()
            .flatten()
        {
            wait = wait.min(t.saturating_duration_since(now));
        }
        let lines = match rx.recv_timeout(wait) {
            Ok(Event::Out(data)) => {
                let _ = raw.write_all(&data);
                console.push(&data)
            }
            Ok(Event::Err(text)) => {
                sink.qemu_stderr(&text);
                Vec::new()
            }
            Ok(Event::OutEnd) | Err(RecvTimeoutError::Disconnected) => {
                stdout_open = false;
                console.finish()
            }
            Err(RecvTimeoutError::Timeout) => Vec::new(),
        };
        for line in &lines {
            sink.line(line);
            let plain = line.plain();
            if failure.is_none()
                && line.origin == Origin::Kernel
                && FAILURE_MARKERS.iter().any(|m| plain.contains(m))
            {
                failure = Some((
                    Instant::now() + AFTER_FAILURE,
                    format!("kernel reported a failure: {plain}"),
                ));
            }
            if let Err(reason) = expect.offer(&plain) {
                failure.get_or_insert((Instant::now() + AFTER_FAILURE, reason));
            }
        }
        if failure.is_none() && !expect.is_empty() && expect.done() && cfg.exit_status.is_none() {
            break Ok(Done::Matched(expect.len()));
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    // Lines QEMU wrote to stderr while it was being stopped.
    while let Ok(ev) = rx.try_recv() {
        if let Event::Err(text) = ev {
            sink.qemu_stderr(&text);
        }
    }
    Ok(RunResult {
        verdict,
        tail: sink.tail,
        elapsed: start.elapsed(),
    })
}

fn timeout_text(secs: u64, expect: &Expectations, exit_status: Option<i32>) -> String {
    if !expect.done() {
        return format!("timeout after {secs} s: {}", expect.report());
    }
    match exit_status {
        Some(want) if !expect.is_empty() => format!(
            "timeout after {secs} s: all {} expected patterns appeared, but QEMU did not \
             exit (expected status {want})",
            expect.len()
        ),
        _ => format!("timeout after {secs} s: QEMU did not exit"),
    }
}

fn exit_verdict(
    status: &ExitStatus,
    expect: &Expectations,
    exit_status: Option<i32>,
) -> std::result::Result<Done, String> {
    let text = status_text(status);
    if !expect.done() {
        return Err(format!(
            "QEMU exited with status {text} before all patterns matched: {}",
            expect.report()
        ));
    }
    match exit_status {
        Some(want) if status.code() != Some(want) => {
            Err(format!("QEMU exited with status {text}, expected {want}"))
        }
        _ if !expect.is_empty() => Ok(Done::Matched(expect.len())),
        _ => Ok(Done::Exited(status.code())),
    }
}
