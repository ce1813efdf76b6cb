//! Bare-metal guests that a VM boots the way it boots Linux (`kernel = "guest:NAME"` in
//! a `[[vm]]` table): the crate `guests/NAME` is built for the bare-metal target, laid
//! out flat from its ELF (it must start with an arm64 `Image` header, like the kernel's
//! `kernel.bin`) and written to `target/guest/NAME/Image`. The VMM loads it by that
//! header at `vm_layout::KERNEL` and enters it with x0 = the VM's device tree, which has
//! no initramfs.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bulkhead_sys::vm_layout;

use crate::guest::{self, BOOT_COUNT_WORD};
use crate::image::{self, ImageHeader};
use crate::say;
use crate::setup::{self, shown, TASK_TARGET};
use crate::system::BARE_GUESTS;

/// What [`bare_guest`] prepared.
#[derive(Debug, Clone)]
pub struct BareGuest {
    /// The flat `Image` (also written to `target/guest/<name>/Image`).
    pub image: Vec<u8>,
    /// The VM's device tree.
    pub dtb: Vec<u8>,
}

/// Where the `Image` of bare guest `name` is written.
pub fn image_path(name: &str) -> PathBuf {
    guest::guest_dir().join(name).join("Image")
}

/// Builds bare guest `name` (one of [`BARE_GUESTS`]) and the device tree of a VM with
/// `vcpus` vCPUs booting it with `cmdline`.
pub fn bare_guest(name: &str, vcpus: u64, cmdline: &str) -> Result<BareGuest> {
    if !BARE_GUESTS.contains(&name) {
        bail!(
            "`{name}` is not a bare-metal guest the tools build (known: {})",
            BARE_GUESTS.join(", ")
        );
    }
    if !(1..=vm_layout::MAX_VCPUS).contains(&vcpus) {
        bail!("a VM has 1 to {} vCPUs, not {vcpus}", vm_layout::MAX_VCPUS);
    }
    setup::run_checked(
        setup::cargo().args([
            "build",
            "--release",
            "--quiet",
            "--target",
            TASK_TARGET,
            "-p",
            name,
        ]),
        &format!("building the bare-metal guest `{name}`"),
    )?;
    let elf_path = setup::repo_root()
        .join("target")
        .join(TASK_TARGET)
        .join("release")
        .join(name);
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("cannot read {}", shown(&elf_path)))?;
    let image = image::flat_image(&elf).with_context(|| format!("guest `{name}`"))?;
    let header = ImageHeader::parse(&image)
        .with_context(|| format!("guest `{name}` does not start with an arm64 Image header"))?;
    check_fits(&header).with_context(|| format!("guest `{name}`"))?;
    let path = image_path(name);
    guest::write_if_changed(&path, &image)?;

    let cmdline = format!("{cmdline} {BOOT_COUNT_WORD}0000");
    let dtb = guest::device_tree(vcpus, &cmdline, None);
    if dtb.len() as u64 > vm_layout::DTB_MAX {
        bail!(
            "the device tree is {} bytes, more than the {} the memory map allows",
            dtb.len(),
            vm_layout::DTB_MAX
        );
    }
    say!(
        "bare-metal guest {name}: {} ({} KiB; text_offset {:#x}, image_size {:#x}); device tree {} bytes, {vcpus} vCPU(s)",
        shown(&path),
        image.len().div_ceil(1024),
        header.text_offset,
        header.image_size,
        dtb.len()
    );
    Ok(BareGuest { image, dtb })
}

/// Checks that an image placed by `header` ends below the initramfs area of the VM's
/// memory map (the VMM checks this again).
fn check_fits(header: &ImageHeader) -> Result<()> {
    let end = vm_layout::KERNEL + header.text_offset + header.image_size;
    if end > vm_layout::INITRD {
        bail!(
            "the image would end at {end:#x}, past the initramfs area at {:#x}",
            vm_layout::INITRD
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_guests_and_sizes_are_refused() {
        let e = format!("{:#}", bare_guest("memtest", 1, "x").unwrap_err());
        assert!(
            e.contains("not a bare-metal guest") && e.contains("attack"),
            "{e}"
        );
        let e = format!("{:#}", bare_guest("attack", 9, "x").unwrap_err());
        assert!(e.contains("1 to 4 vCPUs"), "{e}");
        let fits = ImageHeader {
            text_offset: 0,
            image_size: 0x1_0000,
            flags: 0xa,
        };
        assert!(check_fits(&fits).is_ok());
        let big = ImageHeader {
            image_size: vm_layout::INITRD - vm_layout::KERNEL + 1,
            ..fits
        };
        assert!(check_fits(&big).is_err());
    }
}
