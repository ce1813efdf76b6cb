//! `cargo xtask build`: task binaries, the boot payload, and the kernel that embeds it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::say;
use crate::setup::{self, shown, KERNEL_TARGET, TASK_TARGET};
use crate::system::{Kernel, System};

/// Environment variable the kernel's build script reads the payload path from.
pub const PAYLOAD_ENV: &str = "BULKHEAD_PAYLOAD";
/// The log level filter when none is given.
pub const DEFAULT_LOG: &str = "info";

/// Where `build` put things; written next to them as `manifest.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The system description it was built from.
    pub system: String,
    /// The board.
    pub board: String,
    /// The description's default CPU count, if it gives one.
    pub smp: Option<u32>,
    /// `DEFMT_LOG` used for the build.
    pub log: String,
    /// The kernel ELF (absolute).
    pub kernel: PathBuf,
    /// The same kernel as a flat arm64 `Image` (header at its start), for a bootloader's
    /// `booti` or QEMU's `-kernel` (absolute).
    pub image: PathBuf,
    /// The packed payload (absolute).
    pub payload: PathBuf,
    /// The boot tasks in slot order.
    pub task: Vec<ManifestTask>,
}

/// One boot task in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestTask {
    /// Payload slot; its log tag is `kcore::logwire::task_tag(slot)`.
    pub slot: usize,
    /// Name.
    pub name: String,
    /// The crate it was built from.
    pub binary: String,
    /// Value passed in `x0`.
    pub arg: u64,
    /// Its ELF (absolute).
    pub elf: PathBuf,
}

/// The fields of an arm64 `Image` header (Linux `Documentation/arm64/booting.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where the image goes above a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the kernel occupies once running (bss included).
    pub image_size: u64,
    /// Endianness, page size, placement.
    pub flags: u64,
}

impl ImageHeader {
    /// Checks and reads the header at the start of `img`.
    pub fn parse(img: &[u8]) -> Result<Self> {
        let word = |o: usize| -> Result<u64> {
            Ok(u64::from_le_bytes(
                img.get(o..o + 8)
                    .ok_or_else(|| anyhow!("image shorter than its header"))?
                    .try_into()?,
            ))
        };
        if img.get(0x38..0x3c) != Some(b"ARM\x64".as_slice()) {
            bail!("no arm64 Image magic at offset 0x38");
        }
        let code0 = u32::from_le_bytes(img[0..4].try_into()?);
        if code0 >> 26 != 0b000101 {
            bail!("code0 ({code0:#x}) is not a branch");
        }
        let h = ImageHeader {
            text_offset: word(8)?,
            image_size: word(16)?,
            flags: word(24)?,
        };
        if h.image_size < img.len() as u64 {
            bail!(
                "image_size {:#x} is smaller than the image ({:#x} bytes)",
                h.image_size,
                img.len()
            );
        }
        if h.flags & 1 != 0 || (h.flags >> 1) & 3 != 1 {
            bail!("flags {:#x}: not little-endian with 4 KiB pages", h.flags);
        }
        if !h.text_offset.is_multiple_of(4096) || h.text_offset >= 4 << 20 {
            bail!(
                "text_offset {:#x} is not a page offset below 4 MiB",
                h.text_offset
            );
        }
        Ok(h)
    }
}

/// The loadable segments of an ELF laid out flat from the lowest address (gaps zeroed,
/// the tail that is only memory left out: the kernel clears its bss itself).
pub fn flat_image(elf: &[u8]) -> Result<Vec<u8>> {
    let e = kcore::elf::Elf::parse(elf).map_err(|e| anyhow!("kernel ELF: {e:?}"))?;
    let segs: Vec<_> = e.segments().filter(|s| s.mem_size > 0).collect();
    let base = segs
        .iter()
        .map(|s| s.vaddr)
        .min()
        .ok_or_else(|| anyhow!("kernel ELF has no loadable segment"))?;
    if e.entry() != base {
        bail!(
            "the kernel's entry {:#x} is not at its start {base:#x}",
            e.entry()
        );
    }
    let end = segs
        .iter()
        .map(|s| s.vaddr + s.data.len() as u64)
        .max()
        .unwrap_or(base);
    let mut out = vec![0u8; (end - base) as usize];
    for s in &segs {
        let at = (s.vaddr - base) as usize;
        out[at..at + s.data.len()].copy_from_slice(s.data);
    }
    Ok(out)
}

/// A built system.
#[derive(Debug, Clone)]
pub struct Built {
    /// The output directory, `target/bulkhead/<stem>/`.
    pub out: PathBuf,
    /// What was built.
    pub manifest: Manifest,
    /// Boot the flat `Image` instead of the ELF (QEMU then places it by its header and
    /// passes the DTB in x0, as a bootloader's `booti` does).
    pub boot_flat: bool,
}

/// The output directory for a system.
pub fn out_dir(system: &System) -> PathBuf {
    setup::repo_root()
        .join("target")
        .join("bulkhead")
        .join(&system.stem)
}

fn release_artifact(target: &str, name: &str) -> PathBuf {
    setup::repo_root()
        .join("target")
        .join(target)
        .join("release")
        .join(name)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Builds the task binaries and packs them into `<out>/payload.bin`; returns its path.
fn build_payload(system: &System, out: &Path, log: &str) -> Result<(PathBuf, Vec<ManifestTask>)> {
    let mut binaries: Vec<&str> = Vec::new();
    for t in &system.tasks {
        if !binaries.contains(&t.binary.as_str()) {
            binaries.push(&t.binary);
        }
    }
    say!(
        "building task binaries: {} (DEFMT_LOG={log})",
        binaries.join(", ")
    );
    let mut cmd = setup::cargo();
    cmd.args(["build", "--release", "--target", TASK_TARGET])
        .env("DEFMT_LOG", log);
    if binaries.contains(&"vmm") {
        // The VMM embeds its test guest: build that first.
        say!("building the test guest: faultstorm");
        setup::run_checked(
            setup::cargo().args([
                "build",
                "--release",
                "--target",
                TASK_TARGET,
                "-p",
                "faultstorm",
            ]),
            "building the fault-storm guest",
        )?;
        cmd.env(
            "BULKHEAD_GUEST_FAULTSTORM",
            release_artifact(TASK_TARGET, "faultstorm"),
        );
    }
    if !system.vms.is_empty() {
        let vms = out.join("vms.bin");
        let linux = vm_list(system, &vms)?;
        if let Some(g) = linux {
            cmd.env("BULKHEAD_GUEST_LINUX_IMAGE", &g.image)
                .env("BULKHEAD_GUEST_LINUX_INITRD", &g.initrd);
        }
        cmd.env("BULKHEAD_GUEST_LINUX_VMS", &vms);
    }
    for b in &binaries {
        cmd.args(["-p", b]);
    }
    setup::run_checked(&mut cmd, "building the task binaries")?;

    let tasks_dir = out.join("tasks");
    std::fs::create_dir_all(&tasks_dir)
        .with_context(|| format!("cannot create {}", tasks_dir.display()))?;
    let mut images = Vec::new();
    let mut manifest = Vec::new();
    for (slot, t) in system.tasks.iter().enumerate() {
        let built = release_artifact(TASK_TARGET, &t.binary);
        let elf_path = tasks_dir.join(format!("{}.elf", t.name));
        copy(&built, &elf_path).with_context(|| {
            format!(
                "task `{}`: binary `{}` was not produced by cargo \
                 (does package `{0}` have a binary target of that name?)",
                t.name, t.binary
            )
        })?;
        let bytes = std::fs::read(&elf_path)
            .with_context(|| format!("cannot read {}", elf_path.display()))?;
        images.push(bytes);
        manifest.push(ManifestTask {
            slot,
            name: t.name.clone(),
            binary: t.binary.clone(),
            arg: t.arg,
            elf: elf_path,
        });
    }
    let entries: Vec<(&str, &[u8], u64, u64)> = system
        .tasks
        .iter()
        .zip(&images)
        .map(|(t, elf)| {
            (
                t.name.as_str(),
                elf.as_slice(),
                t.arg,
                kcore::bootimage::memory_flags(t.memory)
                    | kcore::bootimage::core_flags(t.core)
                    | kcore::bootimage::restart_flags(t.restarts),
            )
        })
        .collect();
    let mut buf = vec![0u8; kcore::bootimage::built_size(&entries)];
    let len = kcore::bootimage::build(&entries, &mut buf)
        .map_err(|e| anyhow!("packing the boot payload failed: {e:?}"))?;
    buf.truncate(len);
    let payload = out.join("payload.bin");
    // Rewriting an unchanged payload would make cargo rebuild the kernel for nothing.
    if std::fs::read(&payload).ok().as_deref() != Some(buf.as_slice()) {
        std::fs::write(&payload, &buf)
            .with_context(|| format!("cannot write {}", payload.display()))?;
    }
    Ok((payload, manifest))
}

/// Magic of the VM list the VMM embeds (`userland/vmm/src/linux.rs` reads it).
pub const VM_LIST_MAGIC: &[u8; 4] = b"BHV2";

/// Writes the list of `system`'s VMs that the VMM embeds to `path`: [`VM_LIST_MAGIC`], a
/// little-endian u32 count, then per VM a 16-byte NUL-padded name, u32 vCPUs, u32
/// device-tree length, u32 image length (0: the shared Linux `Image` and initramfs), a
/// u32 0, the device tree, the image, each padded to 8 bytes. Returns the shared Linux
/// guest's files when a VM boots Debian's kernel.
fn vm_list(system: &System, path: &Path) -> Result<Option<crate::guest::GuestFiles>> {
    let mut list = VM_LIST_MAGIC.to_vec();
    list.extend_from_slice(&(system.vms.len() as u32).to_le_bytes());
    let mut linux = None;
    for vm in &system.vms {
        let (dtb, image) = match &vm.kernel {
            Kernel::DebianCloud => {
                let g = crate::guest::linux_guest(vm.vcpus, &vm.cmdline)?;
                let dtb = std::fs::read(&g.dtb)
                    .with_context(|| format!("cannot read {}", g.dtb.display()))?;
                linux = Some(g);
                (dtb, Vec::new())
            }
            Kernel::Guest(name) => {
                let g = crate::bare::bare_guest(name, vm.vcpus, &vm.cmdline)
                    .with_context(|| format!("VM `{}`", vm.name))?;
                (g.dtb, g.image)
            }
        };
        let mut name = [0u8; 16];
        name[..vm.name.len()].copy_from_slice(vm.name.as_bytes());
        list.extend_from_slice(&name);
        for word in [vm.vcpus as u32, dtb.len() as u32, image.len() as u32, 0] {
            list.extend_from_slice(&word.to_le_bytes());
        }
        for part in [&dtb, &image] {
            list.extend_from_slice(part);
            list.resize(list.len().div_ceil(8) * 8, 0);
        }
    }
    if std::fs::read(path).ok().as_deref() != Some(list.as_slice()) {
        std::fs::write(path, &list).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(linux)
}

/// Builds the kernel with `payload` embedded; returns the copied ELF's path.
fn build_kernel(system: &System, payload: &Path, out: &Path, log: &str) -> Result<PathBuf> {
    let board = &system.board;
    say!(
        "building the kernel for board {board} ({PAYLOAD_ENV}={})",
        shown(payload)
    );
    let mut feature = format!("board-{board}");
    if system.test_build {
        feature.push_str(",test-build");
    }
    if system.stage2_global_lock {
        feature.push_str(",s2-global-lock");
    }
    setup::run_checked(
        setup::cargo()
            .args([
                "build",
                "--release",
                "--target",
                KERNEL_TARGET,
                "-p",
                "kernel",
            ])
            .args(["--no-default-features", "--features", &feature])
            .env(PAYLOAD_ENV, payload)
            .env("DEFMT_LOG", log),
        "building the kernel",
    )?;
    let kernel = out.join("kernel.elf");
    copy(&release_artifact(KERNEL_TARGET, "kernel"), &kernel)?;
    Ok(kernel)
}

/// Builds only the payload of `system` (for `lint`, which needs one for the kernel).
pub fn payload_only(system: &System, log: &str) -> Result<PathBuf> {
    let out = out_dir(system);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(build_payload(system, &out, log)?.0)
}

/// Builds everything for `system` and writes the manifest.
pub fn build(system: &System, log: &str) -> Result<Built> {
    crate::check::refuse_leaky(system)?;
    let out = out_dir(system);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (payload, task) = build_payload(system, &out, log)?;
    let kernel = build_kernel(system, &payload, &out, log)?;
    let elf =
        std::fs::read(&kernel).with_context(|| format!("cannot read {}", kernel.display()))?;
    let flat = flat_image(&elf)?;
    let header = ImageHeader::parse(&flat)?;
    let image = out.join("kernel.bin");
    if std::fs::read(&image).ok().as_deref() != Some(flat.as_slice()) {
        std::fs::write(&image, &flat)
            .with_context(|| format!("cannot write {}", image.display()))?;
    }
    let manifest = Manifest {
        system: shown(&system.path),
        board: system.board.clone(),
        smp: system.smp,
        log: log.to_string(),
        kernel,
        image,
        payload,
        task,
    };
    let text = toml::to_string_pretty(&manifest).context("cannot serialize the manifest")?;
    let manifest_path = out.join("manifest.toml");
    std::fs::write(&manifest_path, text)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    say!("built {} into {}", manifest.system, shown(&out));
    say!("  kernel   {}", shown(&manifest.kernel));
    say!(
        "  image    {} (arm64 Image: text_offset {:#x}, image_size {:#x}, flags {:#x})",
        shown(&manifest.image),
        header.text_offset,
        header.image_size,
        header.flags
    );
    for t in &manifest.task {
        say!(
            "  slot {:>2}  {:<16} {} (mode arg {})",
            t.slot,
            t.name,
            shown(&t.elf),
            t.arg
        );
    }
    Ok(Built {
        out,
        manifest,
        boot_flat: false,
    })
}

#[cfg(test)]
mod image_header_tests {
    use super::ImageHeader;

    fn header(code0: u32, text_offset: u64, size: u64, flags: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len.max(64)];
        v[0..4].copy_from_slice(&code0.to_le_bytes());
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&size.to_le_bytes());
        v[24..32].copy_from_slice(&flags.to_le_bytes());
        v[0x38..0x3c].copy_from_slice(b"ARM\x64");
        v
    }

    #[test]
    fn a_good_header_reads_back() {
        let v = header(0x1400_0010, 0x20_0000, 0x10_0000, 2, 4096);
        assert_eq!(
            ImageHeader::parse(&v).unwrap(),
            ImageHeader {
                text_offset: 0x20_0000,
                image_size: 0x10_0000,
                flags: 2
            }
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut v = header(0x1400_0010, 0x20_0000, 0x10_0000, 2, 4096);
        v[0x38] = b'X';
        assert!(ImageHeader::parse(&v).is_err(), "magic");
        let v = header(0xd503_201f, 0x20_0000, 0x10_0000, 2, 4096);
        assert!(ImageHeader::parse(&v).is_err(), "code0 must branch");
        let v = header(0x1400_0010, 0x20_0000, 100, 2, 4096);
        assert!(ImageHeader::parse(&v).is_err(), "image_size below the file");
        let v = header(0x1400_0010, 0x20_0000, 0x10_0000, 3, 4096);
        assert!(ImageHeader::parse(&v).is_err(), "big-endian flag");
        let v = header(0x1400_0010, 0x20_0100, 0x10_0000, 2, 4096);
        assert!(
            ImageHeader::parse(&v).is_err(),
            "text_offset not page aligned"
        );
        assert!(ImageHeader::parse(&[0u8; 16]).is_err(), "too short");
    }
}
