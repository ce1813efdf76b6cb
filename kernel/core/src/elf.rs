//! A checked reader of the ELF64 executables the kernel loads (boot tasks).
//!
//! Only what loading needs: the header and the `PT_LOAD` program headers. Every offset
//! and size is checked against the image before use; a segment whose file part lies
//! outside the image, or whose memory part is smaller than its file part, is refused.

/// `EM_AARCH64`.
pub const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;

/// Segment permissions (`p_flags`).
pub const PF_X: u32 = 1;
/// Writable.
pub const PF_W: u32 = 2;
/// Readable.
pub const PF_R: u32 = 4;

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ElfError {
    /// Not an ELF64 little-endian AArch64 executable.
    NotAarch64Exec,
    /// A header or segment lies outside the image.
    OutOfBounds,
    /// A segment's memory size is smaller than its file size, or its range wraps.
    BadSegment,
}

/// One loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Bytes in memory (the tail past `data` is zero).
    pub mem_size: u64,
    /// Bytes from the file.
    pub data: &'a [u8],
    /// `PF_*` bits.
    pub flags: u32,
}

/// A checked ELF image.
#[derive(Clone, Copy, Debug)]
pub struct Elf<'a> {
    image: &'a [u8],
    entry: u64,
    phoff: usize,
    phentsize: usize,
    phnum: usize,
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], ElfError> {
    let end = off.checked_add(N).ok_or(ElfError::OutOfBounds)?;
    let s = b.get(off..end).ok_or(ElfError::OutOfBounds)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}
fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    Ok(u16::from_le_bytes(rd(b, off)?))
}
fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    Ok(u32::from_le_bytes(rd(b, off)?))
}
fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    Ok(u64::from_le_bytes(rd(b, off)?))
}

impl<'a> Elf<'a> {
    /// Checks the header and every program header.
    pub fn parse(image: &'a [u8]) -> Result<Self, ElfError> {
        let ident: [u8; 16] = rd(image, 0).map_err(|_| ElfError::NotAarch64Exec)?;
        // Magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT.
        if ident[..4] != *b"\x7fELF" || ident[4] != 2 || ident[5] != 1 || ident[6] != 1 {
            return Err(ElfError::NotAarch64Exec);
        }
        if u16_at(image, 16)? != ET_EXEC || u16_at(image, 18)? != EM_AARCH64 {
            return Err(ElfError::NotAarch64Exec);
        }
        let elf = Elf {
            image,
            entry: u64_at(image, 24)?,
            phoff: usize::try_from(u64_at(image, 32)?).map_err(|_| ElfError::OutOfBounds)?,
            phentsize: u16_at(image, 54)? as usize,
            phnum: u16_at(image, 56)? as usize,
        };
        if elf.phentsize < 56 {
            return Err(ElfError::OutOfBounds);
        }
        for i in 0..elf.phnum {
            elf.segment(i)?;
        }
        Ok(elf)
    }

    /// The entry point.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    fn segment(&self, i: usize) -> Result<Option<Segment<'a>>, ElfError> {
        let ph = i
            .checked_mul(self.phentsize)
            .and_then(|o| o.checked_add(self.phoff))
            .ok_or(ElfError::OutOfBounds)?;
        if u32_at(self.image, ph)? != PT_LOAD {
            // Still check that the header itself is inside the image.
            rd::<56>(self.image, ph)?;
            return Ok(None);
        }
        let flags = u32_at(self.image, ph + 4)?;
        let offset = u64_at(self.image, ph + 8)?;
        let vaddr = u64_at(self.image, ph + 16)?;
        let filesz = u64_at(self.image, ph + 32)?;
        let memsz = u64_at(self.image, ph + 40)?;
        if memsz < filesz || vaddr.checked_add(memsz).is_none() {
            return Err(ElfError::BadSegment);
        }
        let start = usize::try_from(offset).map_err(|_| ElfError::OutOfBounds)?;
        let len = usize::try_from(filesz).map_err(|_| ElfError::OutOfBounds)?;
        let end = start.checked_add(len).ok_or(ElfError::OutOfBounds)?;
        let data = self.image.get(start..end).ok_or(ElfError::OutOfBounds)?;
        Ok(Some(Segment {
            vaddr,
            mem_size: memsz,
            data,
            flags,
        }))
    }

    /// The loadable segments, in file order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        (0..self.phnum).filter_map(move |i| self.segment(i).ok().flatten())
    }

    /// 4 KiB pages the loadable segments cover (each rounded out to whole pages).
    pub fn memory_pages(&self) -> u64 {
        self.segments()
            .map(|s| {
                let first = s.vaddr / 4096;
                let end = s.vaddr.saturating_add(s.mem_size).div_ceil(4096);
                end.saturating_sub(first)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_pages_rounds_each_segment_out() {
        let img = tiny_elf(
            0x1000,
            &[
                (0x1800, &[1, 2], 0x1000, PF_R),
                (0x10_0000, &[], 0x2000, PF_W),
            ],
        );
        assert_eq!(Elf::parse(&img).unwrap().memory_pages(), 2 + 2);
    }

    /// A minimal AArch64 executable with the given PT_LOAD segments `(vaddr, data, memsz, flags)`.
    pub(crate) fn tiny_elf(entry: u64, segs: &[(u64, &[u8], u64, u32)]) -> Vec<u8> {
        let phoff = 64usize;
        let data_off = phoff + 56 * segs.len();
        let mut v = vec![0u8; data_off];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[6] = 1;
        v[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        v[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        v[24..32].copy_from_slice(&entry.to_le_bytes());
        v[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        v[54..56].copy_from_slice(&56u16.to_le_bytes());
        v[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, (vaddr, data, memsz, flags)) in segs.iter().enumerate() {
            let off = v.len();
            v.extend_from_slice(data);
            let ph = phoff + 56 * i;
            v[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            v[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
            v[ph + 8..ph + 16].copy_from_slice(&(off as u64).to_le_bytes());
            v[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
            v[ph + 32..ph + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            v[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        v
    }

    #[test]
    fn reads_segments() {
        let img = tiny_elf(
            0x40_0000,
            &[
                (0x40_0000, b"code", 4, PF_R | PF_X),
                (0x41_0000, b"d", 0x100, PF_R | PF_W),
            ],
        );
        let e = Elf::parse(&img).unwrap();
        assert_eq!(e.entry(), 0x40_0000);
        let s: Vec<_> = e.segments().collect();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].data, b"code");
        assert_eq!(s[1].mem_size, 0x100);
        assert_eq!(s[1].flags, PF_R | PF_W);
    }

    #[test]
    fn rejects_bad_images() {
        assert_eq!(Elf::parse(b"nope").unwrap_err(), ElfError::NotAarch64Exec);
        let mut img = tiny_elf(0, &[(0, b"abc", 3, PF_R)]);
        img[18] = 62; // x86-64
        assert_eq!(Elf::parse(&img).unwrap_err(), ElfError::NotAarch64Exec);
        let img = tiny_elf(0, &[(0, b"abc", 2, PF_R)]);
        assert_eq!(Elf::parse(&img).unwrap_err(), ElfError::BadSegment);
        let mut img = tiny_elf(0, &[(0, b"abc", 3, PF_R)]);
        img[64 + 8] = 0xf0; // file offset past the end
        assert_eq!(Elf::parse(&img).unwrap_err(), ElfError::OutOfBounds);
        let mut img = tiny_elf(0, &[(0, b"abc", 3, PF_R)]);
        img[56] = 0xff; // phnum far too large
        assert_eq!(Elf::parse(&img).unwrap_err(), ElfError::OutOfBounds);
    }

    proptest::proptest! {
        #[test]
        fn corrupted_images_never_panic(idx in 0usize..200, val: u8) {
            let mut img = tiny_elf(0x1000, &[(0x1000, &[1u8; 64], 128, PF_R)]);
            if idx < img.len() { img[idx] = val; }
            if let Ok(e) = Elf::parse(&img) {
                for s in e.segments() { proptest::prop_assert!(s.data.len() as u64 <= s.mem_size); }
            }
        }
    }
}
