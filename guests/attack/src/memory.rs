//! Attack 1: loads, stores and instruction fetches at intermediate physical addresses
//! outside this VM's RAM and devices. The VMM must inject a synchronous external abort
//! for each (Arm ARM D17.2.40: a data abort taken without a change in exception level,
//! EC 0x25, DFSC 0b010000; an instruction abort, EC 0x21, IFSC 0b010000); the VMM does
//! not know the faulting virtual address, so FAR_EL1 is marked not valid (ESR.FnV).
//!
//! Where another VM's RAM can lie: each VM's RAM is a naturally aligned 256 MiB block the
//! kernel cuts from the machine's RAM (1 GiB at 0x4000_0000 on QEMU virt as the tools run
//! it), so every such block but the one this VM's RAM is seen at is tried. The kernel
//! itself is loaded at physical 0x4020_0000: that IPA lies inside this VM's own RAM, so
//! the attack there checks that it reaches this VM's memory and nothing else.

use crate::arch::{self, trapped, Fault};
use crate::console::verdict;
use bulkhead_sys::vm_layout::{RAM_BASE, RAM_BITS};

/// The 256 MiB-aligned blocks of the machine's RAM other than this VM's own IPA range.
pub const OTHER_RAM: [u64; 3] = [0x5000_0000, 0x6000_0000, 0x7000_0000];
/// Where QEMU virt loads the kernel (`board/qemu-virt`'s LOAD_ADDR).
const KERNEL_PA: u64 = 0x4020_0000;
/// Devices of the machine that this VM is not given: flash, the GIC ITS, the PL031 RTC,
/// the GPIO controller, virtio-mmio, PCIe MMIO and high ECAM.
const DEVICES: [(u64, &str); 7] = [
    (0x0000_0000, "flash"),
    (0x0808_0000, "GIC ITS"),
    (0x0901_0000, "RTC"),
    (0x0903_0000, "GPIO"),
    (0x0a00_0000, "virtio-mmio"),
    (0x1000_0000, "PCIe MMIO"),
    (0x40_1000_0000, "PCIe ECAM"),
];

const EC_DABT_CUR: u64 = 0x25;
const EC_IABT_CUR: u64 = 0x21;

/// A read and a write at `ipa`; each must be an external abort with the right WnR.
fn both_abort(ipa: u64) -> (Option<Fault>, Option<Fault>, bool) {
    let r = trapped(|| {
        arch::read64(ipa);
    });
    let w = trapped(|| arch::write64(ipa, 0xbad0_bad0_bad0_bad0));
    let ok = matches!(r, Some(f) if f.is_sea(EC_DABT_CUR) && !f.write())
        && matches!(w, Some(f) if f.is_sea(EC_DABT_CUR) && f.write());
    (r, w, ok)
}

fn esr(f: Option<Fault>) -> u64 {
    f.map_or(0, |f| f.esr)
}

/// FAR_EL1 as the line shows it: its value, or that it is not valid (ESR.FnV).
struct Far(Option<Fault>);

impl core::fmt::Display for Far {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(x) if x.esr & (1 << 10) != 0 => f.write_str("not valid (FnV)"),
            Some(x) => write!(f, "{:#x}", x.far),
        }
    }
}

const SEA: &str = "a synchronous external abort (EC 0x25, DFSC 0x10) with WnR as the access";

/// Runs attack 1.
pub fn run() {
    for ipa in OTHER_RAM {
        let (r, w, ok) = both_abort(ipa);
        verdict(
            "other-ram",
            ok,
            format_args!(
                "IPA {:#x} read+write: external abort each (ESR {:#x} {:#x}, FAR {})",
                ipa,
                esr(r),
                esr(w),
                Far(r)
            ),
            SEA,
        );
    }

    // The kernel's physical load address, as an IPA, is this VM's own RAM.
    let own = RAM_BASE..RAM_BASE + (1 << RAM_BITS);
    let marker = 0xa77a_c4ed_0000_0000 | KERNEL_PA;
    let f = trapped(|| arch::write64(KERNEL_PA, marker));
    let back = arch::read64(KERNEL_PA);
    verdict(
        "kernel-pa",
        own.contains(&KERNEL_PA) && f.is_none() && back == marker,
        format_args!(
            "IPA {:#x} (the kernel's physical address) is this VM's own RAM: our marker read back, no abort",
            KERNEL_PA
        ),
        "this VM's own RAM at that IPA",
    );

    for (ipa, name) in DEVICES {
        let (r, w, ok) = both_abort(ipa);
        verdict(
            "device",
            ok,
            format_args!(
                "{} at IPA {:#x} read+write: external abort each (ESR {:#x} {:#x})",
                name,
                ipa,
                esr(r),
                esr(w)
            ),
            SEA,
        );
    }

    // The top of the 40-bit IPA space, the first IPA beyond it (outside stage 2's input
    // range: a stage-2 fault the VMM turns into an abort too), and an address beyond the
    // PE's 44-bit physical range, which with the guest's MMU off is an address size fault
    // of its own stage 1 at level 0 (DFSC 0b000000), raised without the hypervisor.
    for ipa in [0xff_ffff_f000u64, 1 << 40] {
        let (r, w, ok) = both_abort(ipa);
        verdict(
            "ipa-limit",
            ok,
            format_args!(
                "IPA {:#x} read+write: external abort each (ESR {:#x} {:#x})",
                ipa,
                esr(r),
                esr(w)
            ),
            SEA,
        );
    }
    let beyond = 1u64 << 44;
    let r = trapped(|| {
        arch::read64(beyond);
    });
    verdict(
        "pa-limit",
        matches!(r, Some(f) if f.ec() == EC_DABT_CUR && f.fsc() == 0),
        format_args!(
            "read at {:#x} (beyond the 44-bit physical range): ESR {:#x}",
            beyond,
            esr(r)
        ),
        "an address size fault at level 0 (EC 0x25, DFSC 0x00)",
    );

    // Instruction fetch outside RAM.
    let x = trapped(|| arch::execute(OTHER_RAM[0]));
    verdict(
        "exec",
        matches!(x, Some(f) if f.is_sea(EC_IABT_CUR) && f.elr == OTHER_RAM[0]),
        format_args!(
            "branch to IPA {:#x}: instruction abort (ESR {:#x}, ELR {:#x})",
            OTHER_RAM[0],
            esr(x),
            x.map_or(0, |f| f.elr)
        ),
        "a synchronous external abort on the fetch (EC 0x21, IFSC 0x10) at that address",
    );

    // An access the VMM cannot emulate: a load pair gives the hypervisor no syndrome.
    let uart = bulkhead_sys::vm_layout::UART;
    let p = trapped(|| {
        arch::load_pair(uart);
    });
    verdict(
        "no-syndrome",
        matches!(p, Some(f) if f.is_sea(EC_DABT_CUR)),
        format_args!(
            "ldp from the emulated UART at {:#x} (no syndrome to emulate): external abort (ESR {:#x})",
            uart,
            esr(p)
        ),
        SEA,
    );
}

/// One round of the soak: a read and a write at every other RAM block; true if each
/// aborted as it must.
pub fn soak_round() -> bool {
    OTHER_RAM.iter().all(|&ipa| both_abort(ipa).2)
}
