//! The boot payload: the native tasks the kernel starts at boot, packed by the tools.
//!
//! The kernel ELF carries one payload (embedded at build time). Layout, all integers
//! little-endian:
//!
//! ```text
//! 0x00  magic    b"BHBOOT01"
//! 0x08  count    u32   number of entries (at most MAX_TASKS)
//! 0x0c  reserved u32   zero
//! 0x10  entries  count x 40 bytes:
//!         name   [u8; 16]  UTF-8, zero padded
//!         offset u32       of the ELF image from the payload start
//!         size   u32       of the ELF image
//!         arg    u64       passed to the task in x0
//!         flags  u64       memory: bits 7:0 and 15:8 are log2 sizes of up to two
//!                          naturally aligned blocks of RAM the task receives as
//!                          Untyped memory (0 = none); bits 23:16: the core its first
//!                          thread runs on, plus one (0 = core 0); bits 31:24: how
//!                          many times the kernel starts the task again after it ends
//!                          by a fault (0 = never); the rest zero
//!       ELF images, each 8-byte aligned (identical images are stored once)
//! ```
//!
//! When no task asks for memory, the kernel runs the tasks one after another and gives
//! all free RAM to the first; when any does, it starts them all at boot, each with its
//! blocks, and the first gets what is left.
//!
//! The parser checks every offset and size against the payload's length; nothing in it is
//! trusted further than that (the ELF loader validates each image again).

/// Magic bytes at the start of every payload.
pub const MAGIC: [u8; 8] = *b"BHBOOT01";
/// Size of the fixed header.
pub const HEADER_SIZE: usize = 16;
/// Size of one entry.
pub const ENTRY_SIZE: usize = 40;
/// Longest task name.
pub const NAME_LEN: usize = 16;
/// Most tasks a payload may hold (the log wire has one tag per task slot).
pub const MAX_TASKS: usize = 32;

/// Why a payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PayloadError {
    /// Shorter than its header or entry table.
    Truncated,
    /// Wrong magic.
    BadMagic,
    /// More than [`MAX_TASKS`] entries.
    TooManyTasks,
    /// An entry's image lies outside the payload.
    ImageOutOfBounds,
    /// A name is not UTF-8.
    BadName,
}

/// One task of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task<'a> {
    /// Slot index (its log tag is derived from it).
    pub slot: usize,
    /// Name, for logs.
    pub name: &'a str,
    /// The task's ELF image.
    pub elf: &'a [u8],
    /// Value for the task's x0.
    pub arg: u64,
    /// log2 sizes of the RAM blocks it asks for (0 = none).
    pub memory: [u32; 2],
    /// The core its first thread runs on.
    pub core: u32,
    /// How many times it is started again after ending by a fault.
    pub restarts: u32,
}

/// Bits of a task's `x0` that carry, when the kernel starts it again after a fault, the
/// number of that restart (1, 2, ..): an `arg` must leave them zero.
pub const RESTART_SHIFT: u32 = 56;

/// The flags bits that let a task be started again `n` times after faults.
pub const fn restart_flags(n: u32) -> u64 {
    ((n as u64) & 0xff) << 24
}

/// The flags bits that put a task's first thread on `core`.
pub const fn core_flags(core: u32) -> u64 {
    ((core as u64 + 1) & 0xff) << 16
}

/// The flags word of an entry for `memory` (log2 block sizes, 0 = none).
pub const fn memory_flags(memory: [u32; 2]) -> u64 {
    (memory[0] as u64 & 0xff) | ((memory[1] as u64 & 0xff) << 8)
}

/// A checked payload.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    bytes: &'a [u8],
    count: usize,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

impl<'a> Payload<'a> {
    /// Checks the header and every entry.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PayloadError> {
        if bytes.len() < HEADER_SIZE {
            return Err(PayloadError::Truncated);
        }
        if bytes[..8] != MAGIC {
            return Err(PayloadError::BadMagic);
        }
        let count = u32_at(bytes, 8) as usize;
        if count > MAX_TASKS {
            return Err(PayloadError::TooManyTasks);
        }
        if bytes.len() < HEADER_SIZE + count * ENTRY_SIZE {
            return Err(PayloadError::Truncated);
        }
        let p = Payload { bytes, count };
        for i in 0..count {
            p.entry(i)?;
        }
        Ok(p)
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the payload holds no task.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn entry(&self, i: usize) -> Result<Task<'a>, PayloadError> {
        let e = HEADER_SIZE + i * ENTRY_SIZE;
        let raw_name = &self.bytes[e..e + NAME_LEN];
        let name_len = raw_name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let name =
            core::str::from_utf8(&raw_name[..name_len]).map_err(|_| PayloadError::BadName)?;
        let off = u32_at(self.bytes, e + 16) as usize;
        let size = u32_at(self.bytes, e + 20) as usize;
        let end = off
            .checked_add(size)
            .ok_or(PayloadError::ImageOutOfBounds)?;
        if end > self.bytes.len() {
            return Err(PayloadError::ImageOutOfBounds);
        }
        Ok(Task {
            slot: i,
            name,
            elf: &self.bytes[off..end],
            arg: u64_at(self.bytes, e + 24),
            memory: {
                let f = u64_at(self.bytes, e + 32);
                [(f & 0xff) as u32, ((f >> 8) & 0xff) as u32]
            },
            core: ((u64_at(self.bytes, e + 32) >> 16) & 0xff).saturating_sub(1) as u32,
            restarts: ((u64_at(self.bytes, e + 32) >> 24) & 0xff) as u32,
        })
    }

    /// Task `i`, if it exists.
    pub fn task(&self, i: usize) -> Option<Task<'a>> {
        if i < self.count {
            self.entry(i).ok()
        } else {
            None
        }
    }

    /// All tasks in slot order.
    pub fn tasks(&self) -> impl Iterator<Item = Task<'a>> + '_ {
        (0..self.count).filter_map(move |i| self.task(i))
    }
}

/// Builds a payload (used by the tools; the kernel only parses).
///
/// Each task is `(name, elf, arg, flags)` (flags: [`memory_flags`]). Names longer than
/// [`NAME_LEN`] bytes are rejected. An image identical to an earlier task's is stored
/// once.
pub fn build(tasks: &[(&str, &[u8], u64, u64)], out: &mut [u8]) -> Result<usize, PayloadError> {
    if tasks.len() > MAX_TASKS {
        return Err(PayloadError::TooManyTasks);
    }
    let mut pos = HEADER_SIZE + tasks.len() * ENTRY_SIZE;
    if out.len() < pos {
        return Err(PayloadError::Truncated);
    }
    out[..pos].fill(0);
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&(tasks.len() as u32).to_le_bytes());
    for (i, (name, elf, arg, flags)) in tasks.iter().enumerate() {
        if name.len() > NAME_LEN {
            return Err(PayloadError::BadName);
        }
        let e = HEADER_SIZE + i * ENTRY_SIZE;
        let same = (0..i).find(|&j| tasks[j].1 == *elf);
        let at = match same {
            Some(j) => u32_at(out, HEADER_SIZE + j * ENTRY_SIZE + 16) as usize,
            None => {
                pos = (pos + 7) & !7;
                let end = pos + elf.len();
                if end > out.len() {
                    return Err(PayloadError::Truncated);
                }
                out[pos..end].copy_from_slice(elf);
                let at = pos;
                pos = end;
                at
            }
        };
        out[e..e + name.len()].copy_from_slice(name.as_bytes());
        out[e + 16..e + 20].copy_from_slice(&(at as u32).to_le_bytes());
        out[e + 20..e + 24].copy_from_slice(&(elf.len() as u32).to_le_bytes());
        out[e + 24..e + 32].copy_from_slice(&arg.to_le_bytes());
        out[e + 32..e + 40].copy_from_slice(&flags.to_le_bytes());
    }
    Ok(pos)
}

/// Bytes [`build`] needs for these tasks (at most: identical images count once there).
pub fn built_size(tasks: &[(&str, &[u8], u64, u64)]) -> usize {
    let mut pos = HEADER_SIZE + tasks.len() * ENTRY_SIZE;
    for (_, elf, _, _) in tasks {
        pos = ((pos + 7) & !7) + elf.len();
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(tasks: &[(&str, &[u8], u64)]) -> Vec<u8> {
        let t: Vec<_> = tasks.iter().map(|&(n, e, a)| (n, e, a, 0)).collect();
        let mut v = vec![0; built_size(&t)];
        let n = build(&t, &mut v).unwrap();
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn identical_images_are_stored_once_and_memory_round_trips() {
        let img: &[u8] = b"\x7fELF-the-same-image";
        let t = [
            ("a", img, 14 | 1 << 32, memory_flags([28, 26])),
            (
                "b",
                img,
                14 | 2 << 32,
                memory_flags([28, 0]) | core_flags(2) | restart_flags(3),
            ),
        ];
        let mut v = vec![0; built_size(&t)];
        let n = build(&t, &mut v).unwrap();
        assert!(n < built_size(&t), "the second copy is not stored");
        let p = Payload::parse(&v[..n]).unwrap();
        let got: Vec<_> = p.tasks().collect();
        assert_eq!(got[0].elf, img);
        assert_eq!(got[1].elf, img);
        assert_eq!(got[0].memory, [28, 26]);
        assert_eq!(got[1].memory, [28, 0]);
        assert_eq!((got[0].core, got[1].core), (0, 2));
        assert_eq!((got[0].restarts, got[1].restarts), (0, 3));
        assert_eq!(got[1].arg, 14 | 2 << 32);
    }

    #[test]
    fn round_trip() {
        let v = make(&[("init", b"\x7fELFabc", 7), ("second", b"xyz", 0)]);
        let p = Payload::parse(&v).unwrap();
        assert_eq!(p.len(), 2);
        let t: Vec<_> = p.tasks().collect();
        assert_eq!(t[0].name, "init");
        assert_eq!(t[0].elf, b"\x7fELFabc");
        assert_eq!(t[0].arg, 7);
        assert_eq!(t[1].slot, 1);
        assert_eq!(t[1].elf, b"xyz");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Payload::parse(b"short").unwrap_err(),
            PayloadError::Truncated
        );
        let mut v = make(&[("a", b"1234", 0)]);
        v[0] = b'X';
        assert_eq!(Payload::parse(&v).unwrap_err(), PayloadError::BadMagic);
        let mut v = make(&[("a", b"1234", 0)]);
        v[HEADER_SIZE + 20] = 0xff; // size far past the end
        assert_eq!(
            Payload::parse(&v).unwrap_err(),
            PayloadError::ImageOutOfBounds
        );
        let mut v = make(&[("a", b"1234", 0)]);
        v[8] = 200;
        assert_eq!(Payload::parse(&v).unwrap_err(), PayloadError::TooManyTasks);
        let long = "x".repeat(17);
        let mut out = vec![0; 256];
        assert_eq!(
            build(&[(&long, b"", 0, 0)], &mut out).unwrap_err(),
            PayloadError::BadName
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Payload::parse(&bytes).map(|p| p.tasks().count());
        }
    }
}
