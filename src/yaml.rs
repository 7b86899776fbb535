//! YAML text for cloud-init and Kubernetes: every scalar a YAML 1.1 reader (PyYAML in
//! cloud-init, the k3s manifest loader) could misread (`yes`, `on`, dates, `1_000`) is quoted.

use anyhow::{Context, Result};
use serde::Serialize;

/// Serialise to YAML (YAML 1.1-safe quoting; long lines never folded).
pub fn to_yaml<T: Serialize>(v: &T) -> Result<String> {
    let opts = serde_saphyr::ser_options! {
        folded_wrap_chars: 1_000_000,
    };
    let mut s = serde_saphyr::to_string_with_options(v, opts).context("cannot serialise YAML")?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}
