//! Xilinx ZCU102 (Zynq UltraScale+ MPSoC, four Cortex-A53), as QEMU models it
//! (`-M xlnx-zcu102,virtualization=on -m 2G`).
//!
//! Addresses are the ZynqMP memory map (UG1085 chapter 10; QEMU hw/arm/xlnx-zynqmp.c).
//! `../shared` facts: the kernel is entered at EL2 on CPU 0 with no DTB, PSCI goes over
//! SMC, the console is the Cadence UART0, the interrupt controller a GIC-400 (GICv2 with
//! virtualization extensions).
#![no_std]
#![forbid(unsafe_code)]

use kcore::board::{Board, Gic, PsciConduit, Region, TimerIrqs, Uart};

#[allow(dead_code)]
mod layout;

/// The ZCU102 board.
pub struct Zcu102;

impl Board for Zcu102 {
    const NAME: &'static str = "zcu102";
    const UART: Uart = Uart::Cadence(0xff00_0000);
    const GIC: Gic = Gic::V2 {
        gicd: 0xf901_0000,
        gicc: 0xf902_0000,
        gich: 0xf904_0000,
        gicv: 0xf906_0000,
    };
    const PSCI: PsciConduit = PsciConduit::Smc;
    const TIMER: TimerIrqs = TimerIrqs {
        hyp_phys: 26,
        virt: 27,
        phys: 30,
    };
    /// DDR low (QEMU run with `-m 2G`; a real ZCU102 has 4 GiB, the rest above 32 bits).
    const RAM_FALLBACK: Region = Region {
        base: 0,
        size: 0x8000_0000,
    };
    /// The low-power and full-power domain peripherals (UARTs, GIC, timers, ...):
    /// 0xF800_0000 up to 4 GiB.
    const DEVICE_RANGES: &'static [Region] = &[Region {
        base: 0xf800_0000,
        size: 0x0800_0000,
    }];
    const LOAD_ADDR: u64 = layout::LOAD_ADDR;
    /// Nothing leaves a DTB anywhere on this board (QEMU builds none for it).
    const DTB_HINT: Option<u64> = None;
    /// The four A53 cores of the application processing unit (cluster 0, Aff0 0..3).
    const CPUS_FALLBACK: &'static [u64] = &[0, 1, 2, 3];
    const MAX_CPUS: usize = 4;
    /// A real board has no semihosting; errors end in PSCI SYSTEM_OFF.
    const SEMIHOSTING_EXIT: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_loads_inside_ram_away_from_zero() {
        let ram = Zcu102::RAM_FALLBACK;
        assert!(Zcu102::LOAD_ADDR >= ram.base + (1 << 20));
        assert!(Zcu102::LOAD_ADDR < ram.base + ram.size);
        assert_eq!(Zcu102::LOAD_ADDR % (2 << 20), 0);
        for d in Zcu102::DEVICE_RANGES {
            assert!(
                d.base >= ram.base + ram.size,
                "devices must not overlap RAM"
            );
        }
        assert_eq!(Zcu102::CPUS_FALLBACK.len(), Zcu102::MAX_CPUS);
    }
}
