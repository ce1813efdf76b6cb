//! Turns the console byte stream into log lines.
//!
//! The wire format is defined by `kcore::logwire`: records of one tag byte followed by an
//! rzCOBS-encoded defmt frame that ends with `0x00`. The tag picks the ELF whose defmt
//! table decodes the frame: the kernel's, or that of the boot task in the tag's slot.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use defmt_decoder::{Encoding, Table};
use kcore::logwire::{tag_slot, TAG_KERNEL};

use crate::image::Manifest;

/// Splits a byte stream at `0x00` delimiters, across reads.
#[derive(Debug, Default)]
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// Feeds bytes; returns every record completed by them (without the delimiter).
    /// Empty records (repeated delimiters) are dropped.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        for &b in data {
            if b == 0 {
                if !self.pending.is_empty() {
                    records.push(std::mem::take(&mut self.pending));
                }
            } else {
                self.pending.push(b);
            }
        }
        records
    }

    /// Bytes left without a delimiter at the end of the stream.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Who produced a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The kernel's own frames.
    Kernel,
    /// The boot task in this payload slot.
    Task(usize),
    /// Bytes that could not be decoded.
    Unknown,
}

/// One decoded line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Who produced it.
    pub origin: Origin,
    /// `[kernel c0 0.001234]`, `[init]`, `[?]`.
    pub prefix: String,
    /// `TRACE` .. `ERROR`, if the frame had a level.
    pub level: Option<String>,
    /// The message (one line of it).
    pub message: String,
}

impl Line {
    /// The line as printed without colour; expectations match against this.
    pub fn plain(&self) -> String {
        match &self.level {
            Some(level) => format!("{} {level:<5} {}", self.prefix, self.message),
            None => format!("{} {}", self.prefix, self.message),
        }
    }

    /// The line for a terminal: the level in colour when `color` is set.
    pub fn render(&self, color: bool) -> String {
        let (Some(level), true) = (&self.level, color) else {
            return self.plain();
        };
        let code = match level.as_str() {
            "ERROR" => "31",
            "WARN" => "33",
            "INFO" => "32",
            "DEBUG" => "36",
            _ => "2",
        };
        format!(
            "{} \x1b[{code}m{level:<5}\x1b[0m {}",
            self.prefix, self.message
        )
    }
}

/// Builds lines for one decoded record, one per line of the message.
pub fn lines_for(origin: Origin, prefix: &str, level: Option<&str>, message: &str) -> Vec<Line> {
    let level = level.map(str::to_uppercase);
    let mut parts: Vec<&str> = message.lines().collect();
    if parts.is_empty() {
        parts.push("");
    }
    parts
        .into_iter()
        .map(|m| Line {
            origin,
            prefix: prefix.to_string(),
            level: level.clone(),
            message: m.to_string(),
        })
        .collect()
}

/// A line reporting bytes that decode as nothing.
pub fn undecodable(bytes: &[u8]) -> Line {
    const SHOWN: usize = 96;
    let mut hex: Vec<String> = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        hex.push(format!("... ({} bytes)", bytes.len()));
    }
    let mut message = format!("undecodable bytes: {}", hex.join(" "));
    let text = bytes
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\n' || b == b'\r' || b == b'\t');
    if text {
        message.push_str(&format!(" {:?}", String::from_utf8_lossy(bytes)));
    }
    Line {
        origin: Origin::Unknown,
        prefix: "[?]".to_string(),
        level: None,
        message,
    }
}

/// Decodes one record body (the frame after the tag, without its delimiter).
pub trait RecordDecoder {
    /// The lines for a record with this tag, or `None` when it does not decode.
    fn decode(&self, tag: u8, body: &[u8]) -> Option<Vec<Line>>;
}

/// Whether a byte is a tag the wire format defines.
pub fn is_tag(b: u8) -> bool {
    b == TAG_KERNEL || tag_slot(b).is_some()
}

/// The console: splits the stream and decodes each record.
pub struct Console<D> {
    splitter: Splitter,
    decoder: D,
}

impl<D: RecordDecoder> Console<D> {
    /// A console decoding with `decoder`.
    pub fn new(decoder: D) -> Self {
        Console {
            splitter: Splitter::default(),
            decoder,
        }
    }

    /// Feeds bytes as they arrive; returns the lines they complete.
    pub fn push(&mut self, data: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        for record in self.splitter.push(data) {
            self.record(&record, &mut lines);
        }
        lines
    }

    /// Ends the stream; reports bytes left without a delimiter.
    pub fn finish(&mut self) -> Vec<Line> {
        self.splitter
            .finish()
            .map(|b| undecodable(&b))
            .into_iter()
            .collect()
    }

    fn record(&self, record: &[u8], out: &mut Vec<Line>) {
        if let Some(lines) = self.decoder.decode(record[0], &record[1..]) {
            out.extend(lines);
            return;
        }
        // Garbage before a record (say, output from before logging was set up) sticks to
        // the record's front: look for a later tag byte from which the rest decodes.
        for start in 1..record.len() {
            if !is_tag(record[start]) {
                continue;
            }
            if let Some(lines) = self.decoder.decode(record[start], &record[start + 1..]) {
                out.push(undecodable(&record[..start]));
                out.extend(lines);
                return;
            }
        }
        out.push(undecodable(record));
    }
}

/// The defmt tables of a built system's ELFs.
pub struct DefmtTables {
    kernel: Table,
    tasks: Vec<(String, Table)>,
}

fn load_table(path: &Path) -> Result<Table> {
    let elf = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table = Table::parse(&elf)
        .map_err(|e| anyhow!("{}: cannot read its defmt table: {e:#}", path.display()))?
        .ok_or_else(|| {
            anyhow!(
                "{}: the ELF has no defmt table (no .defmt section); it must log with defmt",
                path.display()
            )
        })?;
    if table.encoding() != Encoding::Rzcobs {
        bail!(
            "{}: defmt uses the {:?} encoding, but the log wire carries rzCOBS frames",
            path.display(),
            table.encoding()
        );
    }
    Ok(table)
}

impl DefmtTables {
    /// Loads the tables of the kernel and every boot task of `manifest`.
    pub fn load(manifest: &Manifest) -> Result<Self> {
        let kernel = load_table(&manifest.kernel)?;
        let mut tasks = Vec::new();
        for t in &manifest.task {
            tasks.push((t.name.clone(), load_table(&t.elf)?));
        }
        Ok(DefmtTables { kernel, tasks })
    }
}

/// Decodes one rzCOBS frame with `table`; `None` unless it is one valid frame.
fn decode_frame(table: &Table, origin: Origin, component: &str, body: &[u8]) -> Option<Vec<Line>> {
    let raw = rzcobs::decode(body).ok()?;
    let (frame, consumed) = table.decode(&raw).ok()?;
    // rzCOBS may pad the frame with zeros; anything else after it means a bad frame.
    if raw[consumed..].iter().any(|&b| b != 0) {
        return None;
    }
    let prefix = match frame.display_timestamp() {
        Some(ts) => format!("[{component} {ts}]"),
        None => format!("[{component}]"),
    };
    let message = frame.display_message().to_string();
    let level = frame.level().map(|l| l.as_str());
    Some(lines_for(origin, &prefix, level, &message))
}

impl RecordDecoder for DefmtTables {
    fn decode(&self, tag: u8, body: &[u8]) -> Option<Vec<Line>> {
        if tag == TAG_KERNEL {
            return decode_frame(&self.kernel, Origin::Kernel, "kernel", body);
        }
        let slot = tag_slot(tag)?;
        let (name, table) = self.tasks.get(slot)?;
        decode_frame(table, Origin::Task(slot), name, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies are plain text; the kernel's tag decodes anything, task 0's only text
    /// starting with `t:`.
    struct Text;

    impl RecordDecoder for Text {
        fn decode(&self, tag: u8, body: &[u8]) -> Option<Vec<Line>> {
            let s = std::str::from_utf8(body).ok()?;
            match (tag, tag_slot(tag)) {
                (TAG_KERNEL, _) if s.starts_with("k:") => {
                    Some(lines_for(Origin::Kernel, "[kernel]", Some("info"), &s[2..]))
                }
                (_, Some(0)) if s.starts_with("t:") => {
                    Some(lines_for(Origin::Task(0), "[init]", None, &s[2..]))
                }
                _ => None,
            }
        }
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(Line::plain).collect()
    }

    const T0: u8 = kcore::logwire::TAG_TASK_BASE;

    #[test]
    fn splits_across_reads() {
        let mut s = Splitter::default();
        assert!(s.push(b"\x01ab").is_empty());
        assert!(s.push(b"c").is_empty());
        assert_eq!(s.push(b"d\0\x10x"), vec![b"\x01abcd".to_vec()]);
        assert_eq!(s.push(b"\0"), vec![b"\x10x".to_vec()]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn many_records_in_one_read() {
        let mut s = Splitter::default();
        let r = s.push(b"\x01a\0\0\x10b\0\x01c\0\x01tail");
        assert_eq!(
            r,
            vec![b"\x01a".to_vec(), b"\x10b".to_vec(), b"\x01c".to_vec()]
        );
        assert_eq!(s.finish(), Some(b"\x01tail".to_vec()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn console_decodes_by_tag() {
        let mut c = Console::new(Text);
        let mut input = vec![TAG_KERNEL];
        input.extend_from_slice(b"k:boot\nsecond\0");
        input.push(T0);
        input.extend_from_slice(b"t:hi\0");
        input.push(T0 + 5);
        input.extend_from_slice(b"t:nobody\0");
        let lines = c.push(&input);
        assert_eq!(
            texts(&lines),
            [
                "[kernel] INFO  boot",
                "[kernel] INFO  second",
                "[init] hi",
                "[?] undecodable bytes: 15 74 3a 6e 6f 62 6f 64 79",
            ]
        );
        assert_eq!(lines[0].origin, Origin::Kernel);
        assert_eq!(lines[2].origin, Origin::Task(0));
        assert_eq!(lines[3].origin, Origin::Unknown);
    }

    #[test]
    fn junk_before_a_record_is_reported_and_skipped() {
        let mut c = Console::new(Text);
        let mut input = b"BOOT".to_vec();
        input.push(TAG_KERNEL);
        input.extend_from_slice(b"k:ok\0");
        let lines = c.push(&input[..3]);
        assert!(lines.is_empty());
        let lines = c.push(&input[3..]);
        assert_eq!(
            texts(&lines),
            [
                "[?] undecodable bytes: 42 4f 4f 54 \"BOOT\"",
                "[kernel] INFO  ok"
            ]
        );
        // Junk ending in its own delimiter is a record of its own.
        let lines = c.push(b"\xff\xfe\0\x10t:x\0");
        assert_eq!(texts(&lines), ["[?] undecodable bytes: ff fe", "[init] x"]);
        assert_eq!(texts(&c.push(b"\x01k:cut")), Vec::<String>::new());
        assert_eq!(
            texts(&c.finish()),
            ["[?] undecodable bytes: 01 6b 3a 63 75 74"]
        );
    }

    #[test]
    fn colour_only_on_request() {
        let l = &lines_for(Origin::Kernel, "[kernel c0 0.000001]", Some("warn"), "x")[0];
        assert_eq!(l.plain(), "[kernel c0 0.000001] WARN  x");
        assert_eq!(l.render(false), l.plain());
        assert!(l.render(true).contains("\x1b[33mWARN \x1b[0m"));
    }
}
