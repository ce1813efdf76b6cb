//! Bulkhead's portable kernel core.
//!
//! Everything here is plain logic with no hardware access: it builds for
//! `aarch64-unknown-none` (linked into the kernel) and for the host, where its unit and
//! property tests run. The bare-metal half (boot, vectors, system registers, MMIO) lives
//! in the `kernel` crate's `arch` module and calls into this crate.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod addr;
pub mod board;
pub mod bootimage;
pub mod brlock;
pub mod cap;
pub mod dtb;
pub mod elf;
pub mod esr;
pub mod frames;
pub mod logwire;
pub mod qsbr;
pub mod stage2;
pub mod thread;
