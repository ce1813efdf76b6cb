//! Command-line parsing (plain `std`).

use std::path::PathBuf;

use crate::bench::{self, BenchOptions};
use crate::test::TestOptions;

/// The help text.
pub const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [OPTIONS]

Commands:
  build [SYSTEM] [--board BOARD] [--log LEVEL]
        Build the task binaries, pack the boot payload and build the kernel into
        target/bulkhead/<system name>/: kernel.elf (for QEMU) and kernel.bin, the same
        kernel as a flat arm64 Image that U-Boot's booti loads (docs/boards/zcu102.md).
        SYSTEM defaults to systems/default.toml.
  image [SYSTEM] [--board BOARD] [--log LEVEL]
        The same as build (its name in the board docs).
  run [SYSTEM] [--board BOARD] [--smp N] [--timeout SECS] [--expect REGEX]...
      [--gdb] [--log LEVEL] [--raw FILE]
        Build, then boot under QEMU and print the decoded console. --expect
        patterns must match decoded lines in order; the run stops once all have.
        --timeout 0 waits forever (default 30, 300 for systems with VMs; --gdb also
        disables it).
        --gdb starts QEMU halted with a GDB stub on port 1234.
        --raw FILE saves the raw console bytes there (default: console.bin in
        the build directory; decoded lines go to console.log beside it).
  test [--host-only | --scenarios-only] [FILTER]
        Run `cargo test --workspace`, the loom model checks of kcore and the
        isolation check of every shipped system, then every tests/scenarios/*.toml
        whose file name contains FILTER, under QEMU.
  check [SYSTEM]
        Run the isolation analysis on a system description: print its partitions,
        channels and verdict; exit non-zero, listing each violation and the grants
        that cause it, when a partition can get authority it should not have.
        `build` (and so `run` and `test`) refuses such a system.
  lint  Check formatting and run clippy for the host and the bare-metal target.
  bench [GROUP...] [--record]
        Run the benchmark groups named (default: all), print each figure beside the
        value recorded in docs/benchmarks.md and its reference, and write every
        figure to target/bench/results.json. Groups:
          ipc     syscall and IPC round trips, in instructions under QEMU's -icount
                  (deterministic: runs twice and fails if the runs differ)
          stage2  stage-2 faults per second of the host walker, lock-free against
                  a global lock, 1 and 2 threads (built in release)
        --record rewrites the recorded table in docs/benchmarks.md with the new
        figures, each beside the value it replaces.
  help  Show this text.

--log sets DEFMT_LOG for the build (default: info).";

/// Options of `build` (and of `run`, which builds first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    /// The system description, as given.
    pub system: Option<PathBuf>,
    /// Overrides the description's board.
    pub board: Option<String>,
    /// `DEFMT_LOG`.
    pub log: Option<String>,
}

/// Options of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// What to build.
    pub build: BuildArgs,
    /// CPU count.
    pub smp: Option<u32>,
    /// Seconds; 0 for none.
    pub timeout: Option<u64>,
    /// Patterns to wait for, in order.
    pub expect: Vec<String>,
    /// Wait for a debugger.
    pub gdb: bool,
    /// Where raw console bytes go.
    pub raw: Option<PathBuf>,
}

/// A parsed command line.
#[derive(Debug, Clone)]
pub enum Command {
    /// `build`.
    Build(BuildArgs),
    /// `run`.
    Run(RunArgs),
    /// `test`.
    Test(TestOptions),
    /// `check`, with the description as given.
    Check(Option<PathBuf>),
    /// `lint`.
    Lint,
    /// `bench`.
    Bench(BenchOptions),
    /// `help`.
    Help,
}

/// Splits `--name=value` and fetches `--name value`.
struct Args {
    rest: std::vec::IntoIter<String>,
}

impl Args {
    fn value(&mut self, name: &str, inline: Option<String>) -> Result<String, String> {
        inline
            .or_else(|| self.rest.next())
            .ok_or_else(|| format!("{name} needs a value"))
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: `{value}` is not a valid number"))
}

/// Parses the arguments after the program name.
pub fn parse(args: Vec<String>) -> Result<Command, String> {
    let mut args = Args {
        rest: args.into_iter(),
    };
    let Some(command) = args.rest.next() else {
        return Err("no command given".to_string());
    };
    let mut build = BuildArgs {
        system: None,
        board: None,
        log: None,
    };
    let mut run = RunArgs {
        build: build.clone(),
        smp: None,
        timeout: None,
        expect: Vec::new(),
        gdb: false,
        raw: None,
    };
    let mut test = TestOptions::default();
    let mut bench_opts = BenchOptions::default();
    let mut positional: Vec<String> = Vec::new();
    let is_build = command == "build" || command == "image" || command == "run";
    let is_run = command == "run";
    let is_test = command == "test";
    let is_bench = command == "bench";
    if !matches!(
        command.as_str(),
        "build" | "image" | "run" | "test" | "check" | "lint" | "bench" | "help" | "-h" | "--help"
    ) {
        return Err(format!("unknown command `{command}`"));
    }
    while let Some(arg) = args.rest.next() {
        if arg == "--" || !arg.starts_with("--") {
            if arg == "-h" {
                return Ok(Command::Help);
            }
            positional.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let flag = |inline: &Option<String>| match inline {
            Some(_) => Err(format!("{name} takes no value")),
            None => Ok(()),
        };
        match name.as_str() {
            "--help" => return Ok(Command::Help),
            "--board" if is_build => build.board = Some(args.value(&name, inline)?),
            "--log" if is_build => build.log = Some(args.value(&name, inline)?),
            "--smp" if is_run => run.smp = Some(number(&name, &args.value(&name, inline)?)?),
            "--timeout" if is_run => {
                run.timeout = Some(number(&name, &args.value(&name, inline)?)?)
            }
            "--expect" if is_run => run.expect.push(args.value(&name, inline)?),
            "--raw" if is_run => run.raw = Some(args.value(&name, inline)?.into()),
            "--gdb" if is_run => {
                flag(&inline)?;
                run.gdb = true;
            }
            "--host-only" if is_test => {
                flag(&inline)?;
                test.host_only = true;
            }
            "--scenarios-only" if is_test => {
                flag(&inline)?;
                test.scenarios_only = true;
            }
            "--record" if is_bench => {
                flag(&inline)?;
                bench_opts.record = true;
            }
            _ => return Err(format!("`{command}` has no option {name}")),
        }
    }
    let max_positional = if is_bench {
        usize::MAX
    } else {
        usize::from(is_build || is_test || command == "check")
    };
    if positional.len() > max_positional {
        return Err(format!(
            "unexpected argument `{}` for `{command}`",
            positional[max_positional]
        ));
    }
    let first = positional.first().cloned();
    match command.as_str() {
        "build" | "image" | "run" => {
            build.system = first.map(PathBuf::from);
            if is_run {
                run.build = build;
                Ok(Command::Run(run))
            } else {
                Ok(Command::Build(build))
            }
        }
        "test" => {
            if test.host_only && test.scenarios_only {
                return Err("--host-only and --scenarios-only exclude each other".to_string());
            }
            test.filter = first;
            Ok(Command::Test(test))
        }
        "check" => Ok(Command::Check(first.map(PathBuf::from))),
        "lint" => Ok(Command::Lint),
        "bench" => {
            for name in positional {
                if !bench::GROUPS.iter().any(|g| g.0 == name) {
                    return Err(format!(
                        "unknown benchmark group `{name}` (known: {})",
                        bench::known_groups()
                    ));
                }
                if !bench_opts.groups.contains(&name) {
                    bench_opts.groups.push(name);
                }
            }
            Ok(Command::Bench(bench_opts))
        }
        _ => Ok(Command::Help),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn run_options() {
        let Ok(Command::Run(r)) = p(&[
            "run",
            "systems/x.toml",
            "--smp",
            "2",
            "--expect",
            "a b",
            "--expect=c",
            "--gdb",
            "--log=debug",
            "--timeout",
            "5",
        ]) else {
            panic!("not a run");
        };
        assert_eq!(r.build.system, Some(PathBuf::from("systems/x.toml")));
        assert_eq!(r.build.log.as_deref(), Some("debug"));
        assert_eq!(r.smp, Some(2));
        assert_eq!(r.timeout, Some(5));
        assert_eq!(r.expect, ["a b", "c"]);
        assert!(r.gdb);
    }

    #[test]
    fn test_options() {
        let Ok(Command::Test(t)) = p(&["test", "--scenarios-only", "boot"]) else {
            panic!("not a test");
        };
        assert!(t.scenarios_only && !t.host_only);
        assert_eq!(t.filter.as_deref(), Some("boot"));
        assert!(p(&["test", "--host-only", "--scenarios-only"]).is_err());
    }

    #[test]
    fn check_takes_a_system() {
        let Ok(Command::Check(s)) = p(&["check", "systems/x.toml"]) else {
            panic!("not a check");
        };
        assert_eq!(s, Some(PathBuf::from("systems/x.toml")));
        assert!(matches!(p(&["check"]), Ok(Command::Check(None))));
    }

    #[test]
    fn bench_options() {
        let Ok(Command::Bench(b)) = p(&["bench"]) else {
            panic!("not a bench");
        };
        assert_eq!(b, BenchOptions::default());
        let Ok(Command::Bench(b)) = p(&["bench", "stage2", "--record", "ipc", "stage2"]) else {
            panic!("not a bench");
        };
        assert_eq!(b.groups, ["stage2", "ipc"]);
        assert!(b.record);
        let e = p(&["bench", "stage3"]).unwrap_err();
        assert!(
            e.contains("unknown benchmark group `stage3`") && e.contains("ipc, stage2"),
            "{e}"
        );
        assert!(p(&["bench", "--record=yes"])
            .unwrap_err()
            .contains("takes no value"));
        assert!(p(&["bench", "--smp", "2"]).is_err());
    }

    #[test]
    fn errors() {
        assert!(p(&[]).is_err());
        assert!(p(&["frob"]).unwrap_err().contains("unknown command"));
        assert!(p(&["build", "--smp", "2"])
            .unwrap_err()
            .contains("no option --smp"));
        assert!(p(&["run", "--smp"]).unwrap_err().contains("needs a value"));
        assert!(p(&["run", "--smp", "x"])
            .unwrap_err()
            .contains("not a valid number"));
        assert!(p(&["run", "a", "b"])
            .unwrap_err()
            .contains("unexpected argument `b`"));
        assert!(p(&["lint", "x"]).is_err());
        assert!(p(&["check", "a", "b"]).is_err());
        assert!(p(&["check", "--smp", "2"]).is_err());
        assert!(p(&["run", "--gdb=1"])
            .unwrap_err()
            .contains("takes no value"));
        assert!(matches!(p(&["build", "--help"]), Ok(Command::Help)));
    }
}
