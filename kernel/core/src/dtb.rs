//! What the kernel reads from the flattened device tree (DTB): RAM, CPUs, PSCI.
//!
//! A small parser of its own (Devicetree Specification v0.4, chapter 5 "Flattened
//! Devicetree (DTB) Format") rather than the `fdt` crate: the property tests below found
//! that `fdt` 0.1.5 panics on corrupted blobs, and a kernel must not panic on what
//! firmware hands it. Every offset and length is checked; a malformed blob is an error.
//! Results are fixed-size data (no heap).

use crate::addr::PhysRange;

/// Most memory regions kept.
pub const MAX_MEM_REGIONS: usize = 8;
/// Most CPUs kept.
pub const MAX_DTB_CPUS: usize = 64;
/// DTB header magic (big-endian in the blob).
pub const MAGIC: u32 = 0xd00d_feed;
/// Deepest node nesting accepted.
const MAX_DEPTH: usize = 16;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Why a DTB was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DtbError {
    /// No DTB magic at the address.
    NoMagic,
    /// The header's size is implausible.
    BadSize,
    /// The structure is malformed (bad token, offset or nesting).
    Malformed,
}

/// Reads the total size from a DTB header (its first 8 bytes).
pub fn total_size(header: &[u8; 8]) -> Result<usize, DtbError> {
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if magic != MAGIC {
        return Err(DtbError::NoMagic);
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(40..=(2 << 20)).contains(&size) {
        return Err(DtbError::BadSize);
    }
    Ok(size)
}

/// The facts the kernel takes from a DTB.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// RAM regions (`/memory` nodes), in tree order.
    pub memory: heapless::Vec<PhysRange, MAX_MEM_REGIONS>,
    /// MPIDR affinity values of the CPUs (`/cpus/cpu@*` `reg`), in tree order.
    pub cpus: heapless::Vec<u64, MAX_DTB_CPUS>,
    /// True if `/psci` says `method = "smc"`; false if it says "hvc"; None if absent.
    pub psci_smc: Option<bool>,
}

fn be32(b: &[u8], off: usize) -> Result<u32, DtbError> {
    let s = b
        .get(off..off.checked_add(4).ok_or(DtbError::Malformed)?)
        .ok_or(DtbError::Malformed)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a big-endian number of `cells` 32-bit cells (1 or 2).
fn cells(v: &[u8], cells: u32) -> Option<(u64, &[u8])> {
    let n = cells as usize * 4;
    if cells == 0 || cells > 2 || v.len() < n {
        return None;
    }
    let mut x = 0u64;
    for c in v[..n].chunks(4) {
        x = (x << 32) | u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    Some((x, &v[n..]))
}

fn nul_str(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

/// What we remember of an open node.
#[derive(Clone, Copy, Default)]
struct Open<'a> {
    /// Kind of node, decided from its name and parent.
    kind: Kind,
    device_type: &'a [u8],
    reg: &'a [u8],
    /// `#address-cells` / `#size-cells` this node declares for its children.
    addr_cells: u32,
    size_cells: u32,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Other,
    Root,
    Cpus,
    Psci,
}

/// Parses a DTB blob.
pub fn parse(blob: &[u8]) -> Result<Machine, DtbError> {
    let header: [u8; 8] = blob
        .get(..8)
        .ok_or(DtbError::BadSize)?
        .try_into()
        .map_err(|_| DtbError::BadSize)?;
    let total = total_size(&header)?;
    let blob = blob.get(..total).ok_or(DtbError::BadSize)?;
    let off_struct = be32(blob, 8)? as usize;
    let off_strings = be32(blob, 12)? as usize;
    let size_strings = be32(blob, 32)? as usize;
    let size_struct = be32(blob, 36)? as usize;
    let structs = blob
        .get(
            off_struct
                ..off_struct
                    .checked_add(size_struct)
                    .ok_or(DtbError::Malformed)?,
        )
        .ok_or(DtbError::Malformed)?;
    let strings = blob
        .get(
            off_strings
                ..off_strings
                    .checked_add(size_strings)
                    .ok_or(DtbError::Malformed)?,
        )
        .ok_or(DtbError::Malformed)?;

    let mut m = Machine::default();
    let mut stack: heapless::Vec<Open<'_>, MAX_DEPTH> = heapless::Vec::new();
    let mut pos = 0usize;
    loop {
        let token = be32(structs, pos)?;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                let rest = structs.get(pos..).ok_or(DtbError::Malformed)?;
                let name_len = rest
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or(DtbError::Malformed)?;
                let name = &rest[..name_len];
                pos = (pos + name_len + 1 + 3) & !3;
                let base = name.split(|&c| c == b'@').next().unwrap_or(name);
                let kind = match (stack.len(), stack.last().map(|o| o.kind)) {
                    (0, _) => Kind::Root,
                    (1, _) if base == b"cpus" => Kind::Cpus,
                    (1, _) if base == b"psci" => Kind::Psci,
                    _ => Kind::Other,
                };
                // Defaults from the spec: 2 address cells, 1 size cell.
                let open = Open {
                    kind,
                    addr_cells: 2,
                    size_cells: 1,
                    ..Open::default()
                };
                stack.push(open).map_err(|_| DtbError::Malformed)?;
            }
            FDT_END_NODE => {
                let node = stack.pop().ok_or(DtbError::Malformed)?;
                let Some(parent) = stack.last() else {
                    // The root closed: only FDT_END (or NOPs) may follow.
                    continue;
                };
                let (ac, sc) = (parent.addr_cells, parent.size_cells);
                if node.device_type == b"memory" && stack.len() == 1 {
                    let mut reg = node.reg;
                    while let Some((base, rest)) = cells(reg, ac) {
                        let Some((size, rest)) = cells(rest, sc) else {
                            break;
                        };
                        reg = rest;
                        if let (true, Some(r)) = (size > 0, PhysRange::new(base, size)) {
                            let _ = m.memory.push(r);
                        }
                    }
                } else if node.device_type == b"cpu" && parent.kind == Kind::Cpus {
                    if let Some((mpidr, _)) = cells(node.reg, ac) {
                        let _ = m.cpus.push(mpidr);
                    }
                }
            }
            FDT_PROP => {
                let len = be32(structs, pos)? as usize;
                let nameoff = be32(structs, pos + 4)? as usize;
                let value = structs
                    .get(pos + 8..(pos + 8).checked_add(len).ok_or(DtbError::Malformed)?)
                    .ok_or(DtbError::Malformed)?;
                pos = (pos + 8 + len + 3) & !3;
                let name = nul_str(strings.get(nameoff..).ok_or(DtbError::Malformed)?);
                let node = stack.last_mut().ok_or(DtbError::Malformed)?;
                match name {
                    b"device_type" => node.device_type = nul_str(value),
                    b"reg" => node.reg = value,
                    b"#address-cells" => node.addr_cells = be32(value, 0)?,
                    b"#size-cells" => node.size_cells = be32(value, 0)?,
                    b"method" if node.kind == Kind::Psci => {
                        m.psci_smc = Some(nul_str(value) == b"smc");
                    }
                    _ => {}
                }
            }
            FDT_NOP => {}
            FDT_END => {
                return if stack.is_empty() {
                    Ok(m)
                } else {
                    Err(DtbError::Malformed)
                };
            }
            _ => return Err(DtbError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMP4: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3-smp4-1g.dtb");
    const SMP8: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3-smp8-2g.dtb");

    #[test]
    fn reads_qemu_virt() {
        let header: [u8; 8] = SMP4[..8].try_into().unwrap();
        assert_eq!(total_size(&header), Ok(SMP4.len()));
        let m = parse(SMP4).unwrap();
        assert_eq!(m.memory.len(), 1);
        assert_eq!(m.memory[0], PhysRange::new(0x4000_0000, 1 << 30).unwrap());
        assert_eq!(&m.cpus[..], &[0, 1, 2, 3]);
        assert_eq!(m.psci_smc, Some(true));
    }

    #[test]
    fn reads_eight_cpus_and_two_gib() {
        let m = parse(SMP8).unwrap();
        assert_eq!(m.memory[0].size(), 2 << 30);
        assert_eq!(m.cpus.len(), 8);
        assert_eq!(m.cpus[7], 7);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(total_size(&[0; 8]), Err(DtbError::NoMagic));
        assert_eq!(
            total_size(&[0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 4]),
            Err(DtbError::BadSize)
        );
        assert!(parse(&[0u8; 64]).is_err());
        let mut truncated = SMP4[..100].to_vec();
        truncated.resize(100, 0);
        assert!(parse(&truncated).is_err());
    }

    proptest::proptest! {
        #[test]
        fn corrupted_trees_never_panic(idx in 0usize..8048, val: u8) {
            let mut blob = SMP4.to_vec();
            blob[idx] = val;
            let _ = parse(&blob);
        }
    }
}
