//! The console UART, written byte by byte (polled). Drivers for both board UART kinds.

use core::ptr::{read_volatile, write_volatile};
use kcore::board::{Board, Uart};

const PL011_DR: usize = 0x00;
const PL011_FR: usize = 0x18;
const PL011_CR: usize = 0x30;
const PL011_FR_TXFF: u32 = 1 << 5;
const CADENCE_CR: usize = 0x00;
const CADENCE_SR: usize = 0x2c;
const CADENCE_FIFO: usize = 0x30;
const CADENCE_SR_TXFULL: u32 = 1 << 4;

fn reg(base: u64, off: usize) -> *mut u32 {
    (base as usize + off) as *mut u32
}

/// Enables the transmitter (and receiver).
pub fn init() {
    match crate::ThisBoard::UART {
        // SAFETY: the board's UART registers, identity mapped as Device memory (or
        // accessed with the MMU off, which is Device too).
        Uart::Pl011(base) => unsafe { write_volatile(reg(base, PL011_CR), 0x301) },
        // SAFETY: as above; CR = TXEN | RXEN.
        Uart::Cadence(base) => unsafe { write_volatile(reg(base, CADENCE_CR), 0x14) },
    }
}

/// Writes one byte, waiting for FIFO space.
pub fn write_byte(b: u8) {
    match crate::ThisBoard::UART {
        Uart::Pl011(base) => {
            // SAFETY: as in `init`.
            while unsafe { read_volatile(reg(base, PL011_FR)) } & PL011_FR_TXFF != 0 {
                core::hint::spin_loop();
            }
            // SAFETY: as in `init`.
            unsafe { write_volatile(reg(base, PL011_DR), b as u32) };
        }
        Uart::Cadence(base) => {
            // SAFETY: as in `init`.
            while unsafe { read_volatile(reg(base, CADENCE_SR)) } & CADENCE_SR_TXFULL != 0 {
                core::hint::spin_loop();
            }
            // SAFETY: as in `init`.
            unsafe { write_volatile(reg(base, CADENCE_FIFO), b as u32) };
        }
    }
}

/// Writes bytes.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        write_byte(b);
    }
}
