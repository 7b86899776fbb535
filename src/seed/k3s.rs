//! The k3s `config.yaml` of a node (keys per docs/k3s.md#configuration-file; rules in
//! docs/cluster-file-rules.md).

use crate::config::rules::k3s_flags::{self, Kind};
use crate::config::{endpoint_with_password, Cluster, Datastore, NodeSpec};
use crate::secrets::Secrets;
use anyhow::{Context, Result};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// An insertion-ordered map of k3s keys (readable output: identity first, extras last).
/// `Debug` redacts the token and the datastore endpoint.
#[derive(Clone, Default, PartialEq)]
pub struct K3sConfig(pub Vec<(String, Value)>);

/// Keys whose values are secret.
const SECRET_KEYS: &[&str] = &["token", "agent-token", "datastore-endpoint"];

impl std::fmt::Debug for K3sConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            if SECRET_KEYS.contains(&k.as_str()) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl K3sConfig {
    /// Set `key` (replacing an existing value in place).
    pub fn set(&mut self, key: &str, v: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.0.push((key.to_string(), v)),
        }
    }
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Key names in order.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
    /// Merge a user `[k3s]` table. Repeatable k3s flags (`tls-san`, `node-label`, `node-taint`,
    /// `kubelet-arg`, `disable`, ...; [`k3s_flags::FLAGS`]) are appended to nodeforge's own list
    /// without duplicates, whether the user wrote a list, one string, or (for flags k3s splits
    /// itself) a comma-separated string; other values replace. Unknown keys were refused by
    /// validation; here they are kept as written.
    fn merge(&mut self, t: &toml::Table, server: bool) -> Result<()> {
        for (k, v) in t {
            if let Some(Kind::List { split }) = k3s_flags::lookup(k, server) {
                let items = k3s_flags::list_items(v, split);
                let new: Vec<Value> = items.into_iter().map(Value::String).collect();
                match self.0.iter_mut().find(|(ek, _)| ek == k) {
                    Some((_, Value::Array(old))) => {
                        for x in new {
                            if !old.contains(&x) {
                                old.push(x);
                            }
                        }
                    }
                    _ => self.set(k, Value::Array(new)),
                }
                continue;
            }
            let v = serde_json::to_value(v).with_context(|| format!("k3s key {k}"))?;
            self.set(k, v);
        }
        Ok(())
    }
}

impl Serialize for K3sConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn strs<'a>(it: impl IntoIterator<Item = &'a String>) -> Value {
    let mut v: Vec<Value> = Vec::new();
    for s in it {
        let x = Value::String(s.clone());
        if !v.contains(&x) {
            v.push(x);
        }
    }
    Value::Array(v)
}

/// The taint servers get when the cluster has agents (workloads stay off the control plane).
pub const SERVER_TAINT: &str = "CriticalAddonsOnly=true:NoExecute";

/// The server token in `n`'s config. Servers that join an etcd cluster (every server but the
/// first) get the secure form `K10<root hash>::server:<token>` when the secrets hold the cluster
/// CA, so they check the CA before sending the token, like agents; the first server, and every
/// server of secrets without a CA, keep the short token. Both forms are the same passphrase: k3s
/// reduces a token to its password part before deriving the datastore key and the bootstrap
/// data's encryption key from it (`normalizeToken` in k3s `pkg/cluster/storage.go`), see
/// docs/k3s-trust.md. A token that is already in K10 form is left as it is.
fn server_token(c: &Cluster, n: &NodeSpec, s: &Secrets) -> Result<String> {
    let joins = c.datastore == Datastore::Etcd && !n.first_server;
    match &s.ca {
        Some(ca) if joins && !s.token.starts_with("K10") => {
            ca.secure_token(crate::ca::SERVER_USER, &s.token)
        }
        _ => Ok(s.token.clone()),
    }
}

/// Build `/etc/rancher/k3s/config.yaml` for `n`.
pub fn k3s_config(c: &Cluster, n: &NodeSpec, s: &Secrets) -> Result<K3sConfig> {
    let mut k = K3sConfig::default();
    // Least privilege: only servers carry the cluster token; agents get the agent token, which
    // k3s accepts for agents only (k3s docs/cli/token.md, "Agent"). See docs/k3s-trust.md.
    if n.is_server() {
        k.set("token", Value::String(server_token(c, n, s)?));
        if s.agent_token.is_some() {
            k.set("agent-token", Value::String(s.agent_join_token()?));
        }
    } else {
        k.set("token", Value::String(s.agent_join_token()?));
    }
    let joins = !n.is_server() || (c.datastore == Datastore::Etcd && !n.first_server);
    if joins {
        k.set("server", Value::String(c.server.clone()));
    }
    k.set("node-name", Value::String(n.hostname.clone()));
    if n.is_server() {
        if c.datastore == Datastore::Etcd && n.first_server {
            k.set("cluster-init", Value::Bool(true));
        }
        if let Datastore::Postgres { endpoint } = &c.datastore {
            let pw = s.datastore_password.as_deref().with_context(|| {
                "the datastore is postgres but the secrets file has no `datastore_password`"
            })?;
            k.set(
                "datastore-endpoint",
                Value::String(endpoint_with_password(endpoint, pw)?),
            );
        }
        let mut sans: Vec<String> = Vec::new();
        if let Some(h) = c.server_host() {
            sans.push(h.to_string());
        }
        if let Some(ip) = n.ip() {
            sans.push(ip.to_string());
        }
        if let Some(v) = &c.addons.kube_vip {
            sans.push(v.address.to_string());
        }
        sans.extend(c.tls_san.iter().cloned());
        k.set("tls-san", strs(&sans));
        k.set("write-kubeconfig-mode", Value::String("0600".into()));
        if c.datastore == Datastore::Etcd {
            k.set(
                "etcd-snapshot-schedule-cron",
                Value::String(c.etcd_snapshot_schedule.clone()),
            );
            k.set(
                "etcd-snapshot-retention",
                Value::from(c.etcd_snapshot_retention),
            );
        }
        if c.addons.metallb.is_some() {
            k.set("disable", strs(&["servicelb".to_string()]));
        }
    }
    let mut taints: Vec<String> = Vec::new();
    if n.is_server() && c.has_agents() {
        taints.push(SERVER_TAINT.to_string());
    }
    taints.extend(n.profile.node_taints.iter().cloned());
    taints.extend(n.taints.iter().cloned());
    if !taints.is_empty() {
        k.set("node-taint", strs(&taints));
    }
    let labels: Vec<String> = n
        .profile
        .node_labels
        .iter()
        .chain(&n.labels)
        .cloned()
        .collect();
    if !labels.is_empty() {
        k.set("node-label", strs(&labels));
    }
    k.merge(&n.profile.k3s, n.is_server())?;
    k.merge(&n.k3s_extra, n.is_server())?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let mut k = K3sConfig::default();
        k.set("token", Value::String("sekrit-token".into()));
        k.set(
            "datastore-endpoint",
            Value::String("postgres://u:pw123@h/db".into()),
        );
        k.set("node-name", Value::String("cp1".into()));
        let d = format!("{k:?}");
        assert!(!d.contains("sekrit") && !d.contains("pw123"), "{d}");
        assert!(d.contains("cp1"));
    }
}
