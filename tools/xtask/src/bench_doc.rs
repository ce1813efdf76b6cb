//! The recorded results in `docs/benchmarks.md`: a generated block between two marker
//! comments, holding a table of the groups recorded (date, command, machine) and a table
//! of the figures, each beside the value it replaced. `cargo xtask bench` reads the block
//! back to show the recorded value beside each new one; `--record` rewrites it and leaves
//! the rest of the document alone.

use std::fmt::Write as _;

/// Opens the generated block.
pub const BEGIN: &str = "<!-- bench:results:begin -->";
/// Closes the generated block.
pub const END: &str = "<!-- bench:results:end -->";
/// An empty cell.
pub const NONE: &str = "—";
/// The value of a row no run has measured yet.
pub const NOT_MEASURED: &str = "not yet measured";

/// When and how a group's figures were recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group (`ipc`, `stage2`).
    pub group: String,
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// The command that recorded them.
    pub command: String,
    /// What they were measured on.
    pub machine: String,
    /// What the run said about its own figures (disturbed, too few CPUs), or `—`.
    pub notes: String,
}

/// One row of the figures table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The benchmark's name (the first `code` span of the first cell).
    pub name: String,
    /// The first cell as shown: `` `name`: what it measures ``.
    pub label: String,
    /// The recorded value, as shown.
    pub value: String,
    /// The value it replaced.
    pub previous: String,
    /// Its unit, as shown.
    pub unit: String,
    /// A reference figure to compare with.
    pub reference: String,
    /// What the project aims for.
    pub target: String,
}

/// The whole generated block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// One entry per group ever recorded.
    pub groups: Vec<GroupRecord>,
    /// The figures, in table order.
    pub rows: Vec<Row>,
}

impl Recorded {
    /// The row of benchmark `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The recorded value of `name`, if one was measured.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.row(name)
            .map(|r| r.value.as_str())
            .filter(|v| !v.is_empty() && *v != NONE && *v != NOT_MEASURED)
    }
}

/// What the current catalog says about a row (everything but its value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The benchmark's name.
    pub name: String,
    /// Its first cell.
    pub label: String,
    /// Its unit, as shown.
    pub unit: String,
    /// The reference figure.
    pub reference: String,
    /// The target.
    pub target: String,
}

/// The text between the markers, `None` when the document has no (well-formed) block.
fn block(doc: &str) -> Option<(usize, usize)> {
    let start = doc.find(BEGIN)? + BEGIN.len();
    let end = start + doc[start..].find(END)?;
    Some((start, end))
}

fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

fn is_separator(cells: &[String]) -> bool {
    cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')))
}

/// The first `code` span of `s`, or all of `s` without backticks.
fn code(s: &str) -> String {
    let mut parts = s.split('`');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(inner), Some(_)) => inner.to_string(),
        _ => s.replace('`', ""),
    }
}

/// Reads the generated block back (empty when there is none).
pub fn parse(doc: &str) -> Recorded {
    let mut rec = Recorded::default();
    let Some((start, end)) = block(doc) else {
        return rec;
    };
    // The columns of the table being read, from its header.
    let mut header: Vec<String> = Vec::new();
    for line in doc[start..end].lines() {
        let Some(c) = cells(line) else {
            header.clear();
            continue;
        };
        if is_separator(&c) {
            continue;
        }
        if matches!(c[0].as_str(), "group" | "benchmark") {
            header = c;
            continue;
        }
        let get = |col: &str| {
            header
                .iter()
                .position(|h| h == col)
                .and_then(|i| c.get(i))
                .cloned()
                .unwrap_or_else(|| NONE.to_string())
        };
        match header.first().map(String::as_str) {
            Some("group") => rec.groups.push(GroupRecord {
                group: code(&c[0]),
                date: get("recorded"),
                command: code(&get("command")),
                machine: get("machine"),
                notes: get("notes"),
            }),
            Some("benchmark") => rec.rows.push(Row {
                name: code(&c[0]),
                label: c[0].clone(),
                value: get("value"),
                previous: get("previous"),
                unit: get("unit"),
                reference: get("reference"),
                target: get("target"),
            }),
            _ => {}
        }
    }
    rec
}

/// The new record: every row of `specs` (in that order) then any recorded row the
/// catalog no longer knows; a row in `fresh` (name, value, unit) takes the new value and
/// keeps the old one as `previous`, any other keeps what was recorded. `ran` replaces
/// (or adds) the records of the groups measured.
pub fn update(
    old: &Recorded,
    specs: &[Spec],
    fresh: &[(String, String, String)],
    ran: &[GroupRecord],
) -> Recorded {
    let fresh_of = |name: &str| fresh.iter().find(|f| f.0 == name);
    let renew = |mut row: Row| {
        if let Some((_, value, unit)) = fresh_of(&row.name) {
            row.previous = std::mem::replace(&mut row.value, value.clone());
            if row.previous.is_empty() || row.previous == NOT_MEASURED {
                row.previous = NONE.to_string();
            }
            row.unit = unit.clone();
        }
        row
    };
    let mut rows: Vec<Row> = specs
        .iter()
        .map(|s| {
            let recorded = old.row(&s.name);
            renew(Row {
                name: s.name.clone(),
                label: s.label.clone(),
                value: recorded.map_or(NOT_MEASURED.to_string(), |r| r.value.clone()),
                previous: recorded.map_or(NONE.to_string(), |r| r.previous.clone()),
                unit: recorded.map_or(s.unit.clone(), |r| r.unit.clone()),
                reference: s.reference.clone(),
                target: s.target.clone(),
            })
        })
        .collect();
    for r in &old.rows {
        if !specs.iter().any(|s| s.name == r.name) {
            rows.push(renew(r.clone()));
        }
    }
    let mut groups = old.groups.clone();
    for g in ran {
        match groups.iter_mut().find(|o| o.group == g.group) {
            Some(o) => *o = g.clone(),
            None => groups.push(g.clone()),
        }
    }
    Recorded { groups, rows }
}

/// Renders the block's content (what goes between the markers).
pub fn render(rec: &Recorded) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "<!-- Written by `cargo xtask bench --record`; edits between the markers are lost. -->"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| group | recorded | command | machine | notes |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for g in &rec.groups {
        let _ = writeln!(
            s,
            "| `{}` | {} | `{}` | {} | {} |",
            g.group, g.date, g.command, g.machine, g.notes
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| benchmark | value | previous | unit | reference | target |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in &rec.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.label, r.value, r.previous, r.unit, r.reference, r.target
        );
    }
    s
}

/// `doc` with its block replaced by `content`; a document without one gets the block,
/// under a heading of its own, at its end.
pub fn splice(doc: &str, content: &str) -> String {
    match block(doc) {
        Some((start, end)) => format!("{}{content}{}", &doc[..start], &doc[end..]),
        None => {
            let sep = if doc.ends_with('\n') || doc.is_empty() {
                ""
            } else {
                "\n"
            };
            format!("{doc}{sep}\n## Recorded results\n\n{BEGIN}{content}{END}\n")
        }
    }
}

/// `YYYY-MM-DD` of the day `days` after 1970-01-01 (proleptic Gregorian).
pub fn date(days: i64) -> String {
    // Count from 0000-03-01 so that the leap day ends a year; 146097 days make 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // day of the era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of the era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Today (UTC).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    date(i64::try_from(secs / 86_400).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, what: &str, unit: &str) -> Spec {
        Spec {
            name: name.into(),
            label: format!("`{name}`: {what}"),
            unit: unit.into(),
            reference: NONE.into(),
            target: NONE.into(),
        }
    }

    fn fresh(name: &str, value: &str, unit: &str) -> (String, String, String) {
        (name.into(), value.into(), unit.into())
    }

    fn group(g: &str, date: &str) -> GroupRecord {
        GroupRecord {
            group: g.into(),
            date: date.into(),
            command: format!("cargo xtask bench {g} --record"),
            machine: "test box, 2 CPUs".into(),
            notes: NONE.into(),
        }
    }

    const DOC: &str = "# Benchmarks\n\nProse before.\n\n<!-- bench:results:begin -->\n\
        <!-- note -->\n\n\
        | group | recorded | command | machine |\n|---|---|---|---|\n\
        | `ipc` | 2024-01-02 | `cargo xtask bench --record` | QEMU 7.2 |\n\n\
        | benchmark | value | previous | unit | reference | target |\n\
        |---|---|---|---|---|---|\n\
        | `syscall-null`: an unknown syscall | 317 | 417 | instructions | — | — |\n\
        | `ipc-roundtrip-4`: Call + ReplyRecv | 1289 | 1491 | instructions | seL4 532 | ≤ 480 |\n\
        | `old-bench`: gone from the catalog | 12 | — | instructions | — | — |\n\
        <!-- bench:results:end -->\n\nProse after.\n";

    #[test]
    fn parses_the_block() {
        let rec = parse(DOC);
        assert_eq!(rec.groups.len(), 1);
        assert_eq!(rec.groups[0].group, "ipc");
        assert_eq!(rec.groups[0].date, "2024-01-02");
        assert_eq!(rec.groups[0].command, "cargo xtask bench --record");
        // A table from before the notes column: the cell reads as empty.
        assert_eq!(rec.groups[0].notes, NONE);
        assert_eq!(rec.rows.len(), 3);
        let r = rec.row("ipc-roundtrip-4").unwrap();
        assert_eq!((r.value.as_str(), r.previous.as_str()), ("1289", "1491"));
        assert_eq!(r.target, "≤ 480");
        assert_eq!(rec.value("syscall-null"), Some("317"));
        assert_eq!(rec.value("nothing"), None);
    }

    #[test]
    fn no_block_reads_as_empty() {
        assert_eq!(parse("# Benchmarks\n| `a` | 1 |\n"), Recorded::default());
        // A begin marker without an end is no block either.
        assert_eq!(
            parse(&format!("{BEGIN}\n| benchmark | value |\n")),
            Recorded::default()
        );
    }

    #[test]
    fn update_moves_the_old_value_to_previous() {
        let old = parse(DOC);
        let specs = [
            spec("syscall-null", "an unknown syscall", "instructions"),
            spec("ipc-roundtrip-4", "Call + ReplyRecv", "instructions"),
            spec("stage2-host-lockfree-1t", "host walker", "faults/s"),
            spec("stage2-fault-kernel", "in-kernel fault", "instructions"),
        ];
        let new = update(
            &old,
            &specs,
            &[
                fresh("stage2-host-lockfree-1t", "128.7 M", "faults/s"),
                fresh("syscall-null", "300", "instructions"),
            ],
            &[group("stage2", "2024-02-03")],
        );
        let row = |n: &str| new.row(n).unwrap();
        // Measured again: the old value becomes the previous one.
        assert_eq!(
            (
                row("syscall-null").value.as_str(),
                row("syscall-null").previous.as_str()
            ),
            ("300", "317")
        );
        // Not measured this time: kept as it was, previous included.
        assert_eq!(row("ipc-roundtrip-4").value, "1289");
        assert_eq!(row("ipc-roundtrip-4").previous, "1491");
        // First measurement: nothing before it.
        assert_eq!(row("stage2-host-lockfree-1t").value, "128.7 M");
        assert_eq!(row("stage2-host-lockfree-1t").previous, NONE);
        // Never measured: a placeholder.
        assert_eq!(row("stage2-fault-kernel").value, NOT_MEASURED);
        assert_eq!(new.value("stage2-fault-kernel"), None);
        // A row the catalog dropped is kept, after the catalog's rows.
        assert_eq!(new.rows.last().unwrap().name, "old-bench");
        assert_eq!(new.rows.len(), 5);
        // Group records: the old one kept, the new one added.
        assert_eq!(new.groups.len(), 2);
        assert_eq!(new.groups[1].date, "2024-02-03");
        let again = update(&new, &specs, &[], &[group("stage2", "2024-03-04")]);
        assert_eq!(again.groups.len(), 2);
        assert_eq!(again.groups[1].date, "2024-03-04");
    }

    #[test]
    fn render_then_parse_round_trips_and_keeps_the_prose() {
        let old = parse(DOC);
        let specs = [spec("syscall-null", "an unknown syscall", "instructions")];
        let new = update(
            &old,
            &specs,
            &[fresh("syscall-null", "300", "instructions")],
            &[group("ipc", "2024-02-03")],
        );
        let doc = splice(DOC, &render(&new));
        assert!(doc.starts_with("# Benchmarks\n\nProse before.\n\n<!-- bench:results:begin -->"));
        assert!(doc.ends_with("<!-- bench:results:end -->\n\nProse after.\n"));
        assert_eq!(doc.matches(BEGIN).count(), 1);
        assert_eq!(parse(&doc), new);
        // Recording twice in a row: the value just recorded becomes the previous one.
        let newer = update(
            &parse(&doc),
            &specs,
            &[fresh("syscall-null", "290", "instructions")],
            &[group("ipc", "2024-02-04")],
        );
        assert_eq!(newer.row("syscall-null").unwrap().previous, "300");
    }

    #[test]
    fn splice_appends_a_block_to_a_document_without_one() {
        let rec = update(
            &Recorded::default(),
            &[spec("a", "x", "CPUs")],
            &[fresh("a", "2", "CPUs")],
            &[group("stage2", "2024-01-01")],
        );
        let doc = splice("# Benchmarks\n\nProse.", &render(&rec));
        assert!(doc.starts_with("# Benchmarks\n\nProse.\n\n## Recorded results\n\n"));
        assert_eq!(parse(&doc), rec);
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(11_017), "2000-03-01");
        assert_eq!(date(19_782), "2024-02-29");
        assert_eq!(date(20_089), "2025-01-01");
    }
}
