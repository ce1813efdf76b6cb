//! Runtime for Bulkhead's native EL0 tasks.
//!
//! The kernel starts a task at `_start` with `x0` = its argument and `SP` = the top of
//! its stack; `_start` calls the task's `task_main(arg) -> u64` and exits with its result.
//! Logging is defmt: frames are encoded here and handed whole to the kernel's log
//! syscall, which tags them with the task's identity (see `kcore::logwire`).
#![no_std]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod target;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use target::boot_info;
