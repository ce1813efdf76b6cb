//! The Bulkhead kernel: a capability microkernel at EL2 that partitions an AArch64
//! machine into isolated VMs.
//!
//! This binary holds what cannot be portable: boot, exception entry, system registers,
//! interrupt controller and timer drivers, the world switch. Everything that can be plain
//! logic lives in `kcore` and is tested on the host. On the host this crate compiles to a
//! stub so that workspace-wide `cargo clippy` and `cargo test` work; build the real kernel
//! with `cargo xtask build`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod cspace;
#[cfg(target_os = "none")]
mod fastpath;
#[cfg(target_os = "none")]
mod ipcbuf;
#[cfg(target_os = "none")]
mod irq;
#[cfg(target_os = "none")]
mod log;
#[cfg(target_os = "none")]
mod mem;
#[cfg(target_os = "none")]
mod sched;
#[cfg(target_os = "none")]
mod sync;
#[cfg(target_os = "none")]
mod task;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod vcpu;
#[cfg(target_os = "none")]
mod vm;

/// The board this kernel is built for.
#[cfg(all(target_os = "none", feature = "board-qemu-virt"))]
pub type ThisBoard = board_qemu_virt::QemuVirt;
/// The board this kernel is built for.
#[cfg(all(
    target_os = "none",
    feature = "board-zcu102",
    not(feature = "board-qemu-virt")
))]
pub type ThisBoard = board_zcu102::Zcu102;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the Bulkhead kernel runs on aarch64 bare metal: build it with `cargo xtask build`");
    std::process::exit(2);
}
