//! `vmm`: Bulkhead's virtual machine monitor, a native EL0 task.
//!
//! It builds a VM out of capabilities (a VSpace with a VMID and a table pool, a guest-RAM
//! frame bound as a memory region so that RAM faults never leave the kernel, one TCB and
//! VCPU per virtual CPU), loads the guest, starts vCPU 0 and then serves the VM's exits,
//! which arrive as fault messages on one endpoint (badge = vCPU number + 1): PSCI calls
//! (HVC), the PL011 console (MMIO data aborts) and its own test hypercalls.
//!
//! Modes (the task argument): `vm-faultstorm` runs the fault-storm test guest on 4 vCPUs
//! and churns its stage-2 mappings on request; `bench-stage2` measures stage-2 faults.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod bench;
#[cfg(target_os = "none")]
mod gic;
#[cfg(target_os = "none")]
mod linux;
#[cfg(target_os = "none")]
mod pl011;
#[cfg(target_os = "none")]
mod vm;

#[cfg(target_os = "none")]
mod entry {
    extern crate bulkhead_rt;
    use bulkhead_sys::task_mode;

    #[no_mangle]
    fn task_main(arg: u64) -> u64 {
        // Bits 63:32 name a VMM's VM (see `crate::linux`).
        match arg & 0xffff_ffff {
            task_mode::VM_FAULTSTORM => crate::vm::faultstorm(),
            task_mode::BENCH_STAGE2 => crate::bench::run(),
            task_mode::BENCH_POPULATE => crate::vm::populate(),
            task_mode::VM_QSBR => crate::vm::qsbr(),
            task_mode::VM_LINUX => crate::linux::run(),
            other => {
                defmt::error!("vmm: unknown mode {=u64}", other);
                2
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the VMM is a Bulkhead EL0 task: run it with `cargo xtask run`");
    std::process::exit(2);
}
