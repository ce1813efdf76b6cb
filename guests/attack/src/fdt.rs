//! Just enough of a flattened device tree (the Devicetree Specification, chapter 5) to
//! find `/chosen/bootargs` and read `word=N` from it. Pure functions over bytes: every
//! offset is bounds-checked, so a damaged tree gives `None`, never a fault.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The tree's total size from its header, if `b` starts with one.
pub fn total_size(b: &[u8]) -> Option<usize> {
    (be32(b, 0)? == MAGIC).then_some(be32(b, 4)? as usize)
}

fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let rest = b.get(off..)?;
    Some(&rest[..rest.iter().position(|&c| c == 0)?])
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The value of `/chosen/bootargs` (without its NUL).
pub fn bootargs(b: &[u8]) -> Option<&[u8]> {
    let size = total_size(b)?;
    let b = b.get(..size)?;
    let structs = be32(b, 8)? as usize;
    let strings = be32(b, 12)? as usize;
    let mut off = structs;
    let mut depth = 0usize;
    let mut in_chosen = false;
    loop {
        match be32(b, off)? {
            BEGIN_NODE => {
                let name = cstr(b, off + 4)?;
                depth += 1;
                in_chosen = depth == 2 && name == b"chosen";
                off = align4(off + 4 + name.len() + 1);
            }
            END_NODE => {
                depth = depth.checked_sub(1)?;
                in_chosen = false;
                off += 4;
            }
            PROP => {
                let len = be32(b, off + 4)? as usize;
                let name = cstr(b, strings + be32(b, off + 8)? as usize)?;
                let data = b.get(off + 12..off + 12 + len)?;
                if in_chosen && name == b"bootargs" {
                    return Some(&data[..data.iter().position(|&c| c == 0).unwrap_or(len)]);
                }
                off = align4(off + 12 + len);
            }
            NOP => off += 4,
            END => return None,
            _ => return None,
        }
    }
}

/// The decimal number of the first `key=N` word in `args`.
pub fn number(args: &[u8], key: &[u8]) -> Option<u64> {
    for word in args.split(|&c| c == b' ') {
        let Some(v) = word.strip_prefix(key).and_then(|r| r.strip_prefix(b"=")) else {
            continue;
        };
        let mut n: u64 = 0;
        for &c in v {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        }
        return (!v.is_empty()).then_some(n);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree with `/chosen/bootargs = args` (and a property and node before it).
    fn tree(args: &str) -> Vec<u8> {
        let strings = b"model\0bootargs\0";
        let mut s: Vec<u8> = Vec::new();
        let word = |s: &mut Vec<u8>, v: u32| s.extend_from_slice(&v.to_be_bytes());
        let pad = |s: &mut Vec<u8>| s.resize(align4(s.len()), 0);
        word(&mut s, BEGIN_NODE);
        s.extend_from_slice(b"\0");
        pad(&mut s);
        word(&mut s, PROP);
        word(&mut s, 3);
        word(&mut s, 0);
        s.extend_from_slice(b"vm\0");
        pad(&mut s);
        word(&mut s, BEGIN_NODE);
        s.extend_from_slice(b"cpus\0");
        pad(&mut s);
        word(&mut s, END_NODE);
        word(&mut s, BEGIN_NODE);
        s.extend_from_slice(b"chosen\0");
        pad(&mut s);
        word(&mut s, NOP);
        word(&mut s, PROP);
        word(&mut s, args.len() as u32 + 1);
        word(&mut s, 6);
        s.extend_from_slice(args.as_bytes());
        s.push(0);
        pad(&mut s);
        word(&mut s, END_NODE);
        word(&mut s, END_NODE);
        word(&mut s, END);
        let structs = 40;
        let strings_at = structs + s.len();
        let total = strings_at + strings.len();
        let mut b = Vec::new();
        for v in [
            MAGIC,
            total as u32,
            structs as u32,
            strings_at as u32,
            0,
            17,
            16,
            0,
            0,
            0,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&s);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn finds_bootargs_and_numbers() {
        let t = tree("console=ttyAMA0 attack.soak=12 x");
        assert_eq!(total_size(&t), Some(t.len()));
        let args = bootargs(&t).unwrap();
        assert_eq!(args, b"console=ttyAMA0 attack.soak=12 x");
        assert_eq!(number(args, b"attack.soak"), Some(12));
        assert_eq!(number(args, b"attack.other"), None);
        assert_eq!(number(b"attack.soak=1x", b"attack.soak"), None);
        assert_eq!(number(b"attack.soak=", b"attack.soak"), None);
        assert_eq!(
            number(b"attack.soakx=3 attack.soak=4", b"attack.soak"),
            Some(4)
        );
    }

    #[test]
    fn damaged_trees_give_none() {
        let t = tree("a=1");
        for cut in 0..t.len() {
            let mut d = t[..cut].to_vec();
            // Keep the header's size honest so the walk itself meets the cut.
            if d.len() >= 8 {
                d[4..8].copy_from_slice(&(cut as u32).to_be_bytes());
            }
            assert_eq!(bootargs(&d), None, "cut at {cut}");
        }
        let mut bad = t.clone();
        bad[0] = 0;
        assert_eq!(bootargs(&bad), None);
        let mut looped = t.clone();
        looped[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(bootargs(&looped), None);
    }
}
