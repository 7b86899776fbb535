//! The settings of the opt-in add-ons in `cluster.toml` (`[addons.kube-vip]`, `[addons.argocd]`,
//! `[registries]`): part of the cluster model, rendered by the add-ons module.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// `[addons.kube-vip]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeVip {
    /// The virtual IP (IPv4), free, in the servers' subnet.
    pub address: Ipv4Addr,
    /// NIC to announce it on (default: kube-vip picks the interface of the default route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

fn default_revision() -> String {
    "HEAD".into()
}

fn default_path() -> String {
    ".".into()
}

/// `[addons.argocd]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoCd {
    /// Git repository URL (`https://…` or `ssh://…`/`git@…`).
    pub repo: String,
    /// Directory in the repository holding the apps (default `.`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Branch, tag or commit (default `HEAD`).
    #[serde(default = "default_revision")]
    pub revision: String,
}

/// `[registries]` of the cluster file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// Mirrors by registry name (`docker.io`, `registry.lan:5000`, or `*` for every registry).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// TLS settings by registry host (credentials come from the secrets file).
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

/// `[registries.mirrors."<registry>"]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Endpoint URLs (`http://` or `https://`), tried in order.
    pub endpoint: Vec<String>,
    /// Image name rewrites: regular expression → replacement (`$1` …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rewrite: BTreeMap<String, String>,
}

/// `[registries.configs."<host>"]` (without `auth`, which belongs in the secrets file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// `configs.<host>.tls`: paths on the node, and whether to skip verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// CA certificate that signs the registry's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Skip verifying the registry's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

fn default_zot_label() -> String {
    "nodeforge.io/registry=true".into()
}

fn default_zot_size() -> String {
    "20Gi".into()
}

fn default_zot_node_port() -> u16 {
    30500
}

/// Where `[addons.zot]` keeps its images: a PersistentVolumeClaim of this StorageClass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZotStorage {
    /// Longhorn's `longhorn` class (replicated; needs `[addons.longhorn]`).
    Longhorn,
    /// k3s's bundled `local-path` class (a directory on the node that runs Zot).
    LocalPath,
}

/// `[addons.zot]`: a Zot OCI registry, by HelmChart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zot {
    /// Zot runs only on nodes with this label (`key=value`; default
    /// `nodeforge.io/registry=true`, set it in a node's `labels`).
    #[serde(default = "default_zot_label")]
    pub node_label: String,
    /// Volume kind (`longhorn` or `local-path`).
    pub storage: ZotStorage,
    /// Volume size, a Kubernetes quantity (default `20Gi`).
    #[serde(default = "default_zot_size")]
    pub size: String,
    /// NodePort of the registry on every node (default 30500, in k3s's 30000-32767 range).
    #[serde(default = "default_zot_node_port")]
    pub node_port: u16,
}
