//! The host half of the on-target differential test: reads the digests the `capdiff` task
//! printed (one per seeded sequence of `capseq` operations run against the real kernel),
//! runs the same sequences on the capability model, and compares.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use cap_model::{BootConfig, CapView, Model};
use capseq::{compared_slots, op, Digest, Rng, ROOT_GUARD_BITS, ROOT_RADIX, UNTYPED_BITS};
use kcore::cap::Cap;

/// The kernel's encoding of a cap the model describes.
fn encode(v: &CapView) -> [u64; 2] {
    let cap = match *v {
        CapView::Untyped {
            base,
            size_bits,
            watermark,
            device,
        } => Cap::Untyped {
            base,
            size_bits,
            watermark,
            device,
        },
        CapView::CNode {
            addr,
            radix,
            guard_bits,
            guard,
        } => Cap::CNode {
            addr,
            radix,
            guard_bits,
            guard,
        },
        CapView::Endpoint {
            addr,
            rights,
            badge,
        } => Cap::Endpoint {
            addr,
            rights,
            badge,
        },
        CapView::Notification {
            addr,
            rights,
            badge,
        } => Cap::Notification {
            addr,
            rights,
            badge,
        },
        CapView::Tcb { addr } => Cap::Tcb { addr },
        CapView::Frame {
            addr,
            size_bits,
            rights,
        } => Cap::Frame {
            addr,
            size_bits,
            rights,
        },
        CapView::PageTable { addr } => Cap::PageTable { addr },
        CapView::VSpace { addr } => Cap::VSpace { addr },
        CapView::Vcpu { addr } => Cap::Vcpu { addr },
        CapView::TablePool { addr, size_bits } => Cap::TablePool { addr, size_bits },
    };
    cap.encode()
}

/// The digest the target must have printed for sequence `seed` of `len` operations.
pub fn expected(cfg: &BootConfig, seed: u64, len: u64) -> u64 {
    let mut model = Model::boot(cfg);
    let mut rng = Rng::new(seed);
    let mut d = Digest::default();
    for _ in 0..len {
        let r = model.apply(&cap_model::seq::from_capseq(op(&mut rng)));
        d.word(match r {
            Ok(()) => 0,
            Err(e) => e as u64,
        });
    }
    let snap = model.snapshot();
    for s in compared_slots() {
        match snap.get(&(cfg.root_addr, s)) {
            Some(v) => {
                let [w0, w1] = encode(&v.cap);
                d.word(w0);
                d.word(w1);
                d.word(v.parent.map_or(u64::MAX, |(c, i)| c + 32 * i));
            }
            None => {
                d.word(0);
                d.word(0);
                d.word(u64::MAX);
            }
        }
    }
    d.0
}

fn hex(s: &str) -> Result<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).with_context(|| format!("bad number `{s}`"))
}

/// Compares the digests in a decoded console log with the model's. Returns a summary.
pub fn compare(log: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut cfg = None;
    let (mut count, mut len) = (0u64, 0u64);
    let mut seen = 0u64;
    let mut bad: Vec<u64> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.split("CAPDIFF ").nth(1) else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.first() {
            Some(&"boot") => {
                let field = |k: &str| {
                    words
                        .iter()
                        .find_map(|w| w.strip_prefix(k))
                        .ok_or_else(|| anyhow!("boot line lacks {k}"))
                };
                cfg = Some(BootConfig {
                    root_addr: hex(field("root=")?)?,
                    root_radix: ROOT_RADIX,
                    root_guard_bits: ROOT_GUARD_BITS,
                    untypeds: vec![(hex(field("untyped=")?)?, UNTYPED_BITS, false)],
                });
                count = field("sequences=")?.parse()?;
                len = field("length=")?.parse()?;
            }
            Some(&"seq") => {
                let cfg = cfg
                    .as_ref()
                    .ok_or_else(|| anyhow!("a sequence before the boot line"))?;
                let seed: u64 = words.get(1).ok_or_else(|| anyhow!("short line"))?.parse()?;
                let got = hex(words.get(2).ok_or_else(|| anyhow!("short line"))?)?;
                seen += 1;
                if expected(cfg, seed, len) != got {
                    bad.push(seed);
                }
            }
            _ => {}
        }
    }
    if cfg.is_none() {
        bail!("no CAPDIFF boot line in {}", log.display());
    }
    if seen != count {
        bail!("{seen} of {count} sequences reported");
    }
    if !bad.is_empty() {
        bail!(
            "{} of {count} sequences differ from the model (seeds {:?}); reproduce one on the host with \
             capseq::Rng::new(seed) and cap_model::Model",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
    Ok(format!(
        "{count} sequences of {len} operations agree with the model"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[String]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("capdiff-test-{}.log", std::process::id()));
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    #[test]
    fn agreeing_and_differing_digests() {
        let cfg = BootConfig {
            root_addr: 0x4036_8000,
            root_radix: ROOT_RADIX,
            root_guard_bits: ROOT_GUARD_BITS,
            untypeds: vec![(0x6000_0000, UNTYPED_BITS, false)],
        };
        let boot =
            "[capdiff] INFO  CAPDIFF boot root=0x40368000 untyped=0x60000000 sequences=3 length=50"
                .to_string();
        let mut lines = vec![boot];
        for s in 0..3 {
            lines.push(format!(
                "[capdiff] INFO  CAPDIFF seq {s} {:#x}",
                expected(&cfg, s, 50)
            ));
        }
        assert!(compare(&log(&lines)).is_ok());
        lines[2] = "[capdiff] INFO  CAPDIFF seq 1 0x1234".into();
        let e = compare(&log(&lines)).unwrap_err().to_string();
        assert!(e.contains("seeds [1]"), "{e}");
        lines.pop();
        assert!(compare(&log(&lines))
            .unwrap_err()
            .to_string()
            .contains("2 of 3"));
    }
}
