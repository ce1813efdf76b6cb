//! System descriptions (`systems/*.toml`, format v0): which board, how many CPUs, and the
//! boot tasks the kernel starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// Boards that exist.
pub const BOARDS: &[&str] = &["qemu-virt"];
/// The board a description gets when it names none.
pub const DEFAULT_BOARD: &str = "qemu-virt";
/// CPU count `run` uses when neither the command line nor the description gives one.
pub const DEFAULT_SMP: u32 = 4;
/// Most CPUs a run may ask for.
pub const MAX_SMP: u32 = 8;
/// Mode a task gets when it names none.
pub const DEFAULT_MODE: &str = "hello";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    board: Option<String>,
    smp: Option<i64>,
    #[serde(default)]
    task: Vec<RawTask>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    binary: String,
    mode: Option<String>,
}

/// One boot task, in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Name in logs and in the payload.
    pub name: String,
    /// The userland crate (package and binary share this name).
    pub binary: String,
    /// Mode name from the description.
    pub mode: String,
    /// The mode's number, passed to the task in `x0`.
    pub arg: u64,
}

/// A checked system description.
#[derive(Debug, Clone)]
pub struct System {
    /// The file it came from.
    pub path: PathBuf,
    /// The file's stem, which names the build directory.
    pub stem: String,
    /// Target board.
    pub board: String,
    /// Default CPU count, if the description gives one.
    pub smp: Option<u32>,
    /// Boot tasks in slot order.
    pub tasks: Vec<Task>,
}

/// Checks a CPU count from anywhere (description, command line, scenario).
pub fn check_smp(smp: i64) -> Result<u32> {
    match u32::try_from(smp) {
        Ok(n) if (1..=MAX_SMP).contains(&n) => Ok(n),
        _ => bail!("smp = {smp} is out of range (1..={MAX_SMP})"),
    }
}

/// Checks a board name.
pub fn check_board(board: &str) -> Result<()> {
    if BOARDS.contains(&board) {
        Ok(())
    } else {
        bail!("unknown board `{board}` (known: {})", BOARDS.join(", "))
    }
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn check_task(raw: RawTask) -> Result<Task> {
    let RawTask { name, binary, mode } = raw;
    let limit = kcore::bootimage::NAME_LEN;
    if name.is_empty() || name.len() > limit {
        bail!(
            "name must be 1 to {limit} bytes long (it is {})",
            name.len()
        );
    }
    if name.starts_with('.') || !name.chars().all(valid_name_char) {
        bail!("name may only hold ASCII letters, digits, `-`, `_` and `.` (not first)");
    }
    if binary.is_empty()
        || !binary
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("binary `{binary}` is not a crate name");
    }
    let mode = mode.unwrap_or_else(|| DEFAULT_MODE.to_string());
    let Some(arg) = bulkhead_sys::task_mode::from_name(&mode) else {
        let valid: Vec<&str> = bulkhead_sys::task_mode::ALL
            .iter()
            .map(|(n, _)| *n)
            .collect();
        bail!("unknown mode `{mode}` (valid modes: {})", valid.join(", "));
    };
    Ok(Task {
        name,
        binary,
        mode,
        arg,
    })
}

/// Parses and checks a description; `path` is used for messages and the build directory.
pub fn parse(path: &Path, text: &str) -> Result<System> {
    let file = path.display();
    let raw: RawSystem = toml::from_str(text).map_err(|e| anyhow!("{file}: {e}"))?;
    let board = raw.board.unwrap_or_else(|| DEFAULT_BOARD.to_string());
    check_board(&board).map_err(|e| anyhow!("{file}: {e}"))?;
    let smp = raw
        .smp
        .map(check_smp)
        .transpose()
        .map_err(|e| anyhow!("{file}: {e}"))?;
    if raw.task.is_empty() {
        bail!("{file}: no tasks: add at least one [[task]] table");
    }
    let max = kcore::bootimage::MAX_TASKS;
    if raw.task.len() > max {
        bail!(
            "{file}: {} tasks, but at most {max} fit in a boot image",
            raw.task.len()
        );
    }
    let mut tasks = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, rt) in raw.task.into_iter().enumerate() {
        let label = format!("task #{} `{}`", i + 1, rt.name);
        let task = check_task(rt).map_err(|e| anyhow!("{file}: {label}: {e}"))?;
        if let Some(first) = seen.insert(task.name.clone(), i + 1) {
            bail!("{file}: {label}: duplicate name (task #{first} has it too)");
        }
        tasks.push(task);
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("{file}: cannot derive a build directory name from the path"))?;
    Ok(System {
        path: path.to_path_buf(),
        stem,
        board,
        smp,
        tasks,
    })
}

/// Reads and checks a description file.
pub fn load(path: &Path) -> Result<System> {
    let shown = PathBuf::from(crate::setup::shown(path));
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", shown.display()))?;
    let mut system = parse(&shown, &text)?;
    system.path = path.to_path_buf();
    Ok(system)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            parse(Path::new("systems/t.toml"), text).unwrap_err()
        )
    }

    #[test]
    fn defaults_apply() {
        let s = parse(
            Path::new("systems/t.toml"),
            "[[task]]\nname = \"init\"\nbinary = \"init\"\n",
        )
        .unwrap();
        assert_eq!(s.board, "qemu-virt");
        assert_eq!(s.smp, None);
        assert_eq!(s.stem, "t");
        assert_eq!(s.tasks[0].mode, "hello");
        assert_eq!(s.tasks[0].arg, bulkhead_sys::task_mode::HELLO);
    }

    #[test]
    fn modes_map_to_numbers() {
        let s = parse(
            Path::new("x.toml"),
            "smp = 2\n[[task]]\nname = \"a\"\nbinary = \"init\"\nmode = \"fault-exec\"\n",
        )
        .unwrap();
        assert_eq!(s.smp, Some(2));
        assert_eq!(s.tasks[0].arg, bulkhead_sys::task_mode::FAULT_EXEC);
    }

    #[test]
    fn unknown_key_names_the_line() {
        let e = err("smp = 2\n[[task]]\nname = \"a\"\nbinary = \"init\"\nprio = 3\n");
        assert!(e.starts_with("systems/t.toml: "), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("prio"), "{e}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let e = err("[[task]]\nname = \"a\"\nbinary = \"init\"\n[[task]]\nname = \"a\"\nbinary = \"init\"\n");
        assert!(e.contains("task #2 `a`"), "{e}");
        assert!(e.contains("duplicate name"), "{e}");
        assert!(e.contains("task #1"), "{e}");
    }

    #[test]
    fn unknown_mode_lists_valid_ones() {
        let e = err("[[task]]\nname = \"a\"\nbinary = \"init\"\nmode = \"nap\"\n");
        assert!(e.contains("task #1 `a`: unknown mode `nap`"), "{e}");
        assert!(e.contains("hello, fault-read"), "{e}");
    }

    #[test]
    fn other_errors() {
        assert!(
            err("board = \"pi5\"\n[[task]]\nname = \"a\"\nbinary = \"b\"\n")
                .contains("unknown board `pi5`")
        );
        assert!(err("smp = 9\n[[task]]\nname = \"a\"\nbinary = \"b\"\n").contains("out of range"));
        assert!(err("smp = 0\n[[task]]\nname = \"a\"\nbinary = \"b\"\n").contains("out of range"));
        assert!(err("smp = 2\n").contains("no tasks"));
        assert!(err("[[task]]\nname = \"\"\nbinary = \"b\"\n").contains("1 to 16 bytes"));
        let long = "x".repeat(17);
        assert!(
            err(&format!("[[task]]\nname = \"{long}\"\nbinary = \"b\"\n"))
                .contains("1 to 16 bytes")
        );
        assert!(err("[[task]]\nname = \"../x\"\nbinary = \"b\"\n").contains("may only hold"));
        let many: String = (0..33)
            .map(|i| format!("[[task]]\nname = \"t{i}\"\nbinary = \"b\"\n"))
            .collect();
        assert!(err(&many).contains("at most 32"));
    }
}
