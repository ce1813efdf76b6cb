//! An emulated PL011 UART (ARM DDI 0183): enough for Linux's `amba-pl011` driver and its
//! early console to identify it and write to it. Output is collected into lines, each
//! printed with the VM's name; the transmit FIFO never fills, so the driver never needs
//! the transmit interrupt. Input is not emulated yet (the receive FIFO is always empty).

/// Register offsets.
const DR: u64 = 0x000;
const RSR: u64 = 0x004;
const FR: u64 = 0x018;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
const DMACR: u64 = 0x048;
/// Peripheral and PrimeCell identification registers (0xfe0..0xfff), as a PL011 r1p5.
const ID: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Flag register: transmit FIFO empty, receive FIFO empty.
const FR_IDLE: u64 = (1 << 7) | (1 << 4);

/// The UART's state.
pub struct Pl011 {
    ibrd: u64,
    fbrd: u64,
    lcr_h: u64,
    cr: u64,
    ifls: u64,
    imsc: u64,
    dmacr: u64,
    line: heapless::Vec<u8, 200>,
}

impl Default for Pl011 {
    fn default() -> Self {
        Pl011 {
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: 0x300,
            ifls: 0x12,
            imsc: 0,
            dmacr: 0,
            line: heapless::Vec::new(),
        }
    }
}

impl Pl011 {
    /// A register read.
    pub fn read(&self, off: u64) -> u64 {
        match off {
            DR | RSR | RIS | MIS => 0,
            FR => FR_IDLE,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            DMACR => self.dmacr,
            0xfe0..=0xffc if off.is_multiple_of(4) => ID[((off - 0xfe0) / 4) as usize] as u64,
            _ => 0,
        }
    }

    /// A register write; a completed output line is handed to `out`.
    pub fn write(&mut self, off: u64, v: u64, out: &mut dyn FnMut(&str)) {
        let v = v & 0xffff;
        match off {
            DR => self.put(v as u8, out),
            IBRD => self.ibrd = v,
            FBRD => self.fbrd = v,
            LCR_H => self.lcr_h = v,
            CR => self.cr = v,
            IFLS => self.ifls = v,
            IMSC => self.imsc = v,
            DMACR => self.dmacr = v,
            // Interrupt and error clears: nothing is ever raised.
            ICR | RSR => {}
            _ => {}
        }
    }

    fn put(&mut self, b: u8, out: &mut dyn FnMut(&str)) {
        if b == b'\r' {
            return;
        }
        if b == b'\n' || self.line.is_full() {
            out(core::str::from_utf8(&self.line).unwrap_or("<not UTF-8>"));
            self.line.clear();
            if b == b'\n' {
                return;
            }
        }
        let _ = self.line.push(b);
    }

    /// Flushes a partial line (at power-off).
    pub fn flush(&mut self, out: &mut dyn FnMut(&str)) {
        if !self.line.is_empty() {
            out(core::str::from_utf8(&self.line).unwrap_or("<not UTF-8>"));
            self.line.clear();
        }
    }
}
