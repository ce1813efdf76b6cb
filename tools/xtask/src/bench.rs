//! `cargo xtask bench`: the benchmark system under QEMU's `-icount shift=0`, where the PMU
//! cycle counter counts instructions, so the figures repeat exactly from run to run. Each
//! benchmark runs twice and must give the same numbers; the table shows them beside the
//! reference figures measured the same way on this QEMU.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::image;
use crate::qemu::{self, RunConfig};
use crate::say;
use crate::setup;
use crate::system;

/// (benchmark, what it is, reference, target) — references from `../shared` facts: seL4
/// release, fastpath, hypervisor mode, on this QEMU 7.2 virt / cortex-a57, one way.
const ROWS: &[(&str, &str, &str, &str)] = &[
    (
        "syscall-null",
        "an unknown syscall: kernel entry, decode, error, exit",
        "-",
        "-",
    ),
    (
        "ipc-roundtrip-4",
        "Call + ReplyRecv round trip, 4-word message, same core",
        "seL4 532 (255 + 277)",
        "<= 480 (230 + 250)",
    ),
    (
        "ipc-roundtrip-10",
        "Call + ReplyRecv round trip, 10-word message, same core",
        "seL4 1502 (764 + 738)",
        "-",
    ),
];

fn parse(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|l| l.split("BENCH ").nth(1))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

fn once(built: &image::Built, i: u32) -> Result<Vec<(String, u64)>> {
    let out = setup::repo_root().join("target").join("bench");
    std::fs::create_dir_all(&out)?;
    let cfg = RunConfig {
        smp: 1,
        timeout: Some(120),
        expect: vec!["task bench exited with status 0".into()],
        exit_status: None,
        virtualization: true,
        gdb: false,
        icount: true,
        echo: false,
        raw_path: out.join(format!("console-{i}.bin")),
        log_path: out.join(format!("console-{i}.log")),
    };
    let r = qemu::run(built, &cfg)?;
    if let Err(why) = r.verdict {
        bail!(
            "benchmark run failed: {why}\n{}",
            r.tail.into_iter().collect::<Vec<_>>().join("\n")
        );
    }
    let log = std::fs::read_to_string(&cfg.log_path).context("reading the benchmark console")?;
    let figures = parse(&log);
    if figures.is_empty() || figures.iter().any(|(_, v)| *v == 0) {
        bail!("the benchmark printed no (or zero) figures: {figures:?}");
    }
    Ok(figures)
}

/// Runs the benchmarks.
pub fn bench() -> Result<ExitCode> {
    setup::ensure_target()?;
    setup::ensure_qemu()?;
    let sys = system::load(&setup::repo_root().join("tests/systems/bench.toml"))?;
    let built = image::build(&sys, "info")?;
    say!("running the benchmarks twice under -icount shift=0");
    let a = once(&built, 1)?;
    let b = once(&built, 2)?;
    if a != b {
        bail!("two runs gave different instruction counts: {a:?} vs {b:?}");
    }
    let mut table = String::new();
    let mut json = String::from("{\n");
    writeln!(
        table,
        "{:<18} {:>12}  {:<24} {:<20} what",
        "benchmark", "instructions", "reference", "target"
    )?;
    for (i, (name, v)) in a.iter().enumerate() {
        let (what, reference, target) = ROWS
            .iter()
            .find(|r| r.0 == name)
            .map_or(("", "-", "-"), |r| (r.1, r.2, r.3));
        writeln!(
            table,
            "{name:<18} {v:>12}  {reference:<24} {target:<20} {what}"
        )?;
        let comma = if i + 1 < a.len() { "," } else { "" };
        writeln!(json, "  \"{name}\": {v}{comma}")?;
    }
    json.push_str("}\n");
    print!("{table}");
    let path = setup::repo_root()
        .join("target")
        .join("bench")
        .join("results.json");
    std::fs::write(&path, json)?;
    say!("both runs identical; results in {}", setup::shown(&path));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_bench_lines() {
        let log = "[bench] INFO  BENCH ipc-roundtrip-4 812\nnoise\n[bench] INFO  BENCH x 5\n";
        assert_eq!(
            super::parse(log),
            vec![("ipc-roundtrip-4".to_string(), 812), ("x".to_string(), 5)]
        );
    }
}
