//! A Linux VM: the arm64 `Image` (loaded by its header), an initramfs and a device tree
//! the tools generated for `bulkhead_sys::vm_layout`, all embedded in this VMM by the
//! build (`BULKHEAD_GUEST_LINUX_*`). vCPU 0 starts at the image with x0 = the device tree
//! (Linux's arm64 boot protocol, `Documentation/arm64/booting.rst`); the others come up
//! through PSCI CPU_ON.

use bulkhead_sys::vm_layout::{DTB, DTB_MAX, INITRD, KERNEL, MAX_VCPUS, RAM_BITS};
use bulkhead_sys::Error;

use crate::vm::{build, copy_in, serve, start};

static IMAGE: &[u8] = include_bytes!(env!("LINUX_IMAGE"));
static INITRD_BYTES: &[u8] = include_bytes!(env!("LINUX_INITRD"));
static DTB_BYTES: &[u8] = include_bytes!(env!("LINUX_DTB"));

fn le64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// The `Image` header: (text_offset, image_size), if the magic is right.
fn header(img: &[u8]) -> Option<(u64, u64)> {
    if img.get(0x38..0x3c)? != b"ARM\x64" {
        return None;
    }
    Some((le64(img, 8)?, le64(img, 16)?))
}

/// Builds and runs the Linux VM; returns the VMM's exit status.
pub fn run() -> u64 {
    let vcpus = option_env!("BULKHEAD_GUEST_LINUX_VCPUS")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_VCPUS);
    let Some((text_offset, image_size)) = header(IMAGE) else {
        defmt::error!(
            "vmm: no Linux image embedded (or not an arm64 Image): build with the tools' Linux guest"
        );
        return 2;
    };
    let size = image_size.max(IMAGE.len() as u64);
    if KERNEL + text_offset + size > INITRD || DTB_BYTES.len() as u64 > DTB_MAX {
        defmt::error!("vmm: the Linux image or its device tree does not fit the VM's memory map");
        return 2;
    }
    let go = || -> Result<u64, Error> {
        let mut vm = build("linux", vcpus, RAM_BITS)?;
        vm.gic = Some(crate::gic::Gic::new(vcpus as usize));
        // A guest that powers its VM off ends it normally.
        vm.passed = true;
        copy_in(&vm, KERNEL + text_offset, IMAGE)?;
        copy_in(&vm, INITRD, INITRD_BYTES)?;
        copy_in(&vm, DTB, DTB_BYTES)?;
        defmt::info!(
            "vmm: VM linux: {=u64} vCPU(s), {=u64} MiB of RAM, Image {=u64} KiB at {=u64:#x}, initramfs {=usize} KiB, device tree {=usize} bytes",
            vcpus,
            1u64 << (RAM_BITS - 20),
            IMAGE.len() as u64 >> 10,
            KERNEL + text_offset,
            INITRD_BYTES.len() >> 10,
            DTB_BYTES.len()
        );
        start(&mut vm, 0, KERNEL + text_offset, DTB)?;
        Ok(serve(&mut vm, "linux"))
    };
    go().unwrap_or_else(|e| {
        defmt::error!("vmm: building the Linux VM failed: {}", e as u64);
        1
    })
}
