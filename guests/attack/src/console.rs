//! The console (the VMM's emulated PL011 data register) and the verdicts: one line per
//! attack, `attack: <name>: <what was observed> -> ok` (or `-> FAILED: <expected>`, or
//! `attack: <name>: SKIPPED: <reason>`), counted for the summary. Only vCPU 0 prints.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bulkhead_sys::vm_layout::UART;

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: the PL011 data register of the emulated UART: an MMIO address
            // outside RAM, whose accesses trap to the VMM; nothing else is written.
            unsafe { core::ptr::write_volatile(UART as *mut u32, b as u32) };
        }
        Ok(())
    }
}

/// Prints one line.
pub fn line(args: core::fmt::Arguments) {
    let _ = Uart.write_fmt(args);
    let _ = Uart.write_str("\n");
}

static PASSED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);

fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// Reports attack `name`: what was observed, and whether it is what the architecture
/// (or the documented emulation) says; `expected` says what that is when it is not.
pub fn verdict(name: &str, ok: bool, observed: core::fmt::Arguments, expected: &str) {
    if ok {
        bump(&PASSED);
        line(format_args!("attack: {}: {} -> ok", name, observed));
    } else {
        bump(&FAILED);
        line(format_args!(
            "attack: {}: {} -> FAILED: expected {}",
            name, observed, expected
        ));
    }
}

/// Reports an attack that was not made, and why.
pub fn skipped(name: &str, reason: &str) {
    bump(&SKIPPED);
    line(format_args!("attack: {}: SKIPPED: {}", name, reason));
}

/// (passed, failed, skipped) so far.
pub fn tally() -> (u64, u64, u64) {
    (
        PASSED.load(Relaxed),
        FAILED.load(Relaxed),
        SKIPPED.load(Relaxed),
    )
}

/// A short list of numbers for a line, as `a, b, c` in hex.
pub struct Hex<'a>(pub &'a [u64]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{:#x}", v)?;
        }
        Ok(())
    }
}
