//! QEMU `virt` (`-M virt,virtualization=on,gic-version=3 -cpu cortex-a57`).
//!
//! Addresses are QEMU's (hw/arm/virt.c memory map); `../shared` facts: the kernel is
//! entered at EL2, the DTB sits at the start of RAM, PSCI goes over SMC.
#![no_std]
#![forbid(unsafe_code)]

use kcore::board::{Board, Gic, PsciConduit, Region, TimerIrqs, Uart};

#[allow(dead_code)]
mod layout;

/// The QEMU virt board.
pub struct QemuVirt;

impl Board for QemuVirt {
    const NAME: &'static str = "qemu-virt";
    const UART: Uart = Uart::Pl011(0x0900_0000);
    const GIC: Gic = Gic::V3 {
        gicd: 0x0800_0000,
        gicr: 0x080a_0000,
    };
    const PSCI: PsciConduit = PsciConduit::Smc;
    const TIMER: TimerIrqs = TimerIrqs {
        hyp_phys: 26,
        virt: 27,
        phys: 30,
    };
    const RAM_FALLBACK: Region = Region {
        base: 0x4000_0000,
        size: 1 << 30,
    };
    /// Everything below RAM is MMIO on virt (flash, GIC, UART, RTC, virtio, PCIe windows).
    const DEVICE_RANGES: &'static [Region] = &[Region {
        base: 0,
        size: 0x4000_0000,
    }];
    const LOAD_ADDR: u64 = layout::LOAD_ADDR;
    const DTB_HINT: Option<u64> = Some(0x4000_0000);
    /// QEMU always passes a DTB that lists the CPUs.
    const CPUS_FALLBACK: &'static [u64] = &[];
    const MAX_CPUS: usize = 8;
    /// `cargo xtask run` starts QEMU with `-semihosting-config enable=on,target=native`.
    const SEMIHOSTING_EXIT: bool = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_loads_inside_ram_above_the_dtb() {
        let ram = QemuVirt::RAM_FALLBACK;
        assert!(QemuVirt::LOAD_ADDR >= ram.base + (1 << 20));
        assert!(QemuVirt::LOAD_ADDR < ram.base + ram.size);
        assert_eq!(QemuVirt::LOAD_ADDR % (2 << 20), 0);
        for d in QemuVirt::DEVICE_RANGES {
            assert!(d.base + d.size <= ram.base, "devices must not overlap RAM");
        }
    }
}
