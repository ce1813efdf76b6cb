//! The stage-2 fault benchmark (`cargo xtask bench stage2`): instructions from a guest's
//! faulting load to its completion, for a fault the kernel resolves in place (a page of a
//! bound RAM region) and for one this VMM resolves by mapping a frame (a round trip
//! through the fault endpoint), measured by the guest with the PMU cycle counter under
//! QEMU's `-icount shift=0`.

/// Runs the benchmark VM.
pub fn run() -> u64 {
    crate::vm::bench(40)
}
