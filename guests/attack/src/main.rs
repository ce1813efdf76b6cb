//! The attack guest: a hostile bare-metal VM for Bulkhead's attack scenario. It is a flat
//! arm64 `Image` (header at its first byte), so the VMM of a Linux VM boots it the way it
//! boots Linux: loaded at the start of guest RAM, entered at EL1 with x0 = the device
//! tree. A system description names it `kernel = "guest:attack"`.
//!
//! vCPU 0 makes the attacks one after the other and prints one line per attack with what
//! it observed and whether that is the architected (or documented) result, then the
//! soak (rounds of attacks for `attack.soak=SECONDS` from its command line, while vCPU 1
//! hammers its VMM alongside), a summary line, and powers the VM off (PSCI SYSTEM_OFF).
//! The catalogue, and the scenario that checks these lines, is `docs/security.md`.
//!
//! Memory: the MMU stays off, so every data access is Device-nGnRnE (aligned accesses
//! only, which the target's strict alignment guarantees, and no exclusives: shared
//! variables are atomics used with plain loads and stores, each with one writer).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod console;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod fdt;
#[cfg(target_os = "none")]
mod gic;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod psci;
#[cfg(target_os = "none")]
mod storm;
#[cfg(target_os = "none")]
mod sysreg;

#[cfg(target_os = "none")]
mod guest {
    use crate::arch::{self, hvc};
    use crate::console::{line, tally, verdict};
    use crate::{fdt, gic, memory, psci, storm, sysreg};
    use bulkhead_sys::vm_layout::{DTB_MAX, GICR, RAM_BASE, RAM_BITS};

    /// The vCPUs of this VM: redistributor frames up to the one marked Last.
    fn vcpus() -> u64 {
        for n in 0..arch::MAX_VCPUS as u64 {
            if arch::read64(GICR + n * 0x2_0000 + 8) & (1 << 4) != 0 {
                return n + 1;
            }
        }
        1
    }

    /// The device tree at `at`, if it is one inside guest RAM.
    fn device_tree(at: u64) -> Option<&'static [u8]> {
        let end = RAM_BASE + (1 << RAM_BITS);
        if !(RAM_BASE..end - 64).contains(&at) {
            return None;
        }
        // SAFETY: `at` and the 64 bytes after it lie in guest RAM, which this program may
        // read; the VMM put the device tree there and nothing writes it.
        let head = unsafe { core::slice::from_raw_parts(at as *const u8, 64) };
        let size = fdt::total_size(head)?.min(DTB_MAX as usize);
        let size = size.min((end - at) as usize);
        // SAFETY: as above, for the tree's whole size (clamped to guest RAM).
        Some(unsafe { core::slice::from_raw_parts(at as *const u8, size) })
    }

    #[no_mangle]
    extern "C" fn guest_main(id: u64, x0: u64) -> ! {
        arch::gic_cpu_on();
        if id != 0 {
            storm::worker(x0);
        }
        let el = (arch::sysreg!("currentel") >> 2) & 3;
        let dtb = device_tree(x0);
        let args = dtb.and_then(fdt::bootargs).unwrap_or(b"");
        let soak = fdt::number(args, b"attack.soak").unwrap_or(0);
        // On unless the command line says `attack.vcpu1-aborts=0`.
        if fdt::number(args, b"attack.vcpu1-aborts") != Some(0) {
            storm::WORKER_ABORTS_ON.store(1, core::sync::atomic::Ordering::Release);
        }
        let vcpus = vcpus();
        verdict(
            "boot",
            el == 1 && dtb.is_some() && vcpus >= 2,
            format_args!(
                "vCPU 0 at EL{} with x0 = {:#x} ({}), {} vCPUs, soak {} s",
                el,
                x0,
                if dtb.is_some() {
                    "a device tree"
                } else {
                    "no device tree"
                },
                vcpus,
                soak
            ),
            "EL1, x0 = the device tree (Linux's boot protocol), at least 2 vCPUs",
        );

        memory::run();
        gic::run(vcpus);
        gic::flood(vcpus);
        psci::run();
        sysreg::run();
        storm::run();
        storm::soak(soak);

        let unexpected = arch::asynchronous();
        verdict(
            "no-interrupts-taken",
            unexpected == 0,
            format_args!("{} asynchronous exceptions taken (all masked)", unexpected),
            "none",
        );
        let (passed, failed, skipped) = tally();
        line(format_args!(
            "attack: summary: {} attacks, {} passed, {} failed, {} skipped; powering off",
            passed + failed + skipped,
            passed,
            failed,
            skipped
        ));
        hvc(psci::SYSTEM_OFF, 0, 0, 0);
        loop {
            arch::wfi();
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        line(format_args!("attack: panic; powering off"));
        hvc(psci::SYSTEM_OFF, 0, 0, 0);
        loop {
            arch::wfi();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("attack is a bare-metal guest: run it with `cargo xtask test attack`");
    std::process::exit(2);
}
