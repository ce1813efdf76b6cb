//! The kernel's defmt logger and the task log path.
//!
//! Transport: the console UART (see `kcore::logwire`): a tag byte, then the rzCOBS
//! frame with its zero delimiter. One spin lock (with IRQs masked on the holder's core)
//! keeps records from different cores from interleaving. If a core re-enters the logger
//! while it holds the lock (an exception while logging), it terminates the broken frame
//! with a delimiter and starts afresh rather than deadlocking.
//!
//! Kernel frames carry the timestamp `c<core> <seconds since boot>`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};
use kcore::logwire::TAG_KERNEL;

use crate::arch::{cpu, regs, uart};

/// 0 when free, else the holding core's index + 1.
static OWNER: AtomicUsize = AtomicUsize::new(0);

struct EncoderCell(UnsafeCell<defmt::Encoder>);
// SAFETY: the encoder is used only by the core holding OWNER.
unsafe impl Sync for EncoderCell {}
static ENCODER: EncoderCell = EncoderCell(UnsafeCell::new(defmt::Encoder::new()));

fn lock() {
    let daif = regs::mask_irqs();
    let me = cpu::index() + 1;
    loop {
        match OWNER.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(owner) if owner == me => {
                // Re-entered on this core: end the interrupted record so the host can
                // resynchronise, then carry on as the owner.
                uart::write_byte(0);
                break;
            }
            Err(_) => core::hint::spin_loop(),
        }
    }
    cpu::this().log_daif.store(daif, Ordering::Relaxed);
}

/// True from `acquire` until the first byte of the frame: the tag is written just
/// before that byte. defmt's rzCOBS encoder may open a frame with a lone `0x00` (to
/// resynchronise decoders); such zeros are dropped here because on our wire every record
/// starts with its tag.
static TAG_PENDING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn write_frame_bytes(bytes: &[u8]) {
    let mut bytes = bytes;
    if TAG_PENDING.load(Ordering::Relaxed) {
        while let [0, rest @ ..] = bytes {
            bytes = rest;
        }
        if bytes.is_empty() {
            return;
        }
        TAG_PENDING.store(false, Ordering::Relaxed);
        uart::write_byte(TAG_KERNEL);
    }
    uart::write(bytes);
}

fn unlock() {
    let daif = cpu::this().log_daif.load(Ordering::Relaxed);
    OWNER.store(0, Ordering::Release);
    regs::restore_irqs(daif);
}

#[defmt::global_logger]
struct Logger;

// SAFETY: `acquire` takes the lock that makes this core the only user of ENCODER until
// `release`; defmt calls write/flush/release only between the two.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        lock();
        TAG_PENDING.store(true, Ordering::Relaxed);
        // SAFETY: we hold the lock (see above).
        unsafe { (*ENCODER.0.get()).start_frame(write_frame_bytes) };
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: the caller acquired the logger, so we hold the lock.
        unsafe { (*ENCODER.0.get()).end_frame(write_frame_bytes) };
        unlock();
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: as in `release`.
        unsafe { (*ENCODER.0.get()).write(bytes, write_frame_bytes) };
    }
}

defmt::timestamp!("c{=u8} {=u64:us}", cpu::index() as u8, regs::uptime_us());

/// Writes a task's already encoded, already checked frame under its tag.
pub fn write_task_frame(tag: u8, frame: &[u8]) {
    lock();
    uart::write_byte(tag);
    uart::write(frame);
    unlock();
}
