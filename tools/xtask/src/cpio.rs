//! A writer of "newc" cpio archives (the format of a Linux initramfs).
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the
//! NUL-terminated name padded so the data starts on a 4-byte boundary, then the data
//! padded to 4 bytes; a `TRAILER!!!` entry ends the archive. Linux unpacks it
//! uncompressed. Nothing here reads the host's files or clock: inode numbers count up
//! from [`FIRST_INO`] and every mtime is 0, so the same entries give the same bytes.

/// The inode number of the first entry.
pub const FIRST_INO: u32 = 1;
/// Magic of a newc header (no checksums).
pub const MAGIC: &[u8; 6] = b"070701";
/// Length of a newc header.
pub const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `mode`.
pub const S_IFDIR: u32 = 0o040_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;

/// An archive being written.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    next_ino: u32,
}

/// The fields of a header that vary between entries.
struct Entry<'a> {
    name: &'a str,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl Writer {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            next_ino: FIRST_INO,
        }
    }

    /// Entry names have no leading `/` (`bin/busybox`), as the kernel expects.
    fn name(path: &str) -> &str {
        let name = path.trim_start_matches('/');
        assert!(!name.is_empty(), "cpio: empty entry name {path:?}");
        name
    }

    fn push(&mut self, e: &Entry<'_>) {
        assert_eq!(
            self.buf.len() % 4,
            0,
            "cpio: entries start on 4-byte boundaries"
        );
        let size = u32::try_from(e.data.len()).expect("cpio: newc files are below 4 GiB");
        let namesize = e.name.len() as u32 + 1;
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check.
        let fields = [
            e.ino, e.mode, 0, 0, e.nlink, 0, size, 0, 0, e.rdev.0, e.rdev.1, namesize, 0,
        ];
        let start = self.buf.len();
        self.buf.extend_from_slice(MAGIC);
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        debug_assert_eq!(self.buf.len() - start, HEADER_LEN);
        self.buf.extend_from_slice(e.name.as_bytes());
        self.buf.push(0);
        pad4(&mut self.buf);
        self.buf.extend_from_slice(e.data);
        pad4(&mut self.buf);
    }

    fn next_ino(&mut self) -> u32 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// Adds a directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) {
        let ino = self.next_ino();
        self.push(&Entry {
            name: Self::name(path),
            ino,
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        });
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let ino = self.next_ino();
        self.push(&Entry {
            name: Self::name(path),
            ino,
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            rdev: (0, 0),
            data,
        });
    }

    /// Adds a character device node `major:minor`.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        let ino = self.next_ino();
        self.push(&Entry {
            name: Self::name(path),
            ino,
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        });
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.push(&Entry {
            name: TRAILER,
            ino: 0,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
            data: &[],
        });
        self.buf
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// One entry as read back: name, the 13 header fields, data.
    #[derive(Debug)]
    pub struct Read {
        pub name: String,
        pub fields: [u32; 13],
        pub data: Vec<u8>,
    }

    /// Field indices.
    pub const INO: usize = 0;
    pub const MODE: usize = 1;
    pub const NLINK: usize = 4;
    pub const MTIME: usize = 5;
    pub const FILESIZE: usize = 6;
    pub const RDEVMAJOR: usize = 9;
    pub const RDEVMINOR: usize = 10;
    pub const NAMESIZE: usize = 11;

    /// A strict reader of what [`Writer`] writes: checks the magic, the padding (zeros,
    /// to 4 bytes) and that the trailer ends the archive; returns the entries before it.
    pub fn read(mut b: &[u8]) -> Vec<Read> {
        let mut out = Vec::new();
        let total = b.len();
        loop {
            let at = total - b.len();
            assert_eq!(at % 4, 0, "entry at {at} is not 4-aligned");
            assert_eq!(&b[..6], MAGIC, "magic at {at}");
            let mut fields = [0u32; 13];
            for (i, f) in fields.iter_mut().enumerate() {
                let hex = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap();
                *f = u32::from_str_radix(hex, 16).unwrap();
            }
            let namesize = fields[NAMESIZE] as usize;
            let name_end = HEADER_LEN + namesize;
            assert_eq!(b[name_end - 1], 0, "name is NUL-terminated");
            let name = std::str::from_utf8(&b[HEADER_LEN..name_end - 1])
                .unwrap()
                .to_string();
            let data_at = name_end.next_multiple_of(4);
            assert!(b[name_end..data_at].iter().all(|&c| c == 0));
            let size = fields[FILESIZE] as usize;
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert!(b[data_at + size..next].iter().all(|&c| c == 0));
            b = &b[next..];
            if name == TRAILER {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push(Read { name, fields, data });
        }
    }

    #[test]
    fn header_fields_and_padding() {
        let mut w = Writer::new();
        w.dir("/bin", 0o755);
        w.file("/bin/x", 0o755, b"hello");
        w.char_dev("/dev/console", 0o600, 5, 1);
        let a = w.finish();
        assert_eq!(a.len() % 4, 0);
        // The first header, byte for byte: ino 1, mode 040755, nlink 2, namesize 4.
        let first = concat!(
            "070701", "00000001", "000041ed", "00000000", "00000000", "00000002", "00000000",
            "00000000", "00000000", "00000000", "00000000", "00000000", "00000004", "00000000",
            "bin\0"
        );
        assert_eq!(&a[..first.len()], first.as_bytes());
        // 110 + 4 = 114 bytes, padded to 116: the next header starts there.
        assert_eq!(&a[114..116], &[0, 0]);
        assert_eq!(&a[116..122], MAGIC);

        let e = read(&a);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].name, "bin");
        assert_eq!(e[1].name, "bin/x");
        assert_eq!(e[1].fields[MODE], 0o100_755);
        assert_eq!(e[1].fields[FILESIZE], 5);
        assert_eq!(e[1].fields[NLINK], 1);
        assert_eq!(e[1].data, b"hello");
        assert_eq!(e[2].name, "dev/console");
        assert_eq!(e[2].fields[MODE], 0o020_600);
        assert_eq!((e[2].fields[RDEVMAJOR], e[2].fields[RDEVMINOR]), (5, 1));
        let inos: Vec<u32> = e.iter().map(|x| x.fields[INO]).collect();
        assert_eq!(inos, [1, 2, 3]);
        assert!(e.iter().all(|x| x.fields[MTIME] == 0));
    }

    #[test]
    fn trailer_ends_the_archive() {
        let a = Writer::new().finish();
        // Header, "TRAILER!!!\0" (11 bytes), padded: 110 + 11 = 121 -> 124.
        assert_eq!(a.len(), 124);
        assert_eq!(&a[110..121], b"TRAILER!!!\0");
        assert_eq!(&a[94..102], b"0000000b"); // namesize
        assert!(read(&a).is_empty());
    }

    #[test]
    fn every_data_length_pads_to_four() {
        for len in 0..9 {
            let data = vec![0xaa; len];
            let mut w = Writer::new();
            w.file("f", 0o644, &data);
            let a = w.finish();
            let e = read(&a);
            assert_eq!(e[0].data, data);
        }
    }

    #[test]
    fn same_entries_same_bytes() {
        let build = || {
            let mut w = Writer::new();
            w.dir("d", 0o755);
            w.file("d/f", 0o644, b"abc");
            w.finish()
        };
        assert_eq!(build(), build());
    }
}
