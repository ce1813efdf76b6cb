//! `cargo xtask lint`: formatting, and clippy for the host and for both bare-metal targets.

use std::process::Command;

use anyhow::{Context, Result};

use crate::image::{self, PAYLOAD_ENV};
use crate::say;
use crate::setup::{self, KERNEL_TARGET, TASK_TARGET};
use crate::system;

/// Packages linked into the kernel.
const KERNEL_PACKAGES: &[&str] = &["kernel", "kcore", "bulkhead-sys"];
/// Packages linked into boot tasks.
const TASK_PACKAGES: &[&str] = &[
    "init",
    "ktest",
    "vmm",
    "faultstorm",
    "attack",
    "memtest",
    "bulkhead-rt",
    "bulkhead-sys",
    "kcore",
];
/// How many steps there are.
const STEPS: usize = 4;

/// `cargo clippy --release --target TARGET -p ... EXTRA -- -D warnings`.
fn clippy(target: &str, packages: &[&str], extra: &[&str]) -> Command {
    let mut cmd = setup::cargo();
    cmd.args(["clippy", "--release", "--target", target]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    cmd.args(extra)
        .args(["--", "-D", "warnings"])
        .env("DEFMT_LOG", image::DEFAULT_LOG);
    cmd
}

/// Runs every lint step, stopping at the first that fails.
pub fn lint() -> Result<()> {
    say!("lint step 1/{STEPS}: cargo fmt --all --check");
    setup::run_checked(
        setup::cargo().args(["fmt", "--all", "--check"]),
        "lint step 1 (formatting; run `cargo fmt --all` to fix)",
    )?;

    say!("lint step 2/{STEPS}: clippy for the host");
    setup::run_checked(
        setup::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "lint step 2 (clippy for the host)",
    )?;

    setup::ensure_target()?;
    say!("lint step 3/{STEPS}: clippy for {KERNEL_TARGET} (the kernel; needs a boot payload)");
    let default = setup::repo_root().join("systems").join("default.toml");
    let system = system::load(&default)?;
    let payload = image::payload_only(&system, image::DEFAULT_LOG)
        .context("lint step 3: building the default system's payload failed")?;
    // Once per board: each board feature compiles different driver paths.
    for board in system::BOARDS {
        let feature = format!("kernel/board-{board}");
        let mut cmd = clippy(
            KERNEL_TARGET,
            KERNEL_PACKAGES,
            &["--no-default-features", "--features", &feature],
        );
        cmd.env(PAYLOAD_ENV, &payload);
        setup::run_checked(
            &mut cmd,
            &format!("lint step 3 (clippy for {KERNEL_TARGET}, board {board})"),
        )?;
    }

    say!("lint step 4/{STEPS}: clippy for {TASK_TARGET} (userland)");
    setup::run_checked(
        &mut clippy(TASK_TARGET, TASK_PACKAGES, &[]),
        &format!("lint step 4 (clippy for {TASK_TARGET})"),
    )
}
