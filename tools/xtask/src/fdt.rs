//! A writer of flattened device trees (DTB, version 17; Devicetree Specification v0.4,
//! chapter 5).
//!
//! The blob is the 40-byte header, an empty memory reservation block (one all-zero
//! entry), the structure block (FDT_BEGIN_NODE / FDT_PROP / FDT_END_NODE tokens, FDT_END
//! last) and the strings block (property names, each stored once). Everything is
//! big-endian; tokens, names and values are padded to 4 bytes.

/// Header magic.
pub const MAGIC: u32 = 0xd00d_feed;
/// The version written.
pub const VERSION: u32 = 17;
/// The oldest version it is compatible with.
pub const LAST_COMP_VERSION: u32 = 16;
/// Length of the header.
pub const HEADER_LEN: usize = 40;

/// Structure block tokens.
pub const FDT_BEGIN_NODE: u32 = 1;
/// Ends a node.
pub const FDT_END_NODE: u32 = 2;
/// A property.
pub const FDT_PROP: u32 = 3;
/// Ends the structure block.
pub const FDT_END: u32 = 9;

/// A tree being written: open the root with `begin_node("")`, add properties and child
/// nodes, close every node, then [`Writer::finish`].
#[derive(Debug, Default)]
pub struct Writer {
    structs: Vec<u8>,
    strings: Vec<u8>,
    depth: usize,
    /// Whether the root has been closed (nothing may follow it).
    closed: bool,
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl Writer {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn token(&mut self, t: u32) {
        self.structs.extend_from_slice(&t.to_be_bytes());
    }

    /// The offset of `name` in the strings block, adding it the first time.
    fn string(&mut self, name: &str) -> u32 {
        assert!(!name.contains('\0'), "fdt: NUL in property name {name:?}");
        let mut off = 0;
        for s in self.strings.split(|&c| c == 0) {
            if s == name.as_bytes() && off < self.strings.len() {
                return off as u32;
            }
            off += s.len() + 1;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    /// Opens a node; the root's name is empty.
    pub fn begin_node(&mut self, name: &str) {
        assert!(!self.closed, "fdt: node {name:?} after the root was closed");
        assert_eq!(
            name.is_empty(),
            self.depth == 0,
            "fdt: only the root node (and every root node) has an empty name"
        );
        assert!(!name.contains('\0'), "fdt: NUL in node name {name:?}");
        self.token(FDT_BEGIN_NODE);
        self.structs.extend_from_slice(name.as_bytes());
        self.structs.push(0);
        pad4(&mut self.structs);
        self.depth += 1;
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) {
        assert!(self.depth > 0, "fdt: end_node without an open node");
        self.token(FDT_END_NODE);
        self.depth -= 1;
        self.closed = self.depth == 0;
    }

    /// A property with raw bytes as its value.
    pub fn prop(&mut self, name: &str, value: &[u8]) {
        assert!(self.depth > 0, "fdt: property {name:?} outside a node");
        let nameoff = self.string(name);
        let len = u32::try_from(value.len()).expect("fdt: property value too long");
        self.token(FDT_PROP);
        self.structs.extend_from_slice(&len.to_be_bytes());
        self.structs.extend_from_slice(&nameoff.to_be_bytes());
        self.structs.extend_from_slice(value);
        pad4(&mut self.structs);
    }

    /// An empty property (a flag such as `interrupt-controller`).
    pub fn prop_empty(&mut self, name: &str) {
        self.prop(name, &[]);
    }

    /// A property of one 32-bit cell.
    pub fn prop_u32(&mut self, name: &str, value: u32) {
        self.prop_cells(name, &[value]);
    }

    /// A property of 32-bit cells.
    pub fn prop_cells(&mut self, name: &str, cells: &[u32]) {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &bytes);
    }

    /// A property of 64-bit values (two cells each).
    pub fn prop_u64s(&mut self, name: &str, values: &[u64]) {
        let bytes: Vec<u8> = values.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &bytes);
    }

    /// A string property.
    pub fn prop_str(&mut self, name: &str, value: &str) {
        self.prop_strs(name, &[value]);
    }

    /// A string-list property (each string NUL-terminated).
    pub fn prop_strs(&mut self, name: &str, values: &[&str]) {
        let mut bytes = Vec::new();
        for v in values {
            assert!(
                !v.contains('\0'),
                "fdt: NUL inside string {v:?} of {name:?}"
            );
            bytes.extend_from_slice(v.as_bytes());
            bytes.push(0);
        }
        self.prop(name, &bytes);
    }

    /// The blob. Panics unless exactly one root node was written and closed.
    pub fn finish(mut self) -> Vec<u8> {
        assert!(
            self.closed && self.depth == 0,
            "fdt: finish with the root node missing or open"
        );
        self.token(FDT_END);
        // Header, then the reservation block (8-aligned: one terminating 16-byte entry).
        let off_rsvmap = HEADER_LEN;
        let off_struct = off_rsvmap + 16;
        let off_strings = off_struct + self.structs.len();
        let total = off_strings + self.strings.len();
        let header = [
            MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsvmap as u32,
            VERSION,
            LAST_COMP_VERSION,
            0, // boot_cpuid_phys
            self.strings.len() as u32,
            self.structs.len() as u32,
        ];
        let mut blob = Vec::with_capacity(total);
        for h in header {
            blob.extend_from_slice(&h.to_be_bytes());
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&self.structs);
        blob.extend_from_slice(&self.strings);
        debug_assert_eq!(blob.len(), total);
        blob
    }
}

/// Whether `dtc` (the device tree compiler) is on PATH; tests that decompile with it
/// are skipped when it is not.
#[cfg(test)]
pub fn dtc_available() -> bool {
    crate::setup::on_path("dtc")
}

/// Decompiles `blob` with `dtc -I dtb -O dts`; fails on anything dtc reports.
#[cfg(test)]
pub fn dtc_decompile(blob: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start dtc");
    child.stdin.take().unwrap().write_all(blob).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dtc failed: {stderr}");
    assert!(stderr.trim().is_empty(), "dtc warned: {stderr}");
    // dtc 1.6 writes a string list as "a\0b", newer ones as "a", "b": give the latter.
    String::from_utf8(out.stdout)
        .unwrap()
        .replace("\\0", "\", \"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(b: &[u8], off: usize) -> u32 {
        u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn small() -> Vec<u8> {
        let mut w = Writer::new();
        w.begin_node("");
        w.prop_u32("#address-cells", 2);
        w.prop_u32("#size-cells", 2);
        w.prop_str("model", "t");
        w.begin_node("memory@40000000");
        w.prop_str("device_type", "memory");
        w.prop_u64s("reg", &[0x4000_0000, 0x1000_0000]);
        w.end_node();
        w.begin_node("cpus");
        w.prop_u32("#address-cells", 1);
        w.prop_u32("#size-cells", 0);
        for n in 0..3 {
            w.begin_node(&format!("cpu@{n}"));
            w.prop_str("device_type", "cpu");
            w.prop_u32("reg", n);
            w.end_node();
        }
        w.end_node();
        w.begin_node("psci");
        w.prop_strs("compatible", &["arm,psci-1.0", "arm,psci-0.2"]);
        w.prop_str("method", "hvc");
        w.prop_empty("flag");
        w.end_node();
        w.end_node();
        w.finish()
    }

    #[test]
    fn header_and_blocks() {
        let b = small();
        assert_eq!(be32(&b, 0), MAGIC);
        assert_eq!(be32(&b, 4) as usize, b.len());
        let (off_struct, off_strings, off_rsv) = (be32(&b, 8), be32(&b, 12), be32(&b, 16));
        assert_eq!(off_rsv, 40);
        assert_eq!(&b[40..56], &[0; 16]);
        assert_eq!(off_struct, 56);
        assert_eq!((be32(&b, 20), be32(&b, 24)), (17, 16));
        let size_strings = be32(&b, 32);
        let size_struct = be32(&b, 36);
        assert_eq!(off_struct + size_struct, off_strings);
        assert_eq!(off_strings + size_strings, b.len() as u32);
        assert_eq!(size_struct % 4, 0);
        // The structure block starts with the root (empty name, padded) and ends in
        // END_NODE, END.
        let s = &b[off_struct as usize..off_strings as usize];
        assert_eq!(be32(s, 0), FDT_BEGIN_NODE);
        assert_eq!(be32(s, 4), 0);
        assert_eq!(be32(s, 8), FDT_PROP);
        assert_eq!(be32(s, s.len() - 8), FDT_END_NODE);
        assert_eq!(be32(s, s.len() - 4), FDT_END);
        // Each property name is stored once.
        let strings = &b[off_strings as usize..];
        assert_eq!(
            strings,
            b"#address-cells\0#size-cells\0model\0device_type\0reg\0compatible\0method\0flag\0"
        );
    }

    #[test]
    fn string_lookup_matches_whole_names() {
        let mut w = Writer::new();
        assert_eq!(w.string("#size-cells"), 0);
        // A suffix of a stored name gets its own entry.
        assert_eq!(w.string("size-cells"), 12);
        assert_eq!(w.string("#size-cells"), 0);
        assert_eq!(w.string("size-cells"), 12);
    }

    #[test]
    fn kcore_parser_reads_it() {
        let m = kcore::dtb::parse(&small()).unwrap();
        assert_eq!(
            m.memory.as_slice(),
            &[kcore::addr::PhysRange::new(0x4000_0000, 0x1000_0000).unwrap()]
        );
        assert_eq!(m.cpus.as_slice(), &[0, 1, 2]);
        assert_eq!(m.psci_smc, Some(false));
    }

    #[test]
    fn dtc_reads_it() {
        if !dtc_available() {
            eprintln!("dtc not on PATH: skipping");
            return;
        }
        let dts = dtc_decompile(&small());
        assert!(dts.contains("compatible = \"arm,psci-1.0\", \"arm,psci-0.2\";"));
        assert!(dts.contains("reg = <0x00 0x40000000 0x00 0x10000000>;"));
        assert!(dts.contains("flag;"));
    }

    #[test]
    #[should_panic(expected = "root node missing or open")]
    fn unbalanced_tree_panics() {
        let mut w = Writer::new();
        w.begin_node("");
        w.finish();
    }
}
