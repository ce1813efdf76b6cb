//! `cargo xtask`: builds Bulkhead systems, runs them under QEMU and tests them.
//!
//! Progress and errors go to stderr prefixed `xtask:`; the decoded console goes to stdout.
#![forbid(unsafe_code)]

mod bare;
mod bench;
mod bench_boot;
mod bench_doc;
mod bench_size;
mod capdiff;
mod check;
mod cli;
mod cpio;
mod decode;
mod expect;
mod fdt;
mod guest;
mod image;
mod lint;
mod qemu;
mod setup;
mod system;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

use cli::{BuildArgs, Command, RunArgs};
use qemu::{Done, RunConfig};
use system::System;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => {
            setup::ensure_target()?;
            let (system, log) = load_system(&args)?;
            image::build(&system, &log)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run(args),
        Command::Test(opts) => test::test(&opts),
        Command::Check(path) => {
            let system = system::load(&resolve(path.as_deref()))?;
            Ok(if check::check(&system)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(opts) => bench::bench(&opts),
        Command::Lint => {
            lint::lint()?;
            say!("lint passed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Finds a description given on the command line: relative to the current directory,
/// else to the repository root.
fn resolve(path: Option<&Path>) -> PathBuf {
    let root = setup::repo_root();
    match path {
        None => root.join("systems").join("default.toml"),
        Some(p) if p.is_absolute() || p.exists() => p.to_path_buf(),
        Some(p) => root.join(p),
    }
}

fn load_system(args: &BuildArgs) -> Result<(System, String)> {
    let mut system = system::load(&resolve(args.system.as_deref()))?;
    if let Some(board) = &args.board {
        system::check_board(board)?;
        system.board = board.clone();
    }
    let log = args
        .log
        .clone()
        .unwrap_or_else(|| image::DEFAULT_LOG.to_string());
    Ok((system, log))
}

/// Writes each VM's console lines (`<vm>| ...` in the decoded log) to
/// `console-<vm>.log` beside the whole log, and says where.
fn split_vm_consoles(system: &system::System, log: &std::path::Path, out: &std::path::Path) {
    if system.vms.is_empty() {
        return;
    }
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    for vm in &system.vms {
        let lines = vm_console(&text, &vm.name);
        let path = out.join(format!("console-{}.log", vm.name));
        if std::fs::write(&path, lines).is_ok() {
            say!("console of VM {}: {}", vm.name, setup::shown(&path));
        }
    }
}

/// The console lines of VM `name` in a decoded log: what follows `name| `.
fn vm_console(log: &str, name: &str) -> String {
    let tag = format!("{name}| ");
    let mut out = String::new();
    for line in log.lines() {
        if let Some(i) = line.find(&tag) {
            out.push_str(&line[i + tag.len()..]);
            out.push('\n');
        }
    }
    out
}

fn run(args: RunArgs) -> Result<ExitCode> {
    setup::ensure_target()?;
    setup::ensure_qemu()?;
    let (system, log) = load_system(&args.build)?;
    let smp = match args.smp {
        Some(n) => system::check_smp(n.into())?,
        None => system.smp.unwrap_or(system::DEFAULT_SMP),
    };
    // Catch bad patterns before spending time on the build.
    expect::Expect::new(&args.expect)?;
    let built = image::build(&system, &log)?;
    let timeout = match (args.gdb, args.timeout) {
        (true, _) | (false, Some(0)) => None,
        // Linux guests take longer than the native tasks of bring-up systems.
        (false, None) if !system.vms.is_empty() => Some(qemu::DEFAULT_VM_TIMEOUT),
        (false, t) => Some(t.unwrap_or(qemu::DEFAULT_TIMEOUT)),
    };
    let cfg = RunConfig {
        smp,
        timeout,
        expect: args.expect,
        vms: Vec::new(),
        forbid: Vec::new(),
        exit_status: None,
        virtualization: true,
        icount: false,
        gdb: args.gdb,
        echo: true,
        raw_path: args.raw.unwrap_or_else(|| built.out.join("console.bin")),
        log_path: built.out.join("console.log"),
    };
    say!(
        "booting {} on {} with {smp} CPU(s){}",
        setup::shown(&built.manifest.kernel),
        built.manifest.board,
        timeout
            .map(|t| format!(", timeout {t} s"))
            .unwrap_or_default()
    );
    let result = qemu::run(&built, &cfg)?;
    split_vm_consoles(&system, &cfg.log_path, &built.out);
    match result.verdict {
        Ok(Done::Matched(n)) => {
            say!("all {n} expected patterns seen");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Done::Exited(Some(0))) => Ok(ExitCode::SUCCESS),
        Ok(Done::Exited(Some(code))) => {
            say!("QEMU exited with status {code}");
            Ok(ExitCode::from(
                u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1),
            ))
        }
        Ok(Done::Exited(None)) => {
            say!("QEMU was killed by a signal");
            Ok(ExitCode::FAILURE)
        }
        Err(reason) => bail!("{reason}"),
    }
}

#[cfg(test)]
mod vm_console_tests {
    #[test]
    fn picks_one_vm_s_lines() {
        let log = "[kernel c0 0.1] INFO  boot\n[linux-a] INFO  linux-a| hello\n[linux-b] INFO  linux-b| other\n[linux-a] INFO  linux-a| [    0.0] Booting\n";
        assert_eq!(
            super::vm_console(log, "linux-a"),
            "hello\n[    0.0] Booting\n"
        );
        assert_eq!(super::vm_console(log, "linux-b"), "other\n");
    }
}
