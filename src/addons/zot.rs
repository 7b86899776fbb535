//! `[addons.zot]`: a Zot OCI registry (project-zot/helm-charts, chart `zot`, pinned in
//! `overlays/charts.toml`) on the nodes carrying `node_label`, its images on a
//! PersistentVolumeClaim of the `longhorn` or `local-path` StorageClass, reachable on every node
//! at NodePort `node_port`. containerd on a node does not resolve cluster Service names, so a
//! `[registries]` mirror points at `http://<a node's address>:<node_port>` (docs/addons.md#zot).

use crate::config::Cluster;
pub use crate::config::{Zot, ZotStorage};
use crate::yaml::to_yaml;
use anyhow::{bail, Result};
use serde_json::json;

/// Pin name in `overlays/charts.toml`.
pub const CHART: &str = "zot";
/// Namespace Zot runs in.
pub const NAMESPACE: &str = "zot";
/// Manifest file name on servers.
pub const FILE: &str = "zot.yaml";
/// The port Zot listens on inside the pod and the Service port (the chart's default).
pub const PORT: u16 = 5000;

impl ZotStorage {
    /// The StorageClass name: `longhorn` (created by the Longhorn chart) or `local-path` (k3s's
    /// bundled local-path-provisioner).
    pub fn class(self) -> &'static str {
        match self {
            ZotStorage::Longhorn => "longhorn",
            ZotStorage::LocalPath => "local-path",
        }
    }
}

/// `(key, value)` of a `key=value` label. Errors: no `=` or an empty key.
fn split_label(l: &str) -> Result<(&str, &str)> {
    match l.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("[addons.zot] node_label {l:?} is not key=value"),
    }
}

/// The Zot HelmChart (one YAML document). Same input → same bytes.
///
/// Errors: `node_label` is not `key=value`; `node_port` is outside 30000-32767 (k3s's default
/// NodePort range); `storage = "longhorn"` without `[addons.longhorn]`; `size` is empty.
pub fn manifest(c: &Cluster, z: &Zot) -> Result<String> {
    let (key, value) = split_label(&z.node_label)?;
    if !(30000..=32767).contains(&z.node_port) {
        bail!(
            "[addons.zot] node_port {} is outside Kubernetes's NodePort range 30000-32767",
            z.node_port
        );
    }
    if z.storage == ZotStorage::Longhorn && c.addons.longhorn.is_none() {
        bail!("[addons.zot] storage = \"longhorn\" needs [addons.longhorn] (or use storage = \"local-path\")");
    }
    if z.size.trim().is_empty() {
        bail!("[addons.zot] size is empty (a Kubernetes quantity such as \"20Gi\")");
    }
    // Keys of the chart's values.yaml (project-zot/helm-charts charts/zot/values.yaml).
    let values = json!({
        "service": { "type": "NodePort", "port": PORT, "nodePort": z.node_port },
        "persistence": true,
        "pvc": {
            "create": true,
            "accessModes": ["ReadWriteOnce"],
            "storage": z.size,
            "storageClassName": z.storage.class(),
        },
        "nodeSelector": { key: value },
    });
    let chart = super::charts::helm_chart(CHART, NAMESPACE, true, Some(&to_yaml(&values)?))?;
    Ok(format!(
        "# Zot registry (add-on `zot`) on nodes labelled {}, images on a {} volume, NodePort {}.\n{chart}",
        z.node_label,
        z.storage.class(),
        z.node_port
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_split() {
        assert_eq!(split_label("a/b=c").unwrap(), ("a/b", "c"));
        assert!(split_label("nolabel").is_err());
        assert!(split_label("=x").is_err());
    }
}
