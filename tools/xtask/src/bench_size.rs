//! The measuring side of `cargo xtask bench size`: the kernel's sections and the boot
//! image's size, per board (qemu-virt is the only one), for two systems:
//!
//! - [`DEFAULT`], the shipped system (two Linux VMs: its payload carries the VMM, which
//!   embeds the guest's kernel and initramfs);
//! - [`BRINGUP`], the bring-up system (one small boot task).
//!
//! Both are built as `cargo xtask build` builds them. The kernel ELF's section headers
//! give `.text`, `.rodata`, `.data`, `.bss` and `.stacks`; the kernel embeds the boot
//! payload in `.rodata`, so the kernel's own read-only data is `.rodata` less the payload.
//! The boot image is the kernel ELF's loaded part: the bytes of its `PT_LOAD` segments,
//! what QEMU copies into memory. `bench.rs` turns the sizes into figures.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::image;
use crate::say;
use crate::setup::{self, shown};
use crate::system;

/// The shipped system.
pub const DEFAULT: &str = "systems/default.toml";
/// The bring-up system.
pub const BRINGUP: &str = "tests/systems/boot.toml";
/// How far apart the two systems' kernel text may be, as a fraction of it.
const TEXT_SLACK: f64 = 0.05;

/// The sizes of one built system, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// The board it was built for.
    pub board: String,
    /// `.text`.
    pub text: u64,
    /// `.rodata`, payload included.
    pub rodata: u64,
    /// `.data`.
    pub data: u64,
    /// `.bss`.
    pub bss: u64,
    /// `.stacks`: the per-core kernel stacks with their guard pages (not in the file).
    pub stacks: u64,
    /// The boot payload (the packed boot tasks).
    pub payload: u64,
    /// The boot image: the file bytes of the kernel's `PT_LOAD` segments.
    pub image: u64,
}

impl Sizes {
    /// `.rodata` less the payload it embeds.
    pub fn own_rodata(&self) -> u64 {
        self.rodata.saturating_sub(self.payload)
    }
}

/// Builds both systems and reads their sizes: (default, bring-up).
pub fn measure() -> Result<(Sizes, Sizes)> {
    setup::ensure_target()?;
    let root = setup::repo_root();
    let mut out = Vec::new();
    for path in [DEFAULT, BRINGUP] {
        let system = system::load(&root.join(path))?;
        let built = image::build(&system, image::DEFAULT_LOG)?;
        let s = sizes_of(
            &built.manifest.kernel,
            &built.manifest.payload,
            &built.manifest.board,
        )
        .with_context(|| format!("{path}: {}", shown(&built.manifest.kernel)))?;
        say!(
            "size: {path}: text {}, rodata {} (payload {}), data {}, bss {}, image {} bytes",
            s.text,
            s.rodata,
            s.payload,
            s.data,
            s.bss,
            s.image
        );
        out.push(s);
    }
    let [default, bringup]: [Sizes; 2] = out.try_into().expect("two systems");
    check(&default, &bringup)?;
    Ok((default, bringup))
}

/// Reads the sizes of one built kernel and its payload.
fn sizes_of(kernel: &Path, payload: &Path, board: &str) -> Result<Sizes> {
    let elf = std::fs::read(kernel).with_context(|| format!("cannot read {}", shown(kernel)))?;
    let payload = std::fs::metadata(payload)
        .with_context(|| format!("cannot read {}", shown(payload)))?
        .len();
    let sections = sections(&elf)?;
    let size = |name: &str| {
        sections
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.size)
            .with_context(|| format!("the kernel has no {name} section"))
    };
    Ok(Sizes {
        board: board.to_string(),
        text: size(".text")?,
        rodata: size(".rodata")?,
        data: size(".data")?,
        bss: size(".bss")?,
        stacks: size(".stacks")?,
        payload,
        image: loaded_bytes(&elf)?,
    })
}

/// Each system's sizes must be plausible, and the two kernels the same but for the
/// payload: the same data, bss and stacks, and text within [`TEXT_SLACK`] of each other
/// (the compiler folds some of the boot code's reading of the embedded payload, so the
/// text moves a little with it).
fn check(default: &Sizes, bringup: &Sizes) -> Result<()> {
    for (name, s) in [(DEFAULT, default), (BRINGUP, bringup)] {
        let all = [
            ("text", s.text),
            ("rodata", s.rodata),
            ("data", s.data),
            ("bss", s.bss),
            ("stacks", s.stacks),
            ("payload", s.payload),
            ("image", s.image),
        ];
        if let Some((what, _)) = all.iter().find(|(_, v)| *v == 0) {
            bail!("{name}: the kernel's {what} size is zero");
        }
        if s.rodata < s.payload {
            bail!(
                "{name}: .rodata ({} bytes) is smaller than the payload it should embed ({} bytes)",
                s.rodata,
                s.payload
            );
        }
        if s.image < s.text + s.rodata + s.data {
            bail!(
                "{name}: the loaded image ({} bytes) is smaller than its sections",
                s.image
            );
        }
    }
    let text_apart = default.text.abs_diff(bringup.text) as f64;
    if (default.data, default.bss, default.stacks) != (bringup.data, bringup.bss, bringup.stacks)
        || text_apart > TEXT_SLACK * default.text as f64
    {
        bail!(
            "the kernels of {DEFAULT} and {BRINGUP} differ beyond the payload: {default:?} vs {bringup:?}"
        );
    }
    Ok(())
}

/// One section header: its name and size.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Section {
    name: String,
    size: u64,
}

fn bytes<const N: usize>(b: &[u8], off: u64) -> Result<[u8; N]> {
    let start = usize::try_from(off).context("ELF offset out of range")?;
    b.get(start..)
        .and_then(|s| s.get(..N))
        .and_then(|s| s.try_into().ok())
        .context("ELF header or table outside the file")
}
fn u16_at(b: &[u8], off: u64) -> Result<u16> {
    Ok(u16::from_le_bytes(bytes(b, off)?))
}
fn u32_at(b: &[u8], off: u64) -> Result<u32> {
    Ok(u32::from_le_bytes(bytes(b, off)?))
}
fn u64_at(b: &[u8], off: u64) -> Result<u64> {
    Ok(u64::from_le_bytes(bytes(b, off)?))
}

/// Checks the ELF64 little-endian identification.
fn elf64(elf: &[u8]) -> Result<()> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        bail!("not a little-endian ELF64 file");
    }
    Ok(())
}

/// The section headers (name and size), from `e_shoff`, `e_shentsize`, `e_shnum` and the
/// section-name string table `e_shstrndx`.
fn sections(elf: &[u8]) -> Result<Vec<Section>> {
    elf64(elf)?;
    let shoff = u64_at(elf, 0x28)?;
    let shentsize = u64::from(u16_at(elf, 0x3a)?);
    let shnum = u64::from(u16_at(elf, 0x3c)?);
    let shstrndx = u64::from(u16_at(elf, 0x3e)?);
    if shentsize < 0x40 || shstrndx >= shnum {
        bail!("malformed section header table");
    }
    let header = |i: u64| shoff + i * shentsize;
    let strtab = u64_at(elf, header(shstrndx) + 0x18)?;
    let strtab_size = u64_at(elf, header(shstrndx) + 0x20)?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let name_off = u64::from(u32_at(elf, header(i))?);
        if name_off >= strtab_size {
            bail!("section {i}: name outside the string table");
        }
        let start = usize::try_from(strtab + name_off).context("ELF offset out of range")?;
        let rest = elf.get(start..).context("section name outside the file")?;
        let len = rest
            .iter()
            .position(|&c| c == 0)
            .context("unterminated section name")?;
        out.push(Section {
            name: String::from_utf8_lossy(&rest[..len]).into_owned(),
            size: u64_at(elf, header(i) + 0x20)?,
        });
    }
    Ok(out)
}

/// The file bytes of the `PT_LOAD` program headers: what a loader copies.
fn loaded_bytes(elf: &[u8]) -> Result<u64> {
    elf64(elf)?;
    let phoff = u64_at(elf, 0x20)?;
    let phentsize = u64::from(u16_at(elf, 0x36)?);
    let phnum = u64::from(u16_at(elf, 0x38)?);
    if phentsize < 0x38 {
        bail!("malformed program header table");
    }
    let mut total = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph)? == 1 {
            total += u64_at(elf, ph + 0x20)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: two PT_LOAD headers (and one other) and three sections besides
    /// the null one, `.text`, `.bss` and `.shstrtab`.
    fn tiny_elf() -> Vec<u8> {
        let mut e = vec![0u8; 0x400];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let put16 =
            |e: &mut Vec<u8>, off: usize, v: u16| e[off..off + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |e: &mut Vec<u8>, off: usize, v: u32| e[off..off + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |e: &mut Vec<u8>, off: usize, v: u64| e[off..off + 8].copy_from_slice(&v.to_le_bytes());
        // Program headers at 0x40.
        put64(&mut e, 0x20, 0x40);
        put16(&mut e, 0x36, 0x38);
        put16(&mut e, 0x38, 3);
        for (i, (ty, filesz)) in [(1u32, 0x100u64), (0x6474_e551, 0x999), (1, 0x20)]
            .into_iter()
            .enumerate()
        {
            let ph = 0x40 + i * 0x38;
            put32(&mut e, ph, ty);
            put64(&mut e, ph + 0x20, filesz);
            put64(&mut e, ph + 0x28, filesz + 0x1000);
        }
        // Section names at 0x200.
        let names = b"\0.text\0.bss\0.shstrtab\0";
        e[0x200..0x200 + names.len()].copy_from_slice(names);
        // Section headers at 0x300.
        put64(&mut e, 0x28, 0x300);
        put16(&mut e, 0x3a, 0x40);
        put16(&mut e, 0x3c, 4);
        put16(&mut e, 0x3e, 3);
        for (i, (name, off, size)) in [
            (0u32, 0u64, 0u64),
            (1, 0x100, 0x1234),
            (7, 0, 0x5678),
            (12, 0x200, names.len() as u64),
        ]
        .into_iter()
        .enumerate()
        {
            let sh = 0x300 + i * 0x40;
            put32(&mut e, sh, name);
            put64(&mut e, sh + 0x18, off);
            put64(&mut e, sh + 0x20, size);
        }
        e
    }

    #[test]
    fn reads_section_and_program_headers() {
        let e = tiny_elf();
        let s = sections(&e).unwrap();
        let names: Vec<(&str, u64)> = s.iter().map(|s| (s.name.as_str(), s.size)).collect();
        assert_eq!(
            names,
            [
                ("", 0),
                (".text", 0x1234),
                (".bss", 0x5678),
                (".shstrtab", 22)
            ]
        );
        assert_eq!(loaded_bytes(&e).unwrap(), 0x120);
    }

    #[test]
    fn refuses_what_is_not_elf64() {
        assert!(sections(b"\x7fELF\x01\x01").is_err());
        assert!(loaded_bytes(b"MZ").is_err());
        let mut e = tiny_elf();
        // A table past the end of the file.
        e[0x28..0x30].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert!(sections(&e).is_err());
    }

    fn sizes(payload: u64) -> Sizes {
        Sizes {
            board: "qemu-virt".into(),
            text: 90_000,
            rodata: 20_000 + payload,
            data: 1_000,
            bss: 280_000,
            stacks: 294_912,
            payload,
            image: 111_000 + payload + 4096,
        }
    }

    #[test]
    fn sanity_checks() {
        let (a, b) = (sizes(30_000_000), sizes(200_000));
        assert_eq!(a.own_rodata(), 20_000);
        check(&a, &b).unwrap();
        // The text may move a little with the payload, not much.
        let mut near = b.clone();
        near.text += 304;
        check(&a, &near).unwrap();
        let mut bad = b.clone();
        bad.text += 10_000;
        assert!(check(&a, &bad).is_err());
        let mut bad = b.clone();
        bad.bss += 16;
        assert!(check(&a, &bad).is_err());
        let mut bad = b.clone();
        bad.rodata = bad.payload - 1;
        assert!(check(&a, &bad).is_err());
        let mut bad = b.clone();
        bad.data = 0;
        assert!(check(&a, &bad).is_err());
    }
}
