//! Kubernetes node labels and taints, as the kubelet checks `--node-labels` and
//! `--register-with-taints` (what k3s passes `node-label` and `node-taint` on as).

use super::dns::is_name;
use super::{Checked, Rule, Violation};

/// A label or taint key.
pub static QUALIFIED_NAME: Rule = Rule {
    name: "k8s-qualified-name",
    summary: "[PREFIX/]NAME: PREFIX an optional lower-case DNS subdomain of at most 253 characters, NAME 1-63 of [A-Za-z0-9._-] starting and ending with a letter or digit",
    source: "k8s.io/apimachinery/pkg/util/validation IsQualifiedName",
};

/// A label or taint value.
pub static LABEL_VALUE: Rule = Rule {
    name: "k8s-label-value",
    summary: "empty, or 1-63 of [A-Za-z0-9._-] starting and ending with a letter or digit",
    source: "k8s.io/apimachinery/pkg/util/validation IsValidLabelValue",
};

/// A node label's form and namespace.
pub static NODE_LABEL: Rule = Rule {
    name: "k8s-node-label",
    summary: "KEY=VALUE; keys in the kubernetes.io / k8s.io namespaces (matched by whole DNS labels) only under kubelet.kubernetes.io, node.kubernetes.io or the kubelet's allowed keys",
    source: "kubelet --node-labels (kubernetes.io docs, kubelet command-line reference); k8s.io/kubelet well_known_labels.go",
};

/// A node taint.
pub static NODE_TAINT: Rule = Rule {
    name: "k8s-node-taint",
    summary: "KEY[=VALUE]:EFFECT with EFFECT one of NoSchedule, PreferNoSchedule, NoExecute",
    source:
        "kubelet --register-with-taints; k8s.io/api core/v1 TaintEffect; kubectl taint (ParseTaint)",
};

/// Keys in the kubernetes.io/k8s.io namespaces a kubelet may set on its own node.
pub const KUBELET_ALLOWED_KEYS: &[&str] = &[
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Namespaces (and their subdomains) a kubelet may use freely.
pub const KUBELET_ALLOWED_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// True when DNS name `name` is `ns` or a subdomain of it, matched by whole labels
/// (`notk8s.io` is not in `k8s.io`).
pub fn in_namespace(name: &str, ns: &str) -> bool {
    name == ns
        || name
            .strip_suffix(ns)
            .is_some_and(|head| head.ends_with('.'))
}

/// True for a name part: 1-63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Check a label or taint key ([`QUALIFIED_NAME`]); `what` names the value in messages.
pub fn qualified_name(key: &str, what: &str) -> Checked {
    let bad = |d: String| {
        Err(Violation::new(
            &QUALIFIED_NAME,
            format!("{what}: key {key:?} {d}"),
        ))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return bad("has an empty prefix before '/'".into());
        }
        if p.len() > 253 || !is_name(p, true) {
            return bad(format!(
                "has the prefix {p:?}, which is not a lower-case DNS subdomain of at most 253 characters"
            ));
        }
    }
    if name.is_empty() {
        return bad("has an empty name".into());
    }
    if name.len() > 63 {
        return bad(format!(
            "has a name of {} characters (at most 63)",
            name.len()
        ));
    }
    if name.contains('/') {
        return bad("has more than one '/'".into());
    }
    if !is_name_part(name) {
        return bad(
            "has a name with characters other than A-Z, a-z, 0-9, '-', '_', '.' or not starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// Check a label or taint value ([`LABEL_VALUE`]).
pub fn label_value(v: &str, what: &str) -> Checked {
    if v.is_empty() || is_name_part(v) {
        return Ok(());
    }
    let why = if v.len() > 63 {
        format!("has {} characters (at most 63)", v.len())
    } else {
        "must be 63 or fewer of A-Z, a-z, 0-9, '-', '_', '.', starting and ending with a letter or digit".into()
    };
    Err(Violation::new(
        &LABEL_VALUE,
        format!("{what}: value {v:?} {why}"),
    ))
}

/// Check a node label `KEY=VALUE` ([`NODE_LABEL`], [`QUALIFIED_NAME`], [`LABEL_VALUE`]).
pub fn node_label(l: &str) -> Checked {
    let what = format!("label {l:?}");
    let Some((key, value)) = l.split_once('=') else {
        return Err(Violation::new(
            &NODE_LABEL,
            format!("{what} must be KEY=VALUE"),
        ));
    };
    qualified_name(key, &what)?;
    label_value(value, &what)?;
    if let Some((prefix, _)) = key.split_once('/') {
        let restricted = in_namespace(prefix, "kubernetes.io") || in_namespace(prefix, "k8s.io");
        let allowed = KUBELET_ALLOWED_KEYS.contains(&key)
            || KUBELET_ALLOWED_NAMESPACES
                .iter()
                .any(|ns| in_namespace(prefix, ns));
        if restricted && !allowed {
            return Err(Violation::new(
                &NODE_LABEL,
                format!(
                    "{what}: the kubelet refuses to set labels in the kubernetes.io/k8s.io namespaces except under {} or the keys {}",
                    KUBELET_ALLOWED_NAMESPACES.join(", "),
                    KUBELET_ALLOWED_KEYS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Check a node taint `KEY[=VALUE]:EFFECT` ([`NODE_TAINT`], [`QUALIFIED_NAME`], [`LABEL_VALUE`]).
pub fn node_taint(t: &str) -> Checked {
    let what = format!("taint {t:?}");
    let Some((kv, effect)) = t.rsplit_once(':') else {
        return Err(Violation::new(
            &NODE_TAINT,
            format!("{what} must be KEY=VALUE:EFFECT or KEY:EFFECT"),
        ));
    };
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(Violation::new(
            &NODE_TAINT,
            format!("{what}: effect {effect:?} must be NoSchedule, PreferNoSchedule or NoExecute"),
        ));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    qualified_name(key, &what)?;
    label_value(value, &what)?;
    Ok(())
}
