//! `memtest MIB [SEED]`: a tiny static Linux/arm64 program for the Linux guest's
//! initramfs. It maps MIB MiB of anonymous private memory, writes to every 8-byte word a
//! pattern derived from the word's address and SEED, reads everything back and prints
//! `memtest: <MIB> MiB ok (seed <SEED>)` (exit 0) or `memtest: FAIL ...` (exit 1);
//! bad arguments print the usage (exit 2).
//!
//! No libc: raw Linux syscalls (`svc #0`), its own `_start` and linker script (linux.x).
//! The argument parsing and line formatting are plain functions, tested on the host.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
// On the host only the tests use the shared functions.
#![cfg_attr(not(any(target_os = "none", test)), allow(dead_code))]

/// The most MiB one run may ask for (keeps the byte count far from overflowing).
const MAX_MIB: u64 = 1 << 24;

/// The value stored in the word at `addr` for `seed`: differs from word to word and from
/// seed to seed, and is never the address itself.
fn pattern(addr: u64, seed: u64) -> u64 {
    let x = (addr ^ seed.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29) ^ seed ^ 0xa5a5_5a5a_0000_0000
}

/// Parses a decimal number or a `0x` hexadecimal one; `None` when empty, malformed or
/// too large for a `u64`.
fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' if radix == 16 => c - b'a' + 10,
            b'A'..=b'F' if radix == 16 => c - b'A' + 10,
            _ => return None,
        };
        v = v.checked_mul(radix)?.checked_add(d as u64)?;
    }
    Some(v)
}

/// The MiB count and seed of `memtest MIB [SEED]` (`args` without the program name).
fn parse_args<'a>(mut args: impl Iterator<Item = &'a [u8]>) -> Option<(u64, u64)> {
    let mib = parse_u64(args.next()?)?;
    let seed = match args.next() {
        Some(s) => parse_u64(s)?,
        None => 1,
    };
    if args.next().is_some() || !(1..=MAX_MIB).contains(&mib) {
        return None;
    }
    Some((mib, seed))
}

/// One output line, built without allocation; what does not fit is dropped.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    fn byte(&mut self, b: u8) -> &mut Self {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            self.byte(b);
        }
        self
    }

    fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 || n == digits.len() {
                break;
            }
        }
        for &d in digits[..n].iter().rev() {
            self.byte(d);
        }
        self
    }

    fn hex(&mut self, v: u64) -> &mut Self {
        self.str("0x");
        let mut started = false;
        for i in (0..16).rev() {
            let d = ((v >> (4 * i)) & 0xf) as u8;
            if d != 0 || started || i == 0 {
                started = true;
                self.byte(if d < 10 { b'0' + d } else { b'a' + d - 10 });
            }
        }
        self
    }
}

#[cfg(target_os = "none")]
mod linux {
    use super::{parse_args, pattern, Line};

    const SYS_WRITE: u64 = 64;
    const SYS_EXIT_GROUP: u64 = 94;
    const SYS_MMAP: u64 = 222;
    const PROT_READ: u64 = 1;
    const PROT_WRITE: u64 = 2;
    const MAP_PRIVATE: u64 = 0x02;
    const MAP_ANONYMOUS: u64 = 0x20;
    const STDOUT: u64 = 1;
    const STDERR: u64 = 2;

    // Linux enters here with sp at argc, followed by the argv pointers, a null, envp, a
    // null and the auxiliary vector; sp is 16-byte aligned. Nothing else needs setting up:
    // no relocations, no TLS, no .bss to clear (the kernel zeroes it).
    core::arch::global_asm!(
        ".section .text.start, \"ax\"",
        ".global _start",
        ".type _start, %function",
        "_start:",
        "    mov x29, #0",
        "    mov x30, #0",
        "    mov x0, sp",
        "    bl memtest_main",
        "    brk #0",
    );

    /// A Linux syscall with up to 6 arguments; returns x0 (negative errno on failure).
    ///
    /// # Safety
    /// The arguments must be valid for syscall `nr` (pointers to memory it may read or
    /// write as that call does).
    unsafe fn syscall(nr: u64, a: [u64; 6]) -> i64 {
        let ret: i64;
        // SAFETY: `svc #0` enters the kernel, which reads x8 and x0..x5, returns in x0 and
        // preserves every other register; what memory the call touches is the caller's
        // promise.
        unsafe {
            core::arch::asm!(
                "svc #0",
                in("x8") nr,
                inlateout("x0") a[0] => ret,
                in("x1") a[1],
                in("x2") a[2],
                in("x3") a[3],
                in("x4") a[4],
                in("x5") a[5],
                options(nostack),
            );
        }
        ret
    }

    fn write(fd: u64, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: write(2) reads `rest.len()` bytes at `rest`, a live slice.
            let n = unsafe {
                syscall(
                    SYS_WRITE,
                    [fd, rest.as_ptr() as u64, rest.len() as u64, 0, 0, 0],
                )
            };
            if n <= 0 {
                return;
            }
            rest = rest.get(n as usize..).unwrap_or(&[]);
        }
    }

    fn print(fd: u64, line: &mut Line) {
        line.byte(b'\n');
        write(fd, line.bytes());
    }

    fn exit(code: u64) -> ! {
        // SAFETY: exit_group(2) ends the process; it touches no memory of ours.
        unsafe { syscall(SYS_EXIT_GROUP, [code, 0, 0, 0, 0, 0]) };
        loop {
            core::hint::spin_loop();
        }
    }

    /// The NUL-terminated string at `p`.
    ///
    /// # Safety
    /// `p` must point at a NUL-terminated string that lives for the whole program.
    unsafe fn c_str(p: *const u8) -> &'static [u8] {
        let mut n = 0;
        // SAFETY: the bytes up to and including the terminating NUL are readable.
        while unsafe { *p.add(n) } != 0 {
            n += 1;
        }
        // SAFETY: as above; the argument strings are never written.
        unsafe { core::slice::from_raw_parts(p, n) }
    }

    /// Writes the pattern to every word of `base..base + len`, then checks it; returns
    /// the first bad word (address, read, expected) and how many there were.
    fn test(base: u64, len: u64, seed: u64) -> Option<((u64, u64, u64), u64)> {
        let end = base + len;
        let mut a = base;
        while a < end {
            // SAFETY: `a` is an aligned word of the mapping this process just created and
            // owns alone.
            unsafe { core::ptr::write_volatile(a as *mut u64, pattern(a, seed)) };
            a += 8;
        }
        let mut first = None;
        let mut bad = 0;
        a = base;
        while a < end {
            // SAFETY: as above.
            let got = unsafe { core::ptr::read_volatile(a as *const u64) };
            let want = pattern(a, seed);
            if got != want {
                first.get_or_insert((a, got, want));
                bad += 1;
            }
            a += 8;
        }
        first.map(|f| (f, bad))
    }

    /// Called by `_start` with the initial stack pointer.
    ///
    /// # Safety
    /// `sp` must be the stack Linux hands a new program: argc, then argc pointers to
    /// NUL-terminated strings.
    #[no_mangle]
    unsafe extern "C" fn memtest_main(sp: *const u64) -> ! {
        // SAFETY: the first word of the initial stack is argc.
        let argc = unsafe { *sp } as usize;
        // SAFETY: argv[0..argc] follow argc, each a NUL-terminated string.
        let arg = |i: usize| unsafe { c_str(*sp.add(1 + i) as *const u8) };
        let Some((mib, seed)) = parse_args((1..argc).map(arg)) else {
            write(
                STDERR,
                b"usage: memtest MIB [SEED]  (MIB: 1 to 16777216; numbers in decimal or 0x hex)\n",
            );
            exit(2);
        };
        let len = mib << 20;
        // SAFETY: a new anonymous private mapping: no existing memory is affected.
        let base = unsafe {
            syscall(
                SYS_MMAP,
                [
                    0,
                    len,
                    PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS,
                    u64::MAX,
                    0,
                ],
            )
        };
        if (-4095..0).contains(&base) {
            print(
                STDOUT,
                Line::new()
                    .str("memtest: FAIL: cannot map ")
                    .dec(mib)
                    .str(" MiB (errno ")
                    .dec(base.unsigned_abs())
                    .str(")"),
            );
            exit(1);
        }
        match test(base as u64, len, seed) {
            None => {
                print(
                    STDOUT,
                    Line::new()
                        .str("memtest: ")
                        .dec(mib)
                        .str(" MiB ok (seed ")
                        .dec(seed)
                        .str(")"),
                );
                exit(0);
            }
            Some(((at, got, want), bad)) => {
                print(
                    STDOUT,
                    Line::new()
                        .str("memtest: FAIL at ")
                        .hex(at)
                        .str(": read ")
                        .hex(got)
                        .str(", expected ")
                        .hex(want)
                        .str(" (")
                        .dec(bad)
                        .str(" bad words in ")
                        .dec(mib)
                        .str(" MiB, seed ")
                        .dec(seed)
                        .str(")"),
                );
                exit(1);
            }
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        write(STDOUT, b"memtest: FAIL: panic\n");
        exit(3);
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "memtest is a static Linux/arm64 program for the Linux guest: \
         build it with `--target aarch64-unknown-none`"
    );
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"64"), Some(64));
        assert_eq!(parse_u64(b"0x1F"), Some(31));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_u64(b"0x10000000000000000"), None);
        for bad in [&b""[..], b"0x", b"-1", b"12a", b"1 ", b"ff"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn arguments() {
        let p = |a: &[&str]| parse_args(a.iter().map(|s| s.as_bytes()));
        assert_eq!(p(&["8"]), Some((8, 1)));
        assert_eq!(p(&["8", "0x2a"]), Some((8, 42)));
        assert_eq!(p(&[]), None);
        assert_eq!(p(&["0"]), None);
        assert_eq!(p(&["16777217"]), None);
        assert_eq!(p(&["8", "x"]), None);
        assert_eq!(p(&["8", "1", "2"]), None);
    }

    #[test]
    fn lines() {
        let mut l = Line::new();
        l.str("memtest: ")
            .dec(0)
            .byte(b' ')
            .dec(u64::MAX)
            .byte(b' ');
        l.hex(0)
            .byte(b' ')
            .hex(0x4000_0ab0)
            .byte(b' ')
            .hex(u64::MAX);
        assert_eq!(
            l.bytes(),
            b"memtest: 0 18446744073709551615 0x0 0x40000ab0 0xffffffffffffffff"
        );
        let mut full = Line::new();
        for _ in 0..100 {
            full.str("xy");
        }
        assert_eq!(full.bytes().len(), 160);
    }

    #[test]
    fn patterns_differ() {
        let base = 0x7f00_0000_0000;
        for a in (base..base + 4096).step_by(8) {
            assert_ne!(pattern(a, 1), pattern(a + 8, 1));
            assert_ne!(pattern(a, 1), pattern(a, 2));
            assert_ne!(pattern(a, 1), a);
        }
    }
}
