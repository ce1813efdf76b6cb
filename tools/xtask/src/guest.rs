//! The Linux guest of a VM: Debian's arm64 cloud kernel, an initramfs around a static
//! busybox, and a device tree describing [`bulkhead_sys::vm_layout`].
//!
//! Everything lands under `target/guest/`:
//! - `debs/`: the downloaded `.deb` files and their unpacked trees (a cache);
//! - `linux/Image`, `linux/busybox`: what was taken from them (fetched only when one is
//!   missing; put them there by hand on a host without apt), `linux/packages.txt`: the
//!   package versions they came from;
//! - `linux/initramfs.cpio`: an uncompressed newc archive (`/init`, busybox, `memtest`,
//!   `/dev/console`);
//! - `vm-<N>cpu.dtb`: the device tree of a VM with N vCPUs.
//!
//! Generated files are rewritten only when their bytes change, so builds that embed
//! them are not redone for nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bulkhead_sys::vm_layout;

use crate::setup::{self, shown, TASK_TARGET};
use crate::{cpio, fdt, say};

/// The Debian package that always depends on the current cloud kernel.
pub const KERNEL_META_PACKAGE: &str = "linux-image-cloud-arm64";
/// The Debian package with a static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The Debian architecture of the guest.
pub const DEB_ARCH: &str = "arm64";

/// `/init` of the initramfs. Words on the kernel command line choose what it does after
/// printing `bulkhead-guest: Linux ... up on N CPU(s)`:
/// - `bulkhead.poweroff`: the shell check, then `/bin/memtest` ([`MEMTEST_PACKAGE`]) on
///   every CPU at once (each instance pinned to its CPU with 70% of MemFree shared out, at
///   least 8 MiB each), the verdict `bulkhead-guest: memtest passed on N CPU(s)` (or `... FAILED ...`), the
///   MemTotal line, and `poweroff -f`;
/// - `bulkhead.linger` (or `bulkhead.linger=N`): the same, then `bulkhead-guest: still
///   alive 1` .. `N` (default 5) a second apart before powering off (it outlives another
///   VM's poweroff or reset);
/// - `bulkhead.recheck`: with `bulkhead.linger`, check the RAM with `memtest` on every
///   CPU again after lingering (the attack scenario: the memory is checked before and
///   after another VM attacked);
/// - `bulkhead.crashvmm`: on the first boot, after the memory check, print
///   `bulkhead-guest: crash the VMM now`, which makes a VMM whose VM's command line holds
///   this word crash (the attack suite's stand-in for a subverted VMM: only this VM may
///   stop); a VMM the kernel started again after that crash boots the VM with a boot
///   count of 1 or more, and the guest goes on with the other words;
/// - `bulkhead.reboot`: on the first boot (`bulkhead.boot=0000`, which the tools append
///   and the VMM rewrites with its reset count), print `bulkhead-guest: rebooting` and
///   `reboot -f` (PSCI SYSTEM_RESET); after a reset, print `bulkhead-guest: boot N after a
///   reset` and go on with the other words; `bulkhead.reboot=N` reboots at once on boots
///   0 .. N-1 (printing `bulkhead-guest: boot K, rebooting`) and goes on after the N-th
///   reset (the restart loop of the attack suite);
/// - `bulkhead.devmem=ADDR`: after the shell check, reads physical address ADDR with
///   busybox `devmem` and prints `bulkhead-guest: devmem ADDR -> ` and the value, or what
///   the shell reported (e.g. `Bus error (exit status 135)`: only that process dies), then
///   goes on with the other words;
/// - none of them: an interactive shell.
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
cpus=$(grep -c ^processor /proc/cpuinfo)
echo "bulkhead-guest: Linux $(uname -r) up on $cpus CPU(s)"

mode=shell
devmem_at=
linger=5
reboot=
crashvmm=
recheck=
boot=0
for word in $(cat /proc/cmdline); do
    case "$word" in
    bulkhead.poweroff) [ "$mode" = linger ] || mode=poweroff ;;
    bulkhead.linger) mode=linger ;;
    bulkhead.linger=*) mode=linger; linger=${word#bulkhead.linger=} ;;
    bulkhead.devmem=*) devmem_at=${word#bulkhead.devmem=} ;;
    bulkhead.reboot) reboot=1 ;;
    bulkhead.reboot=*) reboot=${word#bulkhead.reboot=} ;;
    bulkhead.crashvmm) crashvmm=1 ;;
    bulkhead.recheck) recheck=1 ;;
    bulkhead.boot=*) boot=$((1${word#bulkhead.boot=} - 10000)) ;;
    esac
done
if [ -n "$reboot" ]; then
    if [ "$boot" -lt "$reboot" ]; then
        if [ "$reboot" -eq 1 ]; then
            echo "bulkhead-guest: rebooting"
        else
            echo "bulkhead-guest: boot $boot, rebooting"
        fi
        reboot -f
    fi
    echo "bulkhead-guest: boot $boot after a reset"
fi

# Centiseconds since boot.
uptime_cs() {
    read -r up _ < /proc/uptime
    echo $((${up%.*} * 100 + 1${up#*.} - 100))
}

# memtest on every online CPU at once, pinned where taskset exists.
memtest_all() {
    free_kib=$(sed -n 's/^MemFree: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
    mib=$((${free_kib:-0} * 7 / 10 / cpus / 1024))
    [ "$mib" -ge 8 ] || mib=8
    start=$(uptime_cs)
    pids=
    for cpu in $(sed -n 's/^processor[^0-9]*\([0-9]*\)$/\1/p' /proc/cpuinfo); do
        if command -v taskset > /dev/null; then
            taskset -c "$cpu" memtest "$mib" $((cpu + 1)) &
        else
            memtest "$mib" $((cpu + 1)) &
        fi
        pids="$pids $!"
    done
    ran=0
    failed=0
    for pid in $pids; do
        ran=$((ran + 1))
        wait "$pid" || failed=$((failed + 1))
    done
    took=$(($(uptime_cs) - start))
    echo "bulkhead-guest: memtest: $ran x $mib MiB (MemFree was $free_kib kB) in $((took / 100)).$((took / 10 % 10)) s"
    if [ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]; then
        echo "bulkhead-guest: memtest passed on $ran CPU(s)"
    else
        echo "bulkhead-guest: memtest FAILED on $failed of $ran CPU(s)"
    fi
    echo "bulkhead-guest: memory: $(grep ^MemTotal: /proc/meminfo)"
}

if [ "$mode" != shell ] || [ -n "$devmem_at" ]; then
    echo "bulkhead-guest: shell check: $(echo hello from the shell)"
fi
if [ -n "$devmem_at" ]; then
    [ -e /dev/mem ] || mknod /dev/mem c 1 1
    # The subshell's stderr goes into the result too, so it holds what the shell says
    # about a devmem killed by a signal.
    result=$(exec 2>&1; devmem "$devmem_at"; st=$?; [ "$st" -eq 0 ] || echo "(exit status $st)")
    echo "bulkhead-guest: devmem $devmem_at -> $(echo $result)"
fi
if [ -n "$crashvmm" ] && [ "$boot" -eq 0 ]; then
    memtest_all
    echo "bulkhead-guest: crash the VMM now"
    # Nothing answers this VM any more: its vCPUs stop with their VMM.
    while true; do sleep 1; echo "bulkhead-guest: still running after the crash"; done
fi
case "$mode" in
poweroff)
    memtest_all
    poweroff -f
    ;;
linger)
    memtest_all
    i=1
    while [ "$i" -le "$linger" ]; do
        echo "bulkhead-guest: still alive $i"
        [ "$i" -eq "$linger" ] || sleep 1
        i=$((i + 1))
    done
    [ -z "$recheck" ] || memtest_all
    poweroff -f
    ;;
esac
exec sh
"#;

/// The command-line word, followed by four decimal digits, that tells a guest how often
/// its VM was reset (the VMM patches the digits in the device tree it loads).
pub const BOOT_COUNT_WORD: &str = "bulkhead.boot=";

/// `/bin/memtest`: the `guests/memtest` crate, a static Linux/arm64 program.
pub const MEMTEST_PACKAGE: &str = "memtest";

/// Phandle of the GIC (the root's `interrupt-parent`).
const GIC_PHANDLE: u32 = 1;
/// Phandle of the PL011's 24 MHz clock.
const CLK_PHANDLE: u32 = 2;

/// What [`linux_guest`] prepared.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    /// The kernel `Image` (load it at `vm_layout::KERNEL`).
    pub image: PathBuf,
    /// The initramfs (load it at `vm_layout::INITRD`; the DTB gives its end).
    pub initrd: PathBuf,
    /// The device tree (load it at `vm_layout::DTB`).
    pub dtb: PathBuf,
}

/// `target/guest/`.
pub fn guest_dir() -> PathBuf {
    setup::repo_root().join("target").join("guest")
}

/// Prepares the Linux guest of a VM with `vcpus` vCPUs and kernel command line `cmdline`:
/// returns paths of (kernel Image, initramfs, DTB) under target/guest/.
///
/// Fetches the kernel and busybox from Debian's arm64 packages the first time (see
/// [`fetch`]); writes the initramfs and `vm-<vcpus>cpu.dtb` when their bytes change.
/// Builds [`MEMTEST_PACKAGE`] for the initramfs. The cmdline's `bulkhead.*` words choose
/// what the guest's init does ([`INIT_SCRIPT`]); with `bulkhead.poweroff` it powers off
/// after its markers.
pub fn linux_guest(vcpus: u64, cmdline: &str) -> Result<GuestFiles> {
    if !(1..=vm_layout::MAX_VCPUS).contains(&vcpus) {
        bail!(
            "a Linux VM has 1 to {} vCPUs, not {vcpus}",
            vm_layout::MAX_VCPUS
        );
    }
    let dir = guest_dir();
    let linux = dir.join("linux");
    let image = linux.join("Image");
    let busybox = linux.join("busybox");
    if !(image.is_file() && busybox.is_file()) {
        fetch(&dir)?;
    }

    let header = ImageHeader::read(&image)?;
    let kernel_end = vm_layout::KERNEL + header.text_offset + header.image_size;
    if kernel_end > vm_layout::INITRD {
        bail!(
            "{}: the kernel ({header}) would run past the initramfs at {:#x}",
            shown(&image),
            vm_layout::INITRD
        );
    }

    let busybox_bytes =
        std::fs::read(&busybox).with_context(|| format!("cannot read {}", shown(&busybox)))?;
    check_static_arm64(&busybox_bytes)
        .with_context(|| format!("{} is unusable", shown(&busybox)))?;
    let memtest = build_memtest()?;
    let memtest_bytes =
        std::fs::read(&memtest).with_context(|| format!("cannot read {}", shown(&memtest)))?;
    check_static_arm64(&memtest_bytes)
        .with_context(|| format!("{} is unusable", shown(&memtest)))?;
    let archive = initramfs(&busybox_bytes, &memtest_bytes);
    let initrd_end = vm_layout::INITRD + archive.len() as u64;
    if initrd_end > vm_layout::DTB {
        bail!(
            "the initramfs ({} bytes) does not fit between {:#x} and the DTB at {:#x}",
            archive.len(),
            vm_layout::INITRD,
            vm_layout::DTB
        );
    }
    let initrd = linux.join("initramfs.cpio");
    write_if_changed(&initrd, &archive)?;

    // The VMM rewrites the four digits with its reset count when it restarts the VM.
    let cmdline = format!("{cmdline} {BOOT_COUNT_WORD}0000");
    let blob = device_tree(vcpus, &cmdline, Some((vm_layout::INITRD, initrd_end)));
    if blob.len() as u64 > vm_layout::DTB_MAX {
        bail!(
            "the device tree is {} bytes, more than the {} the memory map allows",
            blob.len(),
            vm_layout::DTB_MAX
        );
    }
    let dtb = dir.join(format!("vm-{vcpus}cpu.dtb"));
    write_if_changed(&dtb, &blob)?;

    let packages = std::fs::read_to_string(linux.join("packages.txt")).unwrap_or_default();
    let kernel_pkg = packages.lines().next().unwrap_or("(unknown package)");
    say!(
        "Linux guest: {} from {kernel_pkg}; {} ({} KiB); {} ({} bytes, {vcpus} vCPU(s))",
        shown(&image),
        shown(&initrd),
        archive.len().div_ceil(1024),
        shown(&dtb),
        blob.len()
    );
    Ok(GuestFiles { image, initrd, dtb })
}

/// Builds `guests/memtest` for the guest; returns the path of the executable.
fn build_memtest() -> Result<PathBuf> {
    setup::run_checked(
        setup::cargo().args([
            "build",
            "--release",
            "--quiet",
            "--target",
            TASK_TARGET,
            "-p",
            MEMTEST_PACKAGE,
        ]),
        "building the guest's memtest",
    )?;
    Ok(setup::repo_root()
        .join("target")
        .join(TASK_TARGET)
        .join("release")
        .join(MEMTEST_PACKAGE))
}

/// The fields of an arm64 `Image` header (Linux `Documentation/arch/arm64/booting.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where in RAM (from a 2 MiB-aligned base) the image must be placed.
    pub text_offset: u64,
    /// How much memory from the load address the kernel uses (bss included).
    pub image_size: u64,
    /// Bit 0: big-endian; bits 1-2: page size (1 = 4K, 2 = 16K, 3 = 64K); bit 3: may be
    /// placed anywhere in RAM.
    pub flags: u64,
}

/// The header's magic at offset 0x38, "ARM\x64".
pub const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
/// Offset of the magic.
const IMAGE_MAGIC_OFFSET: usize = 0x38;
/// Length of the header.
const IMAGE_HEADER_LEN: usize = 0x40;

impl ImageHeader {
    /// Parses the first 64 bytes of an `Image`.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < IMAGE_HEADER_LEN {
            bail!("too short for an arm64 Image header ({} bytes)", b.len());
        }
        if &b[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4] != IMAGE_MAGIC {
            bail!(
                "no arm64 Image magic \"ARM\\x64\" at offset 0x38 (found {:02x?})",
                &b[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4]
            );
        }
        let le64 = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
        let h = Self {
            text_offset: le64(0x08),
            image_size: le64(0x10),
            flags: le64(0x18),
        };
        if h.image_size == 0 {
            bail!("image_size is 0 (a kernel older than 3.17): its extent is unknown");
        }
        if h.flags & 1 != 0 {
            bail!("a big-endian kernel (flags {:#x})", h.flags);
        }
        Ok(h)
    }

    /// Reads and parses the header of the `Image` at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let mut head = Vec::with_capacity(IMAGE_HEADER_LEN);
        std::fs::File::open(path)
            .and_then(|f| f.take(IMAGE_HEADER_LEN as u64).read_to_end(&mut head))
            .with_context(|| format!("cannot read {}", shown(path)))?;
        Self::parse(&head).with_context(|| {
            format!(
                "{} is not an arm64 kernel Image (delete it to fetch it again)",
                shown(path)
            )
        })
    }
}

impl std::fmt::Display for ImageHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let page = match (self.flags >> 1) & 3 {
            1 => "4K pages",
            2 => "16K pages",
            3 => "64K pages",
            _ => "page size unspecified",
        };
        let place = if self.flags & 8 != 0 {
            "placeable anywhere"
        } else {
            "placed near the start of RAM"
        };
        write!(
            f,
            "text_offset {:#x}, image_size {:#x} ({:.1} MiB), flags {:#x} ({page}, {place})",
            self.text_offset,
            self.image_size,
            self.image_size as f64 / (1 << 20) as f64,
            self.flags
        )
    }
}

/// Checks that `elf` is a static little-endian arm64 executable (busybox, memtest).
fn check_static_arm64(elf: &[u8]) -> Result<()> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        bail!("not an ELF file");
    }
    if elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF");
    }
    let le16 = |off: usize| u16::from_le_bytes([elf[off], elf[off + 1]]) as usize;
    const EM_AARCH64: usize = 183;
    if le16(18) != EM_AARCH64 {
        bail!("not an arm64 binary (e_machine {})", le16(18));
    }
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (le16(0x36), le16(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let ty = elf
            .get(at..at + 4)
            .ok_or_else(|| anyhow!("truncated program headers"))?;
        if u32::from_le_bytes(ty.try_into().unwrap()) == PT_INTERP {
            bail!("dynamically linked (it has an interpreter); a static executable is needed");
        }
    }
    Ok(())
}

/// The initramfs: the directories busybox's applets expect, `/dev/console`, busybox,
/// `/bin/memtest` and [`INIT_SCRIPT`] as `/init`.
pub fn initramfs(busybox: &[u8], memtest: &[u8]) -> Vec<u8> {
    let mut w = cpio::Writer::new();
    for d in [
        "/bin",
        "/sbin",
        "/proc",
        "/sys",
        "/dev",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
    ] {
        w.dir(d, 0o755);
    }
    w.dir("/tmp", 0o1777);
    w.char_dev("/dev/console", 0o600, 5, 1);
    w.file("/bin/busybox", 0o755, busybox);
    w.file("/bin/memtest", 0o755, memtest);
    w.file("/init", 0o755, INIT_SCRIPT.as_bytes());
    w.finish()
}

/// The device tree of a VM with `vcpus` vCPUs laid out as [`vm_layout`] says, booting
/// with `cmdline` and the initramfs at `initrd = (start, end)`, if it has one.
pub fn device_tree(vcpus: u64, cmdline: &str, initrd: Option<(u64, u64)>) -> Vec<u8> {
    use vm_layout::{GICD, GICR, RAM_BASE, RAM_BITS, UART, UART_SPI};
    assert!((1..=vm_layout::MAX_VCPUS).contains(&vcpus));
    let uart = format!("pl011@{UART:x}");
    let mut w = fdt::Writer::new();
    w.begin_node("");
    w.prop_str("compatible", "linux,dummy-virt");
    w.prop_str("model", "Bulkhead VM");
    w.prop_u32("#address-cells", 2);
    w.prop_u32("#size-cells", 2);
    w.prop_u32("interrupt-parent", GIC_PHANDLE);

    w.begin_node("chosen");
    w.prop_str("bootargs", cmdline);
    w.prop_str("stdout-path", &format!("/{uart}"));
    if let Some((start, end)) = initrd {
        w.prop_u64s("linux,initrd-start", &[start]);
        w.prop_u64s("linux,initrd-end", &[end]);
    }
    w.end_node();

    w.begin_node(&format!("memory@{RAM_BASE:x}"));
    w.prop_str("device_type", "memory");
    w.prop_u64s("reg", &[RAM_BASE, 1 << RAM_BITS]);
    w.end_node();

    w.begin_node("cpus");
    w.prop_u32("#address-cells", 1);
    w.prop_u32("#size-cells", 0);
    for n in 0..vcpus as u32 {
        w.begin_node(&format!("cpu@{n}"));
        w.prop_str("device_type", "cpu");
        w.prop_str("compatible", "arm,cortex-a57");
        w.prop_u32("reg", n);
        w.prop_str("enable-method", "psci");
        w.end_node();
    }
    w.end_node();

    w.begin_node("psci");
    w.prop_strs("compatible", &["arm,psci-1.0", "arm,psci-0.2"]);
    w.prop_str("method", "hvc");
    w.end_node();

    w.begin_node(&format!("intc@{GICD:x}"));
    w.prop_str("compatible", "arm,gic-v3");
    w.prop_u32("#interrupt-cells", 3);
    w.prop_u32("#address-cells", 2);
    w.prop_u32("#size-cells", 2);
    w.prop_empty("interrupt-controller");
    w.prop_u64s("reg", &[GICD, 0x1_0000, GICR, 0x2_0000 * vcpus]);
    w.prop_u32("#redistributor-regions", 1);
    w.prop_u32("phandle", GIC_PHANDLE);
    w.end_node();

    // PPIs, level-triggered active-high, with the CPU mask of the GICv2 binding (the
    // GICv3 driver ignores it).
    const PPI: u32 = 1;
    let flags = 0x4 | (((1u32 << vcpus) - 1) << 8);
    w.begin_node("timer");
    w.prop_str("compatible", "arm,armv8-timer");
    w.prop_empty("always-on");
    // Secure physical, non-secure physical, virtual, hypervisor.
    w.prop_cells(
        "interrupts",
        &[
            PPI, 13, flags, PPI, 14, flags, PPI, 11, flags, PPI, 10, flags,
        ],
    );
    w.end_node();

    w.begin_node("apb-pclk");
    w.prop_str("compatible", "fixed-clock");
    w.prop_u32("#clock-cells", 0);
    w.prop_u32("clock-frequency", 24_000_000);
    w.prop_str("clock-output-names", "clk24mhz");
    w.prop_u32("phandle", CLK_PHANDLE);
    w.end_node();

    const SPI: u32 = 0;
    const LEVEL_HIGH: u32 = 4;
    w.begin_node(&uart);
    w.prop_strs("compatible", &["arm,pl011", "arm,primecell"]);
    w.prop_u64s("reg", &[UART, 0x1000]);
    w.prop_cells("interrupts", &[SPI, UART_SPI, LEVEL_HIGH]);
    w.prop_cells("clocks", &[CLK_PHANDLE, CLK_PHANDLE]);
    w.prop_strs("clock-names", &["uartclk", "apb_pclk"]);
    w.end_node();

    w.end_node();
    w.finish()
}

/// Writes `bytes` to `path` unless it already holds exactly them (through a temporary
/// file, so a reader never sees half a file); returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(false);
    }
    write_atomically(path, bytes)?;
    Ok(true)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", shown(parent)))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", shown(&tmp)))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", shown(&tmp), shown(path)))?;
    Ok(())
}

/// How to do without the fetch.
fn by_hand() -> String {
    let linux = guest_dir().join("linux");
    format!(
        "or put an arm64 kernel Image and a static arm64 busybox at {} and {} by hand",
        shown(&linux.join("Image")),
        shown(&linux.join("busybox"))
    )
}

/// Runs `cmd` and returns its stdout; stderr is passed through.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", setup::describe(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", setup::describe(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes arm64 a dpkg foreign architecture, so apt can download its packages.
fn ensure_arm64_arch() -> Result<()> {
    let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.lines().any(|l| l.trim() == DEB_ARCH) {
        return Ok(());
    }
    say!("adding {DEB_ARCH} as a dpkg foreign architecture (`dpkg --add-architecture {DEB_ARCH}`)");
    setup::run_checked(
        Command::new("dpkg").args(["--add-architecture", DEB_ARCH]),
        "adding the arm64 architecture",
    )
    .with_context(|| format!("run as root, {}", by_hand()))
}

fn apt_update() -> Result<()> {
    say!("running `apt-get update` (for the {DEB_ARCH} package lists)");
    setup::run_checked(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
        "apt-get update",
    )
    .with_context(|| {
        format!(
            "run as root and check that the Debian mirrors can be reached, {}",
            by_hand()
        )
    })
}

/// The versioned kernel package a `Depends:` field of [`KERNEL_META_PACKAGE`] names.
fn kernel_dependency(show: &str) -> Option<String> {
    let depends = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    depends
        .split([',', '|'])
        .map(|d| d.trim().split([' ', '(']).next().unwrap_or(""))
        .map(|d| d.strip_suffix(":arm64").unwrap_or(d))
        .find(|d| {
            d.starts_with("linux-image-")
                && d.ends_with("-cloud-arm64")
                && *d != KERNEL_META_PACKAGE
        })
        .map(str::to_string)
}

/// Asks apt which kernel package the meta package currently depends on.
fn kernel_package() -> Result<String> {
    let show = output(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        &format!("{KERNEL_META_PACKAGE}:{DEB_ARCH}"),
    ]))?;
    kernel_dependency(&show).ok_or_else(|| {
        anyhow!("`apt-cache show {KERNEL_META_PACKAGE}:{DEB_ARCH}` names no linux-image-*-cloud-arm64 dependency")
    })
}

/// The `.deb` files of `package` in `dir`.
fn debs_of(dir: &Path, package: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{package}_");
    let suffix = format!("_{DEB_ARCH}.deb");
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", shown(dir)))? {
        let path = e?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(&suffix) {
            found.push(path);
        }
    }
    Ok(found)
}

/// `apt-get download` of `packages` into `dir` (stale `.deb`s of them removed first).
fn download(dir: &Path, packages: &[&str]) -> Result<()> {
    for p in packages {
        for old in debs_of(dir, p)? {
            std::fs::remove_file(&old).with_context(|| format!("cannot remove {}", shown(&old)))?;
        }
    }
    let mut cmd = Command::new("apt-get");
    cmd.arg("download")
        .args(packages.iter().map(|p| format!("{p}:{DEB_ARCH}")))
        .current_dir(dir)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    setup::run_checked(&mut cmd, "apt-get download")
}

/// Unpacks the one downloaded `.deb` of `package` into `dir/<package>/`; returns that
/// directory and the package's version.
fn unpack(dir: &Path, package: &str) -> Result<(PathBuf, String)> {
    let debs = debs_of(dir, package)?;
    let [deb] = debs.as_slice() else {
        bail!(
            "expected one {package}_*_{DEB_ARCH}.deb in {} after the download, found {}",
            shown(dir),
            debs.len()
        );
    };
    let version = output(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"))?
        .trim()
        .to_string();
    let into = dir.join(package);
    if into.exists() {
        std::fs::remove_dir_all(&into)
            .with_context(|| format!("cannot remove {}", shown(&into)))?;
    }
    say!("unpacking {} into {}", shown(deb), shown(&into));
    setup::run_checked(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&into),
        &format!("unpacking {package}"),
    )?;
    Ok((into, version))
}

/// The `Image` in a kernel package's `boot/vmlinuz-*`, decompressed if it is gzipped.
fn kernel_image(unpacked: &Path) -> Result<Vec<u8>> {
    let boot = unpacked.join("boot");
    let mut vmlinuz = Vec::new();
    for e in std::fs::read_dir(&boot).with_context(|| format!("cannot list {}", shown(&boot)))? {
        let path = e?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("vmlinuz-") {
            vmlinuz.push(path);
        }
    }
    let [vmlinuz] = vmlinuz.as_slice() else {
        bail!(
            "expected one vmlinuz-* in {}, found {}",
            shown(&boot),
            vmlinuz.len()
        );
    };
    let bytes =
        std::fs::read(vmlinuz).with_context(|| format!("cannot read {}", shown(vmlinuz)))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        say!(
            "{} is gzip-compressed: decompressing it with gunzip",
            shown(vmlinuz)
        );
        let out = Command::new("gunzip")
            .arg("-c")
            .arg(vmlinuz)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("could not start gunzip (install gzip)")?;
        if !out.status.success() {
            bail!("gunzip -c {} failed ({})", shown(vmlinuz), out.status);
        }
        return Ok(out.stdout);
    }
    say!("{} is an uncompressed Image", shown(vmlinuz));
    Ok(bytes)
}

/// Downloads Debian's arm64 cloud kernel and static busybox with apt and takes
/// `linux/Image` and `linux/busybox` from them (under `dir`, i.e. `target/guest/`).
pub fn fetch(dir: &Path) -> Result<()> {
    let start = Instant::now();
    say!(
        "fetching the Linux guest: Debian's {KERNEL_META_PACKAGE}:{DEB_ARCH} kernel and \
         {BUSYBOX_PACKAGE}:{DEB_ARCH}"
    );
    for tool in ["dpkg", "dpkg-deb", "apt-get", "apt-cache"] {
        if !setup::on_path(tool) {
            bail!(
                "`{tool}` was not found: the Linux guest is fetched from Debian's arm64 \
                 packages with apt (on Debian or Ubuntu), {}",
                by_hand()
            );
        }
    }
    ensure_arm64_arch()?;
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", shown(&debs)))?;

    let mut updated = false;
    let kernel_pkg = match kernel_package() {
        Ok(p) => p,
        Err(e) => {
            say!("{e:#}: the package lists may lack {DEB_ARCH}");
            apt_update()?;
            updated = true;
            kernel_package().with_context(by_hand)?
        }
    };
    say!("{KERNEL_META_PACKAGE} depends on {kernel_pkg}: downloading it and {BUSYBOX_PACKAGE} into {}", shown(&debs));
    let packages = [kernel_pkg.as_str(), BUSYBOX_PACKAGE];
    if let Err(e) = download(&debs, &packages) {
        if updated {
            return Err(e).with_context(|| {
                format!(
                    "run as root and check access to the Debian mirrors, {}",
                    by_hand()
                )
            });
        }
        say!("{e:#}: retrying after `apt-get update`");
        apt_update()?;
        download(&debs, &packages).with_context(by_hand)?;
    }

    let (kernel_tree, kernel_version) = unpack(&debs, &kernel_pkg)?;
    let (busybox_tree, busybox_version) = unpack(&debs, BUSYBOX_PACKAGE)?;

    let image = kernel_image(&kernel_tree)?;
    let header = ImageHeader::parse(&image).context("the Debian kernel is not an arm64 Image")?;
    let busybox_path = busybox_tree.join("bin").join("busybox");
    let busybox = std::fs::read(&busybox_path)
        .with_context(|| format!("cannot read {}", shown(&busybox_path)))?;
    check_static_arm64(&busybox)
        .with_context(|| format!("{} is unusable", shown(&busybox_path)))?;

    let linux = dir.join("linux");
    let packages_txt =
        format!("{kernel_pkg} {kernel_version}\n{BUSYBOX_PACKAGE} {busybox_version}\n");
    write_atomically(&linux.join("packages.txt"), packages_txt.as_bytes())?;
    let busybox_out = linux.join("busybox");
    write_atomically(&busybox_out, &busybox)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&busybox_out, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", shown(&busybox_out)))?;
    }
    // The Image last: its presence says the fetch is complete.
    let image_out = linux.join("Image");
    write_atomically(&image_out, &image)?;
    say!(
        "fetched {kernel_pkg} {kernel_version} and {BUSYBOX_PACKAGE} {busybox_version} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    say!("  {} ({} bytes): {header}", shown(&image_out), image.len());
    say!("  {} ({} bytes)", shown(&busybox_out), busybox.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::tests::{read, FILESIZE, MODE, RDEVMAJOR, RDEVMINOR};

    #[test]
    fn picks_the_versioned_kernel_dependency() {
        let show = "Package: linux-image-cloud-arm64\n\
                    Version: 6.1.158-1\n\
                    Depends: linux-image-6.1.0-41-cloud-arm64 (= 6.1.158-1)\n\
                    Description: Linux for arm64 cloud (meta-package)\n";
        assert_eq!(
            kernel_dependency(show).as_deref(),
            Some("linux-image-6.1.0-41-cloud-arm64")
        );
        let alt = "Depends: foo, linux-image-6.1.0-9-cloud-arm64:arm64 | bar (>= 1)\n";
        assert_eq!(
            kernel_dependency(alt).as_deref(),
            Some("linux-image-6.1.0-9-cloud-arm64")
        );
        assert_eq!(kernel_dependency("Package: x\n"), None);
        assert_eq!(
            kernel_dependency("Depends: linux-image-cloud-arm64\n"),
            None
        );
    }

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[0x38..0x3c].copy_from_slice(IMAGE_MAGIC);
        h
    }

    #[test]
    fn image_header() {
        let h = ImageHeader::parse(&header(0, 0x1b3_0000, 0xa)).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: 0,
                image_size: 0x1b3_0000,
                flags: 0xa
            }
        );
        assert_eq!(
            h.to_string(),
            "text_offset 0x0, image_size 0x1b30000 (27.2 MiB), flags 0xa (4K pages, placeable anywhere)"
        );
        let mut bad = header(0, 1, 0);
        bad[0x38] = b'X';
        assert!(ImageHeader::parse(&bad).is_err());
        assert!(ImageHeader::parse(&header(0, 0, 0)).is_err());
        assert!(ImageHeader::parse(&header(0, 1, 1)).is_err());
        assert!(ImageHeader::parse(&[0; 63]).is_err());
        // A gzip stream is not an Image.
        let mut gz = vec![0x1f, 0x8b];
        gz.resize(64, 0);
        assert!(ImageHeader::parse(&gz).is_err());
    }

    #[test]
    fn initramfs_contents() {
        let a = initramfs(b"BUSYBOX", b"MEMTEST");
        assert_eq!(a, initramfs(b"BUSYBOX", b"MEMTEST"), "deterministic");
        let e = read(&a);
        let names: Vec<&str> = e.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "sbin",
                "proc",
                "sys",
                "dev",
                "usr",
                "usr/bin",
                "usr/sbin",
                "tmp",
                "dev/console",
                "bin/busybox",
                "bin/memtest",
                "init"
            ]
        );
        let by = |n: &str| e.iter().find(|x| x.name == n).unwrap();
        assert_eq!(by("bin").fields[MODE], 0o040_755);
        assert_eq!(by("tmp").fields[MODE], 0o041_777);
        let console = by("dev/console");
        assert_eq!(console.fields[MODE], 0o020_600);
        assert_eq!(
            (console.fields[RDEVMAJOR], console.fields[RDEVMINOR]),
            (5, 1)
        );
        assert_eq!(by("bin/busybox").fields[MODE], 0o100_755);
        assert_eq!(by("bin/busybox").data, b"BUSYBOX");
        assert_eq!(by("bin/memtest").fields[MODE], 0o100_755);
        assert_eq!(by("bin/memtest").data, b"MEMTEST");
        let init = by("init");
        assert_eq!(init.fields[MODE], 0o100_755);
        assert_eq!(init.fields[FILESIZE] as usize, INIT_SCRIPT.len());
        assert!(init.data.starts_with(b"#!/bin/busybox sh\n"));
    }

    #[test]
    fn init_script_parses() {
        // The host's POSIX sh checks the syntax (busybox ash accepts what it accepts).
        let mut sh = match Command::new("sh")
            .arg("-n")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(sh) => sh,
            Err(e) => {
                eprintln!("no sh on the host ({e}): skipping");
                return;
            }
        };
        use std::io::Write;
        sh.stdin
            .take()
            .unwrap()
            .write_all(INIT_SCRIPT.as_bytes())
            .unwrap();
        let out = sh.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sh -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for word in [
            "bulkhead.poweroff",
            "bulkhead.linger",
            "bulkhead.devmem=",
            "bulkhead.recheck",
        ] {
            assert!(INIT_SCRIPT.contains(word), "{word}");
        }
    }

    #[test]
    fn static_arm64_check() {
        assert!(check_static_arm64(b"not an elf").is_err());
        // A minimal static arm64 ELF header with no program headers.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 183;
        assert!(check_static_arm64(&elf).is_ok());
        // One PT_INTERP program header makes it dynamic.
        elf[0x20] = 64;
        elf[0x36] = 56;
        elf[0x38] = 1;
        elf.resize(64 + 56, 0);
        elf[64] = 3;
        assert!(check_static_arm64(&elf).is_err());
        elf[18] = 62; // x86-64
        assert!(check_static_arm64(&elf).is_err());
    }

    #[test]
    fn device_tree_matches_the_layout() {
        for vcpus in 1..=vm_layout::MAX_VCPUS {
            let blob = device_tree(
                vcpus,
                "console=ttyAMA0",
                Some((vm_layout::INITRD, vm_layout::INITRD + 4096)),
            );
            assert!(blob.len() as u64 <= vm_layout::DTB_MAX);
            let m = kcore::dtb::parse(&blob).unwrap();
            assert_eq!(
                m.memory.as_slice(),
                &[
                    kcore::addr::PhysRange::new(vm_layout::RAM_BASE, 1 << vm_layout::RAM_BITS)
                        .unwrap()
                ]
            );
            let cpus: Vec<u64> = (0..vcpus).collect();
            assert_eq!(m.cpus.as_slice(), cpus.as_slice());
            assert_eq!(m.psci_smc, Some(false));
        }
    }

    #[test]
    fn device_tree_through_dtc() {
        if !fdt::dtc_available() {
            eprintln!("dtc not on PATH: skipping");
            return;
        }
        let dts = fdt::dtc_decompile(&device_tree(
            2,
            "console=ttyAMA0 earlycon",
            Some((0x4c00_0000, 0x4c12_3456)),
        ));
        for want in [
            "compatible = \"linux,dummy-virt\";",
            "interrupt-parent = <0x01>;",
            "bootargs = \"console=ttyAMA0 earlycon\";",
            "stdout-path = \"/pl011@9000000\";",
            "linux,initrd-start = <0x00 0x4c000000>;",
            "linux,initrd-end = <0x00 0x4c123456>;",
            "memory@40000000 {",
            "reg = <0x00 0x40000000 0x00 0x10000000>;",
            "cpu@1 {",
            "intc@8000000 {",
            "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x40000>;",
            "interrupts = <0x01 0x0d 0x304 0x01 0x0e 0x304 0x01 0x0b 0x304 0x01 0x0a 0x304>;",
            "pl011@9000000 {",
            "interrupts = <0x00 0x01 0x04>;",
            "clocks = <0x02 0x02>;",
            "clock-names = \"uartclk\", \"apb_pclk\";",
        ] {
            assert!(dts.contains(want), "missing `{want}` in:\n{dts}");
        }
    }

    /// Fetches the real guest (apt, network) and writes its files for 1 and 2 vCPUs:
    /// `cargo test -p xtask -- --ignored fetch_the_linux_guest --nocapture`.
    #[test]
    #[ignore]
    fn fetch_the_linux_guest() {
        for vcpus in [1, 2] {
            let g = linux_guest(vcpus, "console=ttyAMA0 bulkhead.poweroff").unwrap();
            for p in [&g.image, &g.initrd, &g.dtb] {
                let len = std::fs::metadata(p).unwrap().len();
                eprintln!("{}: {len} bytes", shown(p));
            }
        }
    }
}
