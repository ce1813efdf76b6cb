//! System descriptions (`systems/*.toml`, format v1): which board, how many CPUs, the boot
//! tasks the kernel starts and, optionally, the partitions they form, the channels between
//! partitions and extra caps to hand out (checked by `cargo xtask check`). Every v0 file
//! (no partitions) is a valid v1 file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// Boards that exist.
pub const BOARDS: &[&str] = &["qemu-virt", "zcu102"];
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
    test_build: Option<bool>,
    stage2_global_lock: Option<bool>,
    #[serde(default)]
    task: Vec<RawTask>,
    #[serde(default)]
    vm: Vec<RawVm>,
    #[serde(default)]
    partition: Vec<RawPartition>,
    #[serde(default)]
    channel: Vec<RawChannel>,
    #[serde(default)]
    grant: Vec<RawGrant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartition {
    name: String,
    #[serde(default)]
    tasks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    between: Vec<String>,
    kind: String,
    rights: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    partition: String,
    object: String,
    rights: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: String,
    kernel: Option<String>,
    vcpus: Option<i64>,
    cmdline: Option<String>,
    restart: Option<i64>,
}

/// A Linux VM: served by its own VMM task (`vmm`, mode `vm-linux`) of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Its name (and its VMM task's).
    pub name: String,
    /// vCPUs (1..=4).
    pub vcpus: u64,
    /// The kernel command line.
    pub cmdline: String,
    /// What it boots.
    pub kernel: Kernel,
    /// How many times the kernel starts its VMM again after the VMM ends by a fault (the
    /// VM then boots afresh); 0 = never.
    pub restart: u32,
}

/// What a VM boots (its `kernel` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kernel {
    /// `"debian-cloud"` (the default): Debian's arm64 cloud kernel with the tools'
    /// busybox initramfs.
    DebianCloud,
    /// `"guest:NAME"`: the bare-metal guest crate `guests/NAME`, built by the tools as a
    /// flat arm64 `Image` (one of [`BARE_GUESTS`]); no initramfs.
    Guest(String),
}

/// The `kernel` value of Debian's cloud kernel.
pub const DEBIAN_CLOUD: &str = "debian-cloud";
/// The prefix of a bare-metal guest's `kernel` value.
pub const GUEST_PREFIX: &str = "guest:";
/// Bare-metal guests the tools can build as an arm64 `Image` for a VM.
pub const BARE_GUESTS: &[&str] = &["attack"];

/// Checks a `kernel` value.
pub fn check_kernel(k: Option<&str>) -> Result<Kernel> {
    let Some(k) = k else {
        return Ok(Kernel::DebianCloud);
    };
    if k == DEBIAN_CLOUD {
        return Ok(Kernel::DebianCloud);
    }
    let known = BARE_GUESTS.join(", ");
    match k.strip_prefix(GUEST_PREFIX) {
        Some(g) if BARE_GUESTS.contains(&g) => Ok(Kernel::Guest(g.to_string())),
        Some(g) => {
            bail!("kernel `{k}`: unknown guest `{g}` (bare-metal guests the tools build: {known})")
        }
        None => bail!(
            "kernel `{k}`: use \"{DEBIAN_CLOUD}\" (Debian's arm64 cloud kernel, fetched by the \
             tools) or \"{GUEST_PREFIX}NAME\" (a bare-metal guest the tools build: {known})"
        ),
    }
}

/// Most restarts of a VM's VMM after faults a description may ask for.
pub const MAX_RESTARTS: u32 = 255;

/// Most VMs a system holds (each needs its guest RAM as an aligned block).
pub const MAX_VMS: usize = 3;
/// log2 of the memory a VM's VMM gets besides its guest's RAM (64 MiB: its VSpace, table
/// pool, TCBs, VCPUs and the tables of its window onto guest RAM).
pub const VMM_EXTRA_BITS: u32 = 26;

/// The kernel command line of a VM that names none.
pub const DEFAULT_CMDLINE: &str = "console=ttyAMA0 earlycon=pl011,0x9000000 cma=0";

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
    /// The mode's number, passed to the task in `x0` (a VM's VMM also gets its VM's
    /// index in bits 63:32).
    pub arg: u64,
    /// log2 sizes of the RAM blocks the task receives as its own (0 = none; see
    /// `kcore::bootimage`): a VM's VMM gets its guest RAM and room for its objects.
    pub memory: [u32; 2],
    /// The core its first thread runs on (a VMM runs on its VM's first core, so that
    /// the exits of vCPU 0 stay on one core).
    pub core: u32,
    /// Times the kernel starts it again after it ends by a fault (a VM's `restart`).
    pub restarts: u32,
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
    /// Boot tasks in slot order (a VM's VMM task first).
    pub tasks: Vec<Task>,
    /// Linux VMs.
    pub vms: Vec<Vm>,
    /// Partitions; one implicit partition holding every task when the file declares none.
    pub partitions: Vec<Partition>,
    /// Whether `partitions` is the implicit one.
    pub implicit_partition: bool,
    /// Declared channels.
    pub channels: Vec<Channel>,
    /// Extra caps to hand out.
    pub grants: Vec<Grant>,
    /// Build the kernel with the test-only syscalls (`DebugSlot`).
    pub test_build: bool,
    /// Build the kernel-lock baseline of the stage-2 fault path (benchmarks only).
    pub stage2_global_lock: bool,
}

/// Name of the implicit partition of a description that declares none.
pub const IMPLICIT_PARTITION: &str = "system";
/// Rights a channel side gets when the description gives none.
pub const DEFAULT_CHANNEL_RIGHTS: &str = "rw";

/// A partition: a set of tasks isolated from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Name (no `.`).
    pub name: String,
    /// Names of the tasks that run in it.
    pub tasks: Vec<String>,
}

/// What a channel shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// An IPC endpoint.
    Endpoint,
    /// A notification.
    Notification,
    /// A shared memory region.
    Memory,
}

/// A channel: one object, owned by the first partition, shared with the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Name, unique among channels; the object is `<first partition>.<name>`.
    pub name: String,
    /// The two partitions.
    pub between: [String; 2],
    /// What it shares.
    pub kind: ChannelKind,
    /// Rights letters per side, in `between` order.
    pub rights: [String; 2],
}

/// An extra cap: `partition` gets `rights` on `owner`'s object `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who receives it.
    pub partition: String,
    /// The object's owner partition.
    pub owner: String,
    /// The object's name within its owner.
    pub object: String,
    /// Rights letters.
    pub rights: String,
}

impl Partition {
    /// The objects a partition owns besides its channels: `cspace`, `memory` and
    /// `<task>.tcb` per task.
    pub fn implicit_objects(&self) -> Vec<String> {
        let mut names = vec!["cspace".to_string(), "memory".to_string()];
        names.extend(self.tasks.iter().map(|t| format!("{t}.tcb")));
        names
    }
}

/// Checks a rights string (letters `r`, `w`, `g`, each at most once).
pub fn check_rights(rights: &str) -> Result<()> {
    for (i, c) in rights.char_indices() {
        if !matches!(c, 'r' | 'w' | 'g') {
            bail!("rights `{rights}`: unknown letter `{c}` (use r, w, g)");
        }
        if rights[..i].contains(c) {
            bail!("rights `{rights}`: `{c}` given twice");
        }
    }
    Ok(())
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
        memory: [0, 0],
        core: 0,
        restarts: 0,
    })
}

/// Parses and checks a description; `path` is used for messages and the build directory.
pub fn parse(path: &Path, text: &str) -> Result<System> {
    let file = path.display();
    let mut raw: RawSystem = toml::from_str(text).map_err(|e| anyhow!("{file}: {e}"))?;
    let board = raw
        .board
        .clone()
        .unwrap_or_else(|| DEFAULT_BOARD.to_string());
    check_board(&board).map_err(|e| anyhow!("{file}: {e}"))?;
    let smp = raw
        .smp
        .map(check_smp)
        .transpose()
        .map_err(|e| anyhow!("{file}: {e}"))?;
    if raw.vm.len() > MAX_VMS {
        bail!(
            "{file}: {} [[vm]] tables, but a system holds at most {MAX_VMS} VMs",
            raw.vm.len()
        );
    }
    let mut vms = Vec::new();
    let mut raw_tasks = Vec::new();
    for rv in std::mem::take(&mut raw.vm) {
        let label = format!("[[vm]] `{}`", rv.name);
        let kernel =
            check_kernel(rv.kernel.as_deref()).map_err(|e| anyhow!("{file}: {label}: {e}"))?;
        let vcpus = rv.vcpus.unwrap_or(1);
        if !(1..=bulkhead_sys::vm_layout::MAX_VCPUS as i64).contains(&vcpus) {
            bail!(
                "{file}: {label}: vcpus = {vcpus}: must be 1 to {}",
                bulkhead_sys::vm_layout::MAX_VCPUS
            );
        }
        let cmdline = rv.cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
        if cmdline.len() > 1024 || cmdline.contains('\0') {
            bail!("{file}: {label}: cmdline must be at most 1024 bytes, without NUL");
        }
        if vms.iter().any(|v: &Vm| v.name == rv.name) {
            bail!("{file}: {label}: duplicate VM name");
        }
        if rv.name.is_empty() || rv.name.len() > 16 || !rv.name.chars().all(valid_name_char) {
            bail!("{file}: {label}: a VM name is 1 to 16 ASCII letters, digits, `-`, `_`, `.`");
        }
        let restart = rv.restart.unwrap_or(0);
        if !(0..=MAX_RESTARTS as i64).contains(&restart) {
            bail!("{file}: {label}: restart = {restart}: must be 0 to {MAX_RESTARTS}");
        }
        vms.push(Vm {
            name: rv.name,
            vcpus: vcpus as u64,
            cmdline,
            kernel,
            restart: restart as u32,
        });
    }
    // Every VM gets a VMM task of its own, with the VM's name, started at boot with its
    // own memory; the tasks are added (first) after the checks below.
    let vm_count = vms.len();
    for vm in &vms {
        raw_tasks.push(RawTask {
            name: vm.name.clone(),
            binary: "vmm".into(),
            mode: Some("vm-linux".into()),
        });
    }
    raw_tasks.append(&mut raw.task);
    raw.task = raw_tasks;
    if raw.task.is_empty() {
        bail!("{file}: no tasks: add at least one [[task]] or [[vm]] table");
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
        let mut task = check_task(rt).map_err(|e| anyhow!("{file}: {label}: {e}"))?;
        if i < vm_count {
            task.arg |= (i as u64) << 32;
            task.memory = [bulkhead_sys::vm_layout::RAM_BITS, VMM_EXTRA_BITS];
            task.core = vms[..i].iter().map(|v| v.vcpus as u32).sum();
            task.restarts = vms[i].restart;
        }
        if let Some(first) = seen.insert(task.name.clone(), i + 1) {
            bail!("{file}: {label}: duplicate name (task #{first} has it too)");
        }
        tasks.push(task);
    }
    let (partitions, implicit_partition) =
        check_partitions(raw.partition, &tasks).map_err(|e| anyhow!("{file}: {e}"))?;
    let channels = check_channels(raw.channel, &partitions).map_err(|e| anyhow!("{file}: {e}"))?;
    let grants =
        check_grants(raw.grant, &partitions, &channels).map_err(|e| anyhow!("{file}: {e}"))?;
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
        vms,
        partitions,
        implicit_partition,
        channels,
        grants,
        test_build: raw.test_build.unwrap_or(false),
        stage2_global_lock: raw.stage2_global_lock.unwrap_or(false),
    })
}

fn check_partitions(raw: Vec<RawPartition>, tasks: &[Task]) -> Result<(Vec<Partition>, bool)> {
    if raw.is_empty() {
        let tasks = tasks.iter().map(|t| t.name.clone()).collect();
        let name = IMPLICIT_PARTITION.to_string();
        return Ok((vec![Partition { name, tasks }], true));
    }
    let mut home: HashMap<&str, &str> = HashMap::new();
    let mut partitions: Vec<Partition> = Vec::new();
    for (i, rp) in raw.iter().enumerate() {
        let label = format!("partition #{} `{}`", i + 1, rp.name);
        if rp.name.is_empty() || !rp.name.chars().all(|c| valid_name_char(c) && c != '.') {
            bail!("{label}: name must be non-empty ASCII letters, digits, `-` and `_`");
        }
        if partitions.iter().any(|p| p.name == rp.name) {
            bail!("{label}: duplicate name");
        }
        for t in &rp.tasks {
            if !tasks.iter().any(|task| &task.name == t) {
                bail!("{label}: unknown task `{t}`");
            }
            if let Some(other) = home.insert(t, &rp.name) {
                bail!("{label}: task `{t}` is already in partition `{other}`");
            }
        }
        partitions.push(Partition {
            name: rp.name.clone(),
            tasks: rp.tasks.clone(),
        });
    }
    if let Some(t) = tasks.iter().find(|t| !home.contains_key(t.name.as_str())) {
        bail!("task `{}` is in no partition", t.name);
    }
    Ok((partitions, false))
}

fn check_channels(raw: Vec<RawChannel>, partitions: &[Partition]) -> Result<Vec<Channel>> {
    let known = |p: &str| partitions.iter().any(|q| q.name == p);
    let mut channels: Vec<Channel> = Vec::new();
    for (i, rc) in raw.into_iter().enumerate() {
        let label = format!("channel #{} `{}`", i + 1, rc.name);
        if rc.name.is_empty() || !rc.name.chars().all(valid_name_char) {
            bail!("{label}: name must be non-empty ASCII letters, digits, `-`, `_` and `.`");
        }
        if channels.iter().any(|c| c.name == rc.name) {
            bail!("{label}: duplicate name");
        }
        let [a, b]: [String; 2] = rc.between.try_into().map_err(|v: Vec<String>| {
            anyhow!("{label}: `between` names {} partitions, not 2", v.len())
        })?;
        for p in [&a, &b] {
            if !known(p) {
                bail!("{label}: unknown partition `{p}`");
            }
        }
        if a == b {
            bail!("{label}: a channel between `{a}` and itself");
        }
        let owner = partitions
            .iter()
            .find(|p| p.name == a)
            .expect("checked above");
        if owner.implicit_objects().contains(&rc.name) {
            bail!("{label}: `{a}` already owns an object `{}`", rc.name);
        }
        let kind = match rc.kind.as_str() {
            "endpoint" => ChannelKind::Endpoint,
            "notification" => ChannelKind::Notification,
            "memory" => ChannelKind::Memory,
            k => bail!("{label}: unknown kind `{k}` (use endpoint, notification, memory)"),
        };
        let mut given = rc.rights.unwrap_or_default();
        let mut side = |p: &str| -> Result<String> {
            let r = given
                .remove(p)
                .unwrap_or_else(|| DEFAULT_CHANNEL_RIGHTS.into());
            check_rights(&r).map_err(|e| anyhow!("{label}: {p}: {e}"))?;
            Ok(r)
        };
        let rights = [side(&a)?, side(&b)?];
        if let Some(p) = given.keys().next() {
            bail!("{label}: rights for `{p}`, which is not one of `{a}` and `{b}`");
        }
        channels.push(Channel {
            name: rc.name,
            between: [a, b],
            kind,
            rights,
        });
    }
    Ok(channels)
}

fn check_grants(
    raw: Vec<RawGrant>,
    partitions: &[Partition],
    channels: &[Channel],
) -> Result<Vec<Grant>> {
    let mut grants = Vec::new();
    for (i, rg) in raw.into_iter().enumerate() {
        let label = format!("grant #{} to `{}`", i + 1, rg.partition);
        if !partitions.iter().any(|p| p.name == rg.partition) {
            bail!("{label}: unknown partition `{}`", rg.partition);
        }
        let Some((owner, object)) = rg.object.split_once('.') else {
            bail!(
                "{label}: object `{}` is not `<partition>.<object>`",
                rg.object
            );
        };
        let Some(p) = partitions.iter().find(|p| p.name == owner) else {
            bail!(
                "{label}: object `{}`: unknown partition `{owner}`",
                rg.object
            );
        };
        let exists = p.implicit_objects().iter().any(|o| o == object)
            || channels
                .iter()
                .any(|c| c.between[0] == owner && c.name == object);
        if !exists {
            let mut names = p.implicit_objects();
            names.extend(
                channels
                    .iter()
                    .filter(|c| c.between[0] == owner)
                    .map(|c| c.name.clone()),
            );
            bail!(
                "{label}: unknown object `{}` (`{owner}` owns: {})",
                rg.object,
                names.join(", ")
            );
        }
        check_rights(&rg.rights).map_err(|e| anyhow!("{label}: {e}"))?;
        grants.push(Grant {
            partition: rg.partition,
            owner: owner.to_string(),
            object: object.to_string(),
            rights: rg.rights,
        });
    }
    Ok(grants)
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

    #[test]
    fn vm_kernels() {
        let vm = |k: &str| format!("[[vm]]\nname = \"v\"\nkernel = \"{k}\"\n");
        let s = parse(Path::new("t.toml"), "[[vm]]\nname = \"v\"\n").unwrap();
        assert_eq!(s.vms[0].kernel, Kernel::DebianCloud);
        let s = parse(Path::new("t.toml"), &vm("debian-cloud")).unwrap();
        assert_eq!(s.vms[0].kernel, Kernel::DebianCloud);
        let s = parse(Path::new("t.toml"), &vm("guest:attack")).unwrap();
        assert_eq!(s.vms[0].kernel, Kernel::Guest("attack".into()));
        let e = err(&vm("guest:nope"));
        assert!(
            e.contains("[[vm]] `v`: kernel `guest:nope`: unknown guest `nope`")
                && e.contains("build: attack"),
            "{e}"
        );
        let e = err(&vm("ubuntu"));
        assert!(
            e.contains("kernel `ubuntu`: use \"debian-cloud\"") && e.contains("\"guest:NAME\""),
            "{e}"
        );
        assert!(err(&vm("guest:")).contains("unknown guest ``"));
    }

    #[test]
    fn vm_restarts() {
        let vm = |n: i64| format!("[[vm]]\nname = \"v\"\nrestart = {n}\n");
        let s = parse(Path::new("t.toml"), "[[vm]]\nname = \"v\"\n").unwrap();
        assert_eq!((s.vms[0].restart, s.tasks[0].restarts), (0, 0));
        let s = parse(Path::new("t.toml"), &vm(3)).unwrap();
        assert_eq!((s.vms[0].restart, s.tasks[0].restarts), (3, 3));
        for bad in [-1, 256] {
            let e = err(&vm(bad));
            assert!(
                e.contains(&format!("[[vm]] `v`: restart = {bad}: must be 0 to 255")),
                "{e}"
            );
        }
    }

    const TWO: &str = "[[task]]\nname = \"ta\"\nbinary = \"init\"\n\
        [[task]]\nname = \"tb\"\nbinary = \"init\"\n\
        [[partition]]\nname = \"a\"\ntasks = [\"ta\"]\n\
        [[partition]]\nname = \"b\"\ntasks = [\"tb\"]\n";

    #[test]
    fn v1_parses() {
        let s = parse(
            Path::new("t.toml"),
            &format!(
                "{TWO}[[channel]]\nname = \"ab\"\nbetween = [\"a\", \"b\"]\n\
                 kind = \"memory\"\nrights = {{ b = \"r\" }}\n\
                 [[grant]]\npartition = \"b\"\nobject = \"a.ta.tcb\"\nrights = \"\"\n"
            ),
        )
        .unwrap();
        assert!(!s.implicit_partition);
        assert_eq!(s.partitions[1].tasks, ["tb"]);
        assert_eq!(
            s.partitions[0].implicit_objects(),
            ["cspace", "memory", "ta.tcb"]
        );
        assert_eq!(s.channels[0].kind, ChannelKind::Memory);
        assert_eq!(s.channels[0].rights, ["rw", "r"]);
        assert_eq!(
            (s.grants[0].owner.as_str(), s.grants[0].object.as_str()),
            ("a", "ta.tcb")
        );
        let v0 = parse(
            Path::new("t.toml"),
            "[[task]]\nname = \"x\"\nbinary = \"init\"\n",
        );
        let v0 = v0.unwrap();
        assert!(v0.implicit_partition);
        assert_eq!(v0.partitions[0].tasks, ["x"]);
    }

    #[test]
    fn v1_errors() {
        let ch = |between: &str, extra: &str| {
            err(&format!(
                "{TWO}[[channel]]\nname = \"ab\"\nbetween = {between}\nkind = \"endpoint\"\n{extra}"
            ))
        };
        assert!(
            ch("[\"a\", \"a\"]", "").contains("channel #1 `ab`: a channel between `a` and itself")
        );
        assert!(ch("[\"a\", \"c\"]", "").contains("unknown partition `c`"));
        assert!(ch("[\"a\"]", "").contains("names 1 partitions, not 2"));
        assert!(ch("[\"a\", \"b\"]", "rights = { c = \"r\" }\n").contains("rights for `c`"));
        assert!(ch("[\"a\", \"b\"]", "rights = { a = \"rx\" }\n").contains("unknown letter `x`"));
        assert!(ch("[\"a\", \"b\"]", "colour = 1\n").contains("unknown field `colour`"));
        let e = err(&format!(
            "{TWO}[[partition]]\nname = \"c\"\ntasks = [\"ta\"]\n"
        ));
        assert!(
            e.contains("partition #3 `c`: task `ta` is already in partition `a`"),
            "{e}"
        );
        let e = err(&format!(
            "{TWO}[[partition]]\nname = \"c\"\ntasks = [\"zz\"]\n"
        ));
        assert!(e.contains("unknown task `zz`"), "{e}");
        let e = err("[[task]]\nname = \"a\"\nbinary = \"b\"\n[[partition]]\nname = \"p\"\n");
        assert!(e.contains("task `a` is in no partition"), "{e}");
        let e = err(&format!(
            "{TWO}[[grant]]\npartition = \"b\"\nobject = \"a.x\"\nrights = \"r\"\n"
        ));
        assert!(
            e.contains("unknown object `a.x` (`a` owns: cspace, memory, ta.tcb)"),
            "{e}"
        );
        let e = err(&format!(
            "{TWO}[[grant]]\npartition = \"q\"\nobject = \"a.x\"\nrights = \"r\"\n"
        ));
        assert!(e.contains("grant #1 to `q`: unknown partition `q`"), "{e}");
    }
}
