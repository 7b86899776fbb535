//! The rules of the programs that consume `cluster.toml` values, one function per value kind.
//!
//! Each check is pure (`&str` in, `Result` out) and names the [`Rule`] it enforces: a short name,
//! the rule in one line, and its upstream source. `docs/cluster-file-rules.md` lists the same
//! facts for users. Validation (`super::validate`) applies these to a resolved cluster.

pub mod dns;
pub mod host;
pub mod k3s_flags;
pub mod k8s;
pub mod net;
pub mod users;

use std::fmt;

/// A consumer's rule: `name` (stable, shown in messages and `check --json`), `summary` (the rule in
/// one line) and `source` (where the consumer documents or implements it).
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable short name, e.g. `k8s-label-value`.
    pub name: &'static str,
    /// The rule in one line.
    pub summary: &'static str,
    /// The upstream source of the rule.
    pub source: &'static str,
}

/// A value that breaks a [`Rule`]: the rule and what exactly is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: &'static Rule,
    /// What is wrong with this value.
    pub detail: String,
}

impl Violation {
    /// A violation of `rule` described by `detail`.
    pub fn new(rule: &'static Rule, detail: impl Into<String>) -> Violation {
        Violation {
            rule,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [rule {}: {}; source: {}]",
            self.detail, self.rule.name, self.rule.summary, self.rule.source
        )
    }
}

/// Result of a rule check.
pub type Checked<T = ()> = Result<T, Violation>;
