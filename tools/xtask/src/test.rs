//! `cargo xtask test`: host tests, then every scenario under QEMU.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::expect::Expectations;
use crate::image::{self, Built};
use crate::qemu::{self, RunConfig};
use crate::say;
use crate::setup::{self, shown};
use crate::system::{self, DEFAULT_SMP};

/// A scenario file (`tests/scenarios/*.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows.
    pub description: String,
    /// The system description, relative to the repository root.
    pub system: String,
    /// CPU counts to run with, one run each.
    pub smp: Option<Vec<i64>>,
    /// Seconds each run may take.
    pub timeout: Option<u64>,
    /// Regexes that must match decoded lines in order.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Per VM of the system: regexes that must match the lines of its VMM task (its
    /// guest's console, `<vm>| ...`, and the VMM's log) in order, independently of
    /// `expect` and of the other VMs.
    #[serde(default)]
    pub expect_vm: BTreeMap<String, Vec<String>>,
    /// Regexes that fail the run as soon as any decoded line matches one.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// After the patterns, QEMU must exit with this status.
    pub exit_status: Option<i32>,
    /// Run QEMU with the virtualization extensions (entry at EL2); default true.
    pub virtualization: Option<bool>,
    /// After the run, compare the `CAPDIFF` digests the task printed with the model's.
    #[serde(default)]
    pub capdiff: bool,
    /// Boot the flat arm64 `Image` (`kernel.bin`) instead of the ELF.
    #[serde(default)]
    pub flat_image: bool,
}

/// The scenario's patterns for a run with `smp` CPUs: `{smp}` stands for the count.
pub fn patterns_for(expect: &[String], smp: u32) -> Vec<String> {
    expect
        .iter()
        .map(|p| p.replace("{smp}", &smp.to_string()))
        .collect()
}

impl Scenario {
    /// Parses and checks a scenario; `path` is used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let file = path.display();
        let s: Scenario = toml::from_str(text).map_err(|e| anyhow!("{file}: {e}"))?;
        for &n in s.smp.iter().flatten() {
            system::check_smp(n).map_err(|e| anyhow!("{file}: {e}"))?;
        }
        if s.smp.as_ref().is_some_and(Vec::is_empty) {
            bail!("{file}: smp = [] runs nothing; leave it out for the system's default");
        }
        if s.timeout == Some(0) {
            bail!("{file}: timeout must be at least 1 second");
        }
        if s.expect.is_empty() && s.expect_vm.is_empty() && s.exit_status.is_none() {
            bail!("{file}: give `expect` patterns, an `exit_status`, or both");
        }
        if let Some((vm, _)) = s.expect_vm.iter().find(|(_, p)| p.is_empty()) {
            bail!("{file}: expect_vm.{vm} is empty");
        }
        Expectations::new(&patterns_for(&s.expect, 1), &s.vm_patterns(1), &s.forbid)
            .map_err(|e| anyhow!("{file}: {e}"))?;
        Ok(s)
    }

    /// The per-VM patterns for a run with `smp` CPUs.
    pub fn vm_patterns(&self, smp: u32) -> Vec<(String, Vec<String>)> {
        self.expect_vm
            .iter()
            .map(|(vm, p)| (vm.clone(), patterns_for(p, smp)))
            .collect()
    }

    /// Checks that every VM named in `expect_vm` is a VM of `system`.
    pub fn check_vms(&self, system: &system::System) -> Result<()> {
        for vm in self.expect_vm.keys() {
            if !system.vms.iter().any(|v| &v.name == vm) {
                let names: Vec<&str> = system.vms.iter().map(|v| v.name.as_str()).collect();
                bail!(
                    "expect_vm names `{vm}`, which is not a VM of {} (its VMs: {})",
                    self.system,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
        }
        Ok(())
    }
}

/// Which parts of the test suite to run.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Skip the scenarios.
    pub host_only: bool,
    /// Skip the host tests.
    pub scenarios_only: bool,
    /// Only scenario files whose name contains this.
    pub filter: Option<String>,
}

fn scenario_files(filter: Option<&str>) -> Result<Vec<PathBuf>> {
    let dir = setup::repo_root().join("tests").join("scenarios");
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name.filter(|n| n.ends_with(".toml")) else {
            continue;
        };
        if filter.is_none_or(|f| name.contains(f)) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Counts of scenario runs.
#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    /// Counts a failed run; `label` is printed first unless its line is already started.
    fn fail(&mut self, label: Option<&str>, reason: &str, tail: &[String]) {
        self.failed += 1;
        match label {
            Some(label) => println!("{label} ... FAILED: {reason}"),
            None => println!("FAILED: {reason}"),
        }
        if !tail.is_empty() {
            println!("    last {} lines of output:", tail.len());
            for line in tail {
                println!("    | {line}");
            }
        }
    }
}

struct Runner {
    tally: Tally,
    builds: HashMap<PathBuf, std::result::Result<Built, String>>,
}

impl Runner {
    fn build(&mut self, path: &Path) -> std::result::Result<Built, String> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.builds
            .entry(key)
            .or_insert_with(|| {
                let system = system::load(path).map_err(|e| format!("{e:#}"))?;
                image::build(&system, image::DEFAULT_LOG).map_err(|e| format!("{e:#}"))
            })
            .clone()
    }

    fn scenario(&mut self, file: &Path) {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!("scenario {name}");
        let scenario = match std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))
            .and_then(|text| Scenario::parse(Path::new(&shown(file)), &text))
        {
            Ok(s) => s,
            Err(e) => return self.tally.fail(Some(&label), &format!("{e:#}"), &[]),
        };
        let system_path = setup::repo_root().join(&scenario.system);
        if let Err(e) = system::load(&system_path).and_then(|sys| scenario.check_vms(&sys)) {
            return self.tally.fail(Some(&label), &format!("{e:#}"), &[]);
        }
        let built = self.build(&system_path);
        // Values were checked when the scenario was parsed.
        let smps: Vec<u32> = match (&scenario.smp, &built) {
            (Some(list), _) => list.iter().map(|&n| n as u32).collect(),
            (None, Ok(b)) => vec![b.manifest.smp.unwrap_or(DEFAULT_SMP)],
            (None, Err(_)) => vec![DEFAULT_SMP],
        };
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                for smp in smps {
                    let label = format!("{label} [smp {smp}]");
                    self.tally
                        .fail(Some(&label), &format!("build failed: {e}"), &[]);
                }
                return;
            }
        };
        let logs = setup::repo_root()
            .join("target")
            .join("bulkhead")
            .join("scenarios");
        for smp in smps {
            let label = format!("scenario {name} [smp {smp}]");
            let waits = scenario.expect.is_empty() && scenario.expect_vm.is_empty();
            let exit_status = match (scenario.exit_status, waits) {
                (Some(s), _) => Some(s),
                (None, true) => Some(0),
                (None, false) => None,
            };
            let cfg = RunConfig {
                smp,
                timeout: Some(scenario.timeout.unwrap_or(qemu::DEFAULT_TIMEOUT)),
                expect: patterns_for(&scenario.expect, smp),
                vms: scenario.vm_patterns(smp),
                forbid: scenario.forbid.clone(),
                exit_status,
                virtualization: scenario.virtualization.unwrap_or(true),
                icount: false,
                gdb: false,
                echo: false,
                raw_path: logs.join(format!("{name}-smp{smp}.bin")),
                log_path: logs.join(format!("{name}-smp{smp}.log")),
            };
            print!("{label} ... ");
            let _ = std::io::stdout().flush();
            let built = image::Built {
                boot_flat: scenario.flat_image,
                ..built.clone()
            };
            match qemu::run(&built, &cfg) {
                Ok(r) => match r.verdict.and_then(|d| {
                    if scenario.capdiff {
                        crate::capdiff::compare(&cfg.log_path).map_err(|e| format!("{e:#}"))?;
                    }
                    Ok(d)
                }) {
                    Ok(_) => {
                        self.tally.passed += 1;
                        println!("ok ({:.1}s)", r.elapsed.as_secs_f64());
                    }
                    Err(reason) => {
                        let tail: Vec<String> = r.tail.into_iter().collect();
                        self.tally.fail(None, &reason, &tail);
                        println!("    scenario: {}", scenario.description);
                        println!("    console: {}", shown(&cfg.log_path));
                    }
                },
                Err(e) => self.tally.fail(None, &format!("{e:#}"), &[]),
            }
        }
    }
}

/// Every shipped system (`systems/*.toml`) must pass the isolation analysis and the leaky
/// example (`tests/systems/leaky.toml`) must be refused.
fn check_isolation() -> Result<()> {
    let root = setup::repo_root();
    let mut shipped: Vec<_> = std::fs::read_dir(root.join("systems"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    shipped.sort();
    for p in &shipped {
        let sys = system::load(p)?;
        if !crate::check::analyse(&sys)?.is_isolated() {
            anyhow::bail!(
                "shipped system {} is not isolated (run `cargo xtask check` on it)",
                shown(p)
            );
        }
    }
    let leaky = root.join("tests/systems/leaky.toml");
    let sys = system::load(&leaky)?;
    if crate::check::analyse(&sys)?.is_isolated() {
        anyhow::bail!(
            "the isolation analysis accepted the leaky example {}",
            shown(&leaky)
        );
    }
    say!(
        "isolation analysis: {} shipped system(s) isolated; the leaky example refused",
        shipped.len()
    );
    Ok(())
}

/// Runs the host tests and/or the scenarios.
pub fn test(opts: &TestOptions) -> Result<ExitCode> {
    if !opts.scenarios_only {
        say!("running the host tests (cargo test --workspace)");
        setup::run_checked(
            setup::cargo().args(["test", "--workspace"]),
            "the host tests",
        )
        .context("host tests failed; scenarios were not run")?;
        say!("running the loom model checks (RUSTFLAGS=\"--cfg loom\", target/loom)");
        setup::run_checked(
            setup::cargo()
                .args(["test", "-p", "kcore", "--lib", "--release", "loom"])
                .env("RUSTFLAGS", "--cfg loom")
                .env(
                    "CARGO_TARGET_DIR",
                    setup::repo_root().join("target").join("loom"),
                ),
            "the loom model checks",
        )
        .context("loom model checks failed; scenarios were not run")?;
        check_isolation()?;
    }
    if opts.host_only {
        return Ok(ExitCode::SUCCESS);
    }
    setup::ensure_target()?;
    setup::ensure_qemu()?;
    let files = scenario_files(opts.filter.as_deref())?;
    if files.is_empty() {
        say!(
            "no scenario matches{}",
            opts.filter
                .as_deref()
                .map(|f| format!(" `{f}`"))
                .unwrap_or_default()
        );
    }
    let mut runner = Runner {
        tally: Tally::default(),
        builds: HashMap::new(),
    };
    for file in &files {
        runner.scenario(file);
    }
    let Tally { passed, failed } = runner.tally;
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::parse(Path::new("tests/scenarios/t.toml"), text)
    }

    #[test]
    fn scenario_fields() {
        let s = parse(
            "description = \"d\"\nsystem = \"tests/systems/boot.toml\"\nsmp = [1, 8]\n\
             expect = [\"a\", \"b\"]\nexit_status = 0\n",
        )
        .unwrap();
        assert_eq!(s.smp, Some(vec![1, 8]));
        assert_eq!(s.expect.len(), 2);
        assert_eq!(s.exit_status, Some(0));
        assert_eq!(s.timeout, None);
    }

    #[test]
    fn scenario_errors() {
        let base = "description = \"d\"\nsystem = \"s.toml\"\n";
        let e = |extra: &str| format!("{:#}", parse(&format!("{base}{extra}")).unwrap_err());
        assert!(e("expect = [\"a\"]\nsmp = [9]\n").contains("out of range"));
        assert!(e("expect = [\"(\"]\n").contains("pattern #1"));
        assert!(e("").contains("give `expect`"));
        assert!(e("[expect_vm]\nvm = []\n").contains("expect_vm.vm is empty"));
        assert!(e("[expect_vm]\nvm = [\"(\"]\n").contains("VM `vm`"));
        assert!(e("exit_status = 0\nforbid = [\"(\"]\n").contains("forbidden pattern #1"));
        let unknown = e("expect = [\"a\"]\nexpected = 1\n");
        assert!(
            unknown.contains("line 4") && unknown.contains("expected"),
            "{unknown}"
        );
    }

    #[test]
    fn shipped_scenarios_parse() {
        let root = setup::repo_root();
        for file in scenario_files(None).unwrap() {
            let text = std::fs::read_to_string(&file).unwrap();
            let s = Scenario::parse(&file, &text).unwrap();
            let sys = system::load(&root.join(&s.system)).unwrap();
            s.check_vms(&sys).unwrap();
        }
        system::load(&root.join("tests/systems/boot.toml")).unwrap();
    }
}
