//! What the kernel needs to know about a board, as data behind one small trait.
//!
//! A board crate (`board/<name>`) implements [`Board`] with constants only. Values the
//! device tree provides (memory size, CPU list) are read from the DTB at boot; the
//! constants here are the fallback when no DTB is found.

/// Which console UART the board has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uart {
    /// Arm PL011 at this physical address.
    Pl011(u64),
    /// Cadence UART (Zynq UltraScale+) at this physical address.
    Cadence(u64),
}

/// The interrupt controller and where its parts live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv3: distributor and the first redistributor frame.
    V3 {
        /// GICD base.
        gicd: u64,
        /// GICR base (redistributors follow each other, 128 KiB each).
        gicr: u64,
    },
    /// GICv2 with virtualization extensions.
    V2 {
        /// GICD base.
        gicd: u64,
        /// GICC (CPU interface) base.
        gicc: u64,
        /// GICH (hypervisor control) base.
        gich: u64,
        /// GICV (virtual CPU interface) base.
        gicv: u64,
    },
}

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `smc #0` (firmware at EL3, as on QEMU virt with virtualization=on and TF-A).
    Smc,
}

/// Interrupt IDs of the generic timer's PPIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerIrqs {
    /// EL2 physical timer (CNTHP).
    pub hyp_phys: u32,
    /// Virtual timer (CNTV).
    pub virt: u32,
    /// EL1 physical timer (CNTP).
    pub phys: u32,
}

/// A memory region of the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Base physical address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A board: constants only.
pub trait Board {
    /// Name used in logs and by the tools.
    const NAME: &'static str;
    /// Console UART.
    const UART: Uart;
    /// Interrupt controller.
    const GIC: Gic;
    /// PSCI conduit.
    const PSCI: PsciConduit;
    /// Timer interrupt IDs.
    const TIMER: TimerIrqs;
    /// RAM when the DTB says nothing.
    const RAM_FALLBACK: Region;
    /// Physical ranges that hold devices (mapped as Device memory by the kernel).
    const DEVICE_RANGES: &'static [Region];
    /// Where the kernel image is linked and loaded.
    const LOAD_ADDR: u64;
    /// Where firmware or the loader leaves the DTB when it does not pass its address.
    const DTB_HINT: Option<u64>;
    /// MPIDR affinities (Aff3..Aff0 as in MPIDR_EL1, other bits clear) of the board's
    /// CPUs when the DTB says nothing; the boot core is started whether listed or not.
    const CPUS_FALLBACK: &'static [u64];
    /// Most CPUs the kernel supports on this board.
    const MAX_CPUS: usize;
    /// True if the board is only ever an emulator run with semihosting enabled, so a
    /// non-zero exit status can be reported through semihosting SYS_EXIT.
    const SEMIHOSTING_EXIT: bool;
}
