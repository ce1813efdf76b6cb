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
    fn bad_regex_is_named() {
        let e = Expect::new(&["ok", "("]).unwrap_err().to_string();
        assert!(e.contains("pattern #2"), "{e}");
    }
}
