//! Lines of the keys and list items of a TOML text, for messages that point at a value.
//!
//! Paths are dotted: `cluster.server`, `nodes.2.labels.0`, `nodes.0.k3s.tls-san`.

use std::collections::BTreeMap;
use toml::de::{DeTable, DeValue};

/// 1-based line of each key path of a TOML document.
#[derive(Clone, Debug, Default)]
pub struct KeyLines(BTreeMap<String, usize>);

impl KeyLines {
    /// Index `text`; a text that does not parse gives an empty index (the parse error is reported
    /// elsewhere).
    pub fn parse(text: &str) -> KeyLines {
        let mut m = BTreeMap::new();
        if let Ok(doc) = DeTable::parse(text) {
            walk_table(text, doc.get_ref(), "", &mut m);
        }
        KeyLines(m)
    }

    /// The line of `path`, else of its closest indexed parent (`nodes.0.labels.7` falls back to
    /// `nodes.0.labels`, then `nodes.0`).
    pub fn get(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.0.get(p) {
                return Some(*l);
            }
            p = p.rsplit_once('.')?.0;
        }
    }
}

fn line_at(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(text: &str, t: &DeTable<'_>, prefix: &str, m: &mut BTreeMap<String, usize>) {
    for (k, v) in t {
        let path = join(prefix, k.get_ref());
        m.entry(path.clone())
            .or_insert_with(|| line_at(text, k.span().start));
        walk_value(text, v.get_ref(), &path, m);
    }
}

fn walk_value(text: &str, v: &DeValue<'_>, path: &str, m: &mut BTreeMap<String, usize>) {
    match v {
        DeValue::Table(t) => walk_table(text, t, path, m),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let p = format!("{path}.{i}");
                m.entry(p.clone())
                    .or_insert_with(|| line_at(text, item.span().start));
                walk_value(text, item.get_ref(), &p, m);
            }
        }
        _ => {}
    }
}
