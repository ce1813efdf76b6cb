//! Ordered expectations on decoded output lines.

use anyhow::{anyhow, Result};
use regex::Regex;

/// Regexes that must match decoded lines in order: each is tried only on lines after the
/// line that matched the one before it.
#[derive(Debug)]
pub struct Expect {
    patterns: Vec<Regex>,
    seen: Vec<String>,
}

impl Expect {
    /// Compiles the patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Regex::new(p.as_ref())
                    .map_err(|e| anyhow!("expected pattern #{} is not a valid regex: {e}", i + 1))
            })
            .collect::<Result<_>>()?;
        Ok(Expect {
            patterns,
            seen: Vec::new(),
        })
    }

    /// How many patterns there are.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether every pattern has matched.
    pub fn done(&self) -> bool {
        self.seen.len() == self.patterns.len()
    }

    /// Offers the next output line; returns true when it matched the pattern being waited for.
    pub fn offer(&mut self, line: &str) -> bool {
        match self.patterns.get(self.seen.len()) {
            Some(re) if re.is_match(line) => {
                self.seen.push(line.to_string());
                true
            }
            _ => false,
        }
    }

    /// The first pattern not yet matched: its 1-based number and text.
    pub fn missing(&self) -> Option<(usize, &str)> {
        let i = self.seen.len();
        self.patterns.get(i).map(|re| (i + 1, re.as_str()))
    }

    /// A description of where matching stopped, for failure messages.
    pub fn report(&self) -> String {
        let mut s = match self.missing() {
            Some((k, re)) => format!("pattern #{k} `{re}` never appeared"),
            None => "all patterns appeared".to_string(),
        };
        if self.seen.is_empty() {
            s.push_str(" (no pattern matched)");
        }
        for (i, line) in self.seen.iter().enumerate() {
            s.push_str(&format!(
                "\n  matched #{} `{}`: {line}",
                i + 1,
                self.patterns[i].as_str()
            ));
        }
        s
    }
}

/// Everything a run waits for and watches: ordered patterns on every decoded line;
/// per VM, ordered patterns on that VM's lines (those of its VMM task, `[<vm>] ...`:
/// its guest's console, `<vm>| ...`, and the VMM's own log), each list matched
/// independently of the others (VMs run side by side, so only the lines of one VM are
/// causally ordered); and patterns that no line may match.
#[derive(Debug)]
pub struct Expectations {
    all: Expect,
    consoles: Vec<(String, Expect)>,
    forbid: Vec<Regex>,
}

impl Expectations {
    /// Compiles every pattern; errors name the list and the pattern.
    pub fn new(
        all: &[String],
        consoles: &[(String, Vec<String>)],
        forbid: &[String],
    ) -> Result<Self> {
        let consoles = consoles
            .iter()
            .map(|(vm, p)| {
                Ok((
                    vm.clone(),
                    Expect::new(p).map_err(|e| anyhow!("VM `{vm}`: {e}"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let forbid = forbid
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Regex::new(p)
                    .map_err(|e| anyhow!("forbidden pattern #{} is not a valid regex: {e}", i + 1))
            })
            .collect::<Result<_>>()?;
        Ok(Expectations {
            all: Expect::new(all)?,
            consoles,
            forbid,
        })
    }

    /// Offers a decoded line to every list; `Err` names a forbidden pattern it matched.
    pub fn offer(&mut self, line: &str) -> std::result::Result<(), String> {
        if let Some(re) = self.forbid.iter().find(|re| re.is_match(line)) {
            return Err(format!(
                "forbidden pattern `{}` appeared: {line}",
                re.as_str()
            ));
        }
        self.all.offer(line);
        for (vm, e) in &mut self.consoles {
            if line
                .strip_prefix('[')
                .and_then(|l| l.strip_prefix(vm.as_str()))
                .is_some_and(|l| l.starts_with("] "))
            {
                e.offer(line);
            }
        }
        Ok(())
    }

    /// Whether every list is complete.
    pub fn done(&self) -> bool {
        self.all.done() && self.consoles.iter().all(|(_, e)| e.done())
    }

    /// How many patterns there are in all (forbidden ones aside).
    pub fn len(&self) -> usize {
        self.all.len() + self.consoles.iter().map(|(_, e)| e.len()).sum::<usize>()
    }

    /// Whether there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.consoles.iter().all(|(_, e)| e.is_empty())
    }

    /// Where matching stopped in each list that is not complete.
    pub fn report(&self) -> String {
        let mut parts = Vec::new();
        if !self.all.done() {
            parts.push(self.all.report());
        }
        for (vm, e) in &self.consoles {
            if !e.done() {
                parts.push(format!("VM `{vm}`: {}", e.report()));
            }
        }
        if parts.is_empty() {
            return "all patterns appeared".to_string();
        }
        parts.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_in_order() {
        let mut e = Expect::new(&["boot", r"cores: (\d+)", "done"]).unwrap();
        assert_eq!(e.len(), 3);
        assert!(e.offer("[kernel] INFO  boot"));
        assert!(!e.offer("unrelated"));
        assert!(e.offer("[kernel] INFO  cores: 4"));
        assert!(!e.done());
        assert!(e.offer("done"));
        assert!(e.done());
        assert_eq!(e.missing(), None);
    }

    #[test]
    fn a_later_pattern_seen_first_does_not_count() {
        let mut e = Expect::new(&["first", "second"]).unwrap();
        assert!(!e.offer("second"));
        assert!(e.offer("first"));
        assert_eq!(e.missing(), Some((2, "second")));
        assert!(e.offer("second"));
        assert!(e.done());
    }

    #[test]
    fn one_line_satisfies_one_pattern() {
        let mut e = Expect::new(&["a", "a"]).unwrap();
        assert!(e.offer("a"));
        assert!(!e.done());
        assert!(e.offer("a"));
        assert!(e.done());
    }

    #[test]
    fn report_lists_what_matched() {
        let mut e = Expect::new(&["x", "y"]).unwrap();
        assert!(e
            .report()
            .contains("pattern #1 `x` never appeared (no pattern matched)"));
        e.offer("x here");
        let r = e.report();
        assert!(r.starts_with("pattern #2 `y` never appeared"), "{r}");
        assert!(r.contains("matched #1 `x`: x here"), "{r}");
    }

    #[test]
    fn vms_match_independently() {
        let vms = vec![
            (
                "a".to_string(),
                vec!["a\\| one".to_string(), "two".to_string()],
            ),
            ("b".to_string(), vec!["two".to_string()]),
        ];
        let mut e = Expectations::new(&["end".to_string()], &vms, &[]).unwrap();
        assert_eq!(e.len(), 4);
        // b's line comes before a's: each VM has its own order.
        e.offer("[b] INFO  b| two").unwrap();
        e.offer("[a] INFO  a| two").unwrap();
        assert!(
            e.report().contains("VM `a`: pattern #1 `a\\| one`"),
            "{}",
            e.report()
        );
        e.offer("[a] INFO  a| one").unwrap();
        e.offer("[a] INFO  vmm: two").unwrap();
        e.offer("[kernel c0 1.0] INFO  end").unwrap();
        assert!(e.done());
    }

    #[test]
    fn vm_patterns_see_only_their_vm() {
        let vms = vec![("vm".to_string(), vec!["ok".to_string()])];
        let mut e = Expectations::new(&[], &vms, &[]).unwrap();
        e.offer("[kernel c0 1.0] INFO  task vm: ok").unwrap();
        e.offer("[vm2] INFO  ok").unwrap();
        e.offer("[other] INFO  vm| ok").unwrap();
        assert!(!e.done());
        e.offer("[vm] INFO  vm| ok").unwrap();
        assert!(e.done());
    }

    #[test]
    fn forbidden_lines_fail() {
        let mut e = Expectations::new(&["x".to_string()], &[], &["stopped by a fault".to_string()])
            .unwrap();
        assert!(e.offer("fine").is_ok());
        let err = e.offer("thread 1 stopped by a fault (x)").unwrap_err();
        assert!(
            err.contains("forbidden pattern `stopped by a fault`"),
            "{err}"
        );
        let bad = Expectations::new(&[], &[], &["(".to_string()]).unwrap_err();
        assert!(bad.to_string().contains("forbidden pattern #1"), "{bad}");
    }

    #[test]
    fn bad_regex_is_named() {
        let e = Expect::new(&["ok", "("]).unwrap_err().to_string();
        assert!(e.contains("pattern #2"), "{e}");
    }
}
