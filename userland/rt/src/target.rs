//! Target-only parts: entry, panic, logger.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    bl bh_rt_start",
    "1:  b 1b",
);

extern "Rust" {
    fn task_main(arg: u64) -> u64;
}

static BOOT_INFO: [core::sync::atomic::AtomicU64; 6] =
    [const { core::sync::atomic::AtomicU64::new(0) }; 6];

/// The boot information the kernel left in x0..x5 of a boot task's first thread
/// (`docs/abi.md`, "Boot information"): argument, first Untyped slot, Untyped count, root
/// CNode radix, IRQControl slot, SchedControl slot.
pub fn boot_info() -> [u64; 6] {
    core::array::from_fn(|i| BOOT_INFO[i].load(Ordering::Relaxed))
}

#[no_mangle]
extern "C" fn bh_rt_start(arg: u64, x1: u64, x2: u64, x3: u64, x4: u64, x5: u64) -> ! {
    for (slot, v) in BOOT_INFO.iter().zip([arg, x1, x2, x3, x4, x5]) {
        slot.store(v, Ordering::Relaxed);
    }
    // SAFETY: every task binary defines `task_main` with this signature (the ABI of
    // this runtime, see the crate documentation).
    let status = unsafe { task_main(arg) };
    bulkhead_sys::exit(status)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("task panicked: {}", defmt::Display2Format(info));
    bulkhead_sys::exit(101)
}

const BUF: usize = 512;

struct Frame {
    buf: [u8; BUF],
    len: usize,
    overflow: bool,
    encoder: defmt::Encoder,
}

struct FrameCell(UnsafeCell<Frame>);
// SAFETY: a task is single-threaded; TAKEN guards against re-entry.
unsafe impl Sync for FrameCell {}

static FRAME: FrameCell = FrameCell(UnsafeCell::new(Frame {
    buf: [0; BUF],
    len: 0,
    overflow: false,
    encoder: defmt::Encoder::new(),
}));
static TAKEN: AtomicBool = AtomicBool::new(false);
/// Frames that did not fit the buffer and were dropped.
pub static DROPPED: AtomicU32 = AtomicU32::new(0);

fn frame() -> &'static mut Frame {
    // SAFETY: only called between acquire and release, while TAKEN makes this the sole
    // user (tasks are single-threaded and the logger is not re-entrant).
    unsafe { &mut *FRAME.0.get() }
}

fn push(bytes: &[u8]) {
    let f = frame();
    // The encoder may open a frame with a lone 0x00 (decoder resync); a frame handed to
    // the kernel must hold no zero but its final delimiter, so drop leading zeros.
    let mut bytes = bytes;
    if f.len == 0 {
        while let [0, rest @ ..] = bytes {
            bytes = rest;
        }
    }
    let end = f.len + bytes.len();
    if end > BUF {
        f.overflow = true;
        return;
    }
    f.buf[f.len..end].copy_from_slice(bytes);
    f.len = end;
}

#[defmt::global_logger]
struct Logger;

// SAFETY: acquire/release bracket all use of FRAME (checked with TAKEN).
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        if TAKEN.swap(true, Ordering::Acquire) {
            // Re-entered (a panic while logging): nothing sane to do but stop.
            bulkhead_sys::exit(102);
        }
        let f = frame();
        f.len = 0;
        f.overflow = false;
        f.encoder.start_frame(push);
    }

    unsafe fn flush() {}

    unsafe fn release() {
        let f = frame();
        f.encoder.end_frame(push);
        if f.overflow {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = bulkhead_sys::debug_log(&f.buf[..f.len]);
        }
        TAKEN.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        frame().encoder.write(bytes, push);
    }
}
