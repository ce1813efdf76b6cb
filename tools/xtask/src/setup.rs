//! The repository root, running commands, and the host setup the other commands need
//! (the bare-metal Rust target, QEMU).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The Rust target the kernel is built for (general-purpose registers only, so kernel
/// entry never has to save a task's FP/SIMD state).
pub const KERNEL_TARGET: &str = "aarch64-unknown-none-softfloat";
/// The Rust target boot-task binaries are built for.
pub const TASK_TARGET: &str = "aarch64-unknown-none";
/// Every target the builds need.
pub const TARGETS: &[&str] = &[TASK_TARGET, KERNEL_TARGET];

/// The QEMU binary `run` and `test` start.
pub const QEMU: &str = "qemu-system-aarch64";

/// Prints a progress or status message on stderr.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("xtask: {}", format_args!($($arg)*))
    };
}

/// The workspace root (this crate lives in `tools/xtask`).
pub fn repo_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    dir.canonicalize().unwrap_or(dir)
}

/// A path for messages: relative to the repository root where it lies inside it.
pub fn shown(path: &Path) -> String {
    let root = repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A `cargo` command (the one running us, if known) with the repository root as cwd.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root());
    cmd
}

/// Renders a command for messages: `cargo build --release ...`.
pub fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    let mut s = program;
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio and fails, naming `what`, unless it exits 0.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("{what} failed ({status}): `{}`", describe(cmd));
    }
    Ok(())
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: impl AsRef<OsStr>) -> bool {
    let Some(paths) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(program.as_ref())))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Makes sure rustup has the bare-metal targets installed, installing any that is not.
pub fn ensure_target() -> Result<()> {
    let root = repo_root();
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "rustup is not installed (or not on PATH); Bulkhead needs it to add the \
             {} targets (see https://rustup.rs)",
            TARGETS.join(" and ")
        ),
        Err(e) => return Err(e).context("could not run `rustup target list --installed`"),
    };
    if !out.status.success() {
        bail!("`rustup target list --installed` failed ({})", out.status);
    }
    let installed = String::from_utf8_lossy(&out.stdout);
    for target in TARGETS {
        if installed.lines().any(|l| l.trim() == *target) {
            continue;
        }
        say!("installing Rust target {target}");
        run_checked(
            Command::new("rustup")
                .args(["target", "add", target])
                .current_dir(&root),
            &format!("installing the Rust target {target}"),
        )?;
    }
    Ok(())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes sure QEMU is on `PATH`, installing Debian's package when we are root.
pub fn ensure_qemu() -> Result<()> {
    if on_path(QEMU) {
        return Ok(());
    }
    let hint = "apt-get update && apt-get install -y qemu-system-arm";
    if !(running_as_root() && on_path("apt-get")) {
        bail!(
            "{QEMU} was not found on PATH; install QEMU first, e.g. on Debian or Ubuntu: \
             `sudo sh -c '{hint}'`"
        );
    }
    say!("QEMU not found; installing Debian's qemu-system-arm ({hint})");
    run_checked(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
        "apt-get update",
    )?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "qemu-system-arm"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
        "installing qemu-system-arm",
    )?;
    if !on_path(QEMU) {
        bail!("qemu-system-arm was installed but {QEMU} is still not on PATH");
    }
    Ok(())
}
