//! DNS names: RFC 1123 labels (host names, Kubernetes node names) and dotted names (`domain`).

use super::{Checked, Rule, Violation};

/// A node's host name, which is also its Kubernetes node name.
pub static HOSTNAME: Rule = Rule {
    name: "rfc1123-hostname",
    summary: "one DNS label: 1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit (lower case: Kubernetes node names are lower case)",
    source: "RFC 1123 section 2.1; Kubernetes IsDNS1123Label (k8s.io/apimachinery/pkg/util/validation)",
};

/// `cluster.domain`.
pub static DOMAIN: Rule = Rule {
    name: "rfc1123-domain",
    summary: "dot-separated DNS labels (each 1-63 of letters, digits and '-', not starting or ending with '-'), at most 253 characters in all",
    source: "RFC 1123 section 2.1 and RFC 1035 section 2.3.4",
};

/// True for one RFC 1123 label of any case: 1-63 of `[A-Za-z0-9-]`, alphanumeric at both ends.
pub fn is_label_any_case(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// True for a lower-case RFC 1123 label (Kubernetes `IsDNS1123Label`).
pub fn is_label(s: &str) -> bool {
    is_label_any_case(s) && !s.bytes().any(|c| c.is_ascii_uppercase())
}

/// True for a dotted DNS name of labels (`lower` = lower case only), ≤ 253 characters.
pub fn is_name(s: &str, lower: bool) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            if lower {
                is_label(l)
            } else {
                is_label_any_case(l)
            }
        })
}

/// Check a node host name ([`HOSTNAME`]).
pub fn hostname(s: &str) -> Checked {
    if is_label(s) {
        return Ok(());
    }
    let why = if s.is_empty() {
        "is empty".to_string()
    } else if s.len() > 63 {
        format!("has {} characters (at most 63)", s.len())
    } else if s.contains('.') {
        "holds a '.': give the short name and put the rest in `cluster.domain`".to_string()
    } else if s.bytes().any(|c| c.is_ascii_uppercase()) {
        "has upper-case letters".to_string()
    } else if s.starts_with('-') || s.ends_with('-') {
        "starts or ends with '-'".to_string()
    } else {
        "holds characters other than a-z, 0-9 and '-'".to_string()
    };
    Err(Violation::new(&HOSTNAME, format!("host name {s:?} {why}")))
}

/// Check `cluster.domain` ([`DOMAIN`]).
pub fn domain(s: &str) -> Checked {
    if is_name(s, false) {
        return Ok(());
    }
    let why = if s.len() > 253 {
        format!("has {} characters (at most 253)", s.len())
    } else if let Some(l) = s.split('.').find(|l| !is_label_any_case(l)) {
        format!("has the invalid label {l:?}")
    } else {
        "is empty".to_string()
    };
    Err(Violation::new(&DOMAIN, format!("domain {s:?} {why}")))
}
