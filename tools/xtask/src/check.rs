//! `cargo xtask check SYSTEM`: the isolation analysis of `cap_model::isolation` applied to a
//! system description. `build` (and so `run` and `test`) refuses a system that fails it.

use anyhow::{bail, Result};
use bulkhead_sys::cap::rights::{ALL, GRANT, READ, WRITE};
use cap_model::isolation::{ObjectKind, Report, Rights, Spec};

use crate::setup::shown;
use crate::system::{ChannelKind, System};

/// Rights bits from a checked rights string.
fn rights(letters: &str) -> Rights {
    letters.chars().fold(0, |acc, c| {
        acc | match c {
            'r' => READ,
            'w' => WRITE,
            'g' => GRANT,
            _ => 0,
        }
    })
}

/// The analysis input for a description: each partition holds every right on its own
/// implicit objects (`cspace`, `memory`, `<task>.tcb`), each side of a channel holds the
/// rights the channel declares, and each `[[grant]]` adds a cap.
pub fn spec(system: &System) -> Result<Spec> {
    let mut spec = Spec::new();
    for p in &system.partitions {
        let id = spec.add_partition(&p.name)?;
        for name in p.implicit_objects() {
            let kind = match name.as_str() {
                "cspace" => ObjectKind::CNode,
                "memory" => ObjectKind::Untyped,
                _ => ObjectKind::Tcb,
            };
            let o = spec.add_object(id, &name, kind)?;
            spec.give(id, o, ALL)?;
        }
    }
    let find = |spec: &Spec, name: &str| {
        spec.partition(name)
            .ok_or_else(|| anyhow::anyhow!("unknown partition `{name}`"))
    };
    for c in &system.channels {
        let a = find(&spec, &c.between[0])?;
        let b = find(&spec, &c.between[1])?;
        let kind = match c.kind {
            ChannelKind::Endpoint => ObjectKind::Endpoint,
            ChannelKind::Notification => ObjectKind::Notification,
            ChannelKind::Memory => ObjectKind::Memory,
        };
        let o = spec.add_object(a, &c.name, kind)?;
        let declared = [rights(&c.rights[0]), rights(&c.rights[1])];
        spec.add_channel([a, b], &[o], declared)?;
        spec.give(a, o, declared[0])?;
        spec.give(b, o, declared[1])?;
    }
    for g in &system.grants {
        let holder = find(&spec, &g.partition)?;
        let owner = find(&spec, &g.owner)?;
        let Some(o) = spec.object(owner, &g.object) else {
            bail!("unknown object `{}.{}`", g.owner, g.object);
        };
        spec.give(holder, o, rights(&g.rights))?;
    }
    Ok(spec)
}

/// Analyses a description.
pub fn analyse(system: &System) -> Result<Report> {
    Ok(spec(system)?.analyse())
}

/// The human-readable report: partitions, channels, grants and the verdict.
pub fn render(system: &System, report: &Report) -> String {
    let mut out = format!("system {}\npartitions:\n", shown(&system.path));
    for p in &system.partitions {
        let implicit = if system.implicit_partition {
            " (implicit: no [[partition]] declared)"
        } else {
            ""
        };
        let tasks = if p.tasks.is_empty() {
            "no tasks".to_string()
        } else {
            format!("tasks {}", p.tasks.join(", "))
        };
        out += &format!("  {}: {tasks}{implicit}\n", p.name);
    }
    if system.channels.is_empty() {
        out += "channels: none\n";
    } else {
        out += "channels:\n";
    }
    for c in &system.channels {
        let kind = match c.kind {
            ChannelKind::Endpoint => "endpoint",
            ChannelKind::Notification => "notification",
            ChannelKind::Memory => "memory",
        };
        let [a, b] = &c.between;
        let [ra, rb] = &c.rights;
        out += &format!(
            "  {}: {kind} {a} <-> {b} ({a}: {}, {b}: {})\n",
            c.name,
            letters(ra),
            letters(rb)
        );
    }
    for g in &system.grants {
        out += &format!(
            "grant: {} gets {} on {}.{}\n",
            g.partition,
            letters(&g.rights),
            g.owner,
            g.object
        );
    }
    if report.is_isolated() {
        out += &format!(
            "verdict: isolated ({} caps after closure, no violation)\n",
            report.caps_after_closure
        );
    } else {
        out += &format!(
            "verdict: NOT isolated: {} violation(s)\n",
            report.violations.len()
        );
        for v in &report.violations {
            out += &format!("  violation: {v}\n");
        }
    }
    out
}

fn letters(r: &str) -> &str {
    if r.is_empty() {
        "-"
    } else {
        r
    }
}

/// `cargo xtask check`: prints the report; true when the system is isolated.
pub fn check(system: &System) -> Result<bool> {
    let report = analyse(system)?;
    print!("{}", render(system, &report));
    Ok(report.is_isolated())
}

/// Fails with the report when the system is not isolated (for `build`).
pub fn refuse_leaky(system: &System) -> Result<()> {
    let report = analyse(system)?;
    if report.is_isolated() {
        return Ok(());
    }
    bail!(
        "refusing to build {}: it is not isolated (see `cargo xtask check`)\n{}",
        shown(&system.path),
        render(system, &report).trim_end()
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::system;

    fn load(text: &str) -> System {
        system::parse(Path::new("systems/t.toml"), text).unwrap()
    }

    const TWO: &str = "[[task]]\nname = \"ta\"\nbinary = \"init\"\n\
        [[task]]\nname = \"tb\"\nbinary = \"init\"\n\
        [[partition]]\nname = \"a\"\ntasks = [\"ta\"]\n\
        [[partition]]\nname = \"b\"\ntasks = [\"tb\"]\n";

    #[test]
    fn v0_is_one_isolated_partition() {
        let s = load("[[task]]\nname = \"init\"\nbinary = \"init\"\n");
        let r = analyse(&s).unwrap();
        assert!(r.is_isolated());
        let text = render(&s, &r);
        assert!(text.contains("system: tasks init (implicit"), "{text}");
        assert!(text.contains("verdict: isolated"), "{text}");
    }

    #[test]
    fn clean_channel_passes() {
        let s = load(&format!(
            "{TWO}[[channel]]\nname = \"ab\"\nbetween = [\"a\", \"b\"]\nkind = \"endpoint\"\n"
        ));
        let r = analyse(&s).unwrap();
        assert!(r.is_isolated(), "{r:?}");
        assert!(refuse_leaky(&s).is_ok());
        let text = render(&s, &r);
        assert!(
            text.contains("ab: endpoint a <-> b (a: rw, b: rw)"),
            "{text}"
        );
    }

    #[test]
    fn grant_on_both_sides_leaks() {
        let s = load(&format!(
            "{TWO}[[channel]]\nname = \"ab\"\nbetween = [\"a\", \"b\"]\nkind = \"endpoint\"\n\
             rights = {{ a = \"rwg\", b = \"rwg\" }}\n"
        ));
        let e = format!("{:#}", refuse_leaky(&s).unwrap_err());
        assert!(e.contains("refusing to build systems/t.toml"), "{e}");
        assert!(
            e.contains("partition `b` holds rwgp on untyped `a.memory`: granted a -> b via `a.ab`"),
            "{e}"
        );
    }

    #[test]
    fn direct_grant_is_initial() {
        let s = load(&format!(
            "{TWO}[[grant]]\npartition = \"b\"\nobject = \"a.ta.tcb\"\nrights = \"r\"\n"
        ));
        let r = analyse(&s).unwrap();
        let text = render(&s, &r);
        assert!(text.contains("grant: b gets r on a.ta.tcb"), "{text}");
        assert!(
            text.contains("partition `b` holds r on tcb `a.ta.tcb`: initial distribution"),
            "{text}"
        );
    }
}
