//! `ktest`: the on-target kernel test suite (one result line per case, then a summary)
//! and the syscall fuzzer. Runs as an EL0 boot task that owns the Untyped memory.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod bench;
#[cfg(target_os = "none")]
mod capdiff;
#[cfg(target_os = "none")]
mod caps;
#[cfg(target_os = "none")]
mod fuzz;
#[cfg(target_os = "none")]
mod ipcbuf;
#[cfg(target_os = "none")]
mod irqs;
#[cfg(target_os = "none")]
mod more;
#[cfg(target_os = "none")]
mod sched;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod threads;
#[cfg(target_os = "none")]
mod util;
#[cfg(target_os = "none")]
mod vm;

#[cfg(target_os = "none")]
mod entry {
    extern crate bulkhead_rt;
    use bulkhead_sys::task_mode;

    /// Boot info the kernel leaves in x1..x3 is read by `_start`'s caller only through
    /// the debug syscall here (the runtime passes just x0), so the suite finds its
    /// Untyped caps by looking at its CSpace.
    #[no_mangle]
    fn task_main(mode: u64) -> u64 {
        match mode {
            task_mode::KTEST => crate::caps::run_all(),
            task_mode::FUZZ => crate::fuzz::run(0x5eed_b01d, 100_000),
            task_mode::FUZZ_FULL => crate::fuzz::run(0x5eed_b01d, 1_000_000),
            task_mode::CAPDIFF => crate::capdiff::run(500),
            task_mode::BENCH_IPC => crate::bench::run(),
            other => {
                defmt::error!("ktest: unknown mode {=u64}", other);
                2
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ktest is a Bulkhead EL0 task: run it with `cargo xtask test`");
    std::process::exit(2);
}
