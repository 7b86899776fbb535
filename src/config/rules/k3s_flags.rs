//! The k3s flags a `[k3s]` table (node or profile) may set in `/etc/rancher/k3s/config.yaml`.
//!
//! One table, read from the k3s documentation pages `cli/server.md` and `cli/agent.md`
//! (github.com/k3s-io/docs, the flag tables and the "CLI Help" blocks) and the k3s sources
//! `pkg/cli/cmds/{server,agent}.go`, for k3s v1.33 (the version nodeforge pins). A config-file key
//! is the flag name without `--` (k3s docs installation/configuration, "Configuration File").
//! Servers also run an agent, so every agent flag is a server flag too.

use super::{Checked, Rule, Violation};

/// A `[k3s]` key.
pub static K3S_FLAG: Rule = Rule {
    name: "k3s-flag",
    summary: "a key of the [k3s] table is a k3s flag of the node's role (server or agent) without the leading --, with a value of the flag's kind",
    source: "k3s docs cli/server.md and cli/agent.md (k3s v1.33); k3s docs installation/configuration (config file keys)",
};

/// Which subcommands take a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    /// `k3s server` and `k3s agent`.
    Both,
    /// `k3s server` only.
    Server,
}

/// A flag's value kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A switch: `true`/`false`.
    Bool,
    /// One value (string or number).
    Value,
    /// Repeatable (a urfave/cli StringSlice): a list, or one string; `split` = k3s splits each item
    /// on commas itself (`util.SplitStringSlice` or an explicit split), so "a,b" means two items.
    List {
        /// Items are comma-separated lists.
        split: bool,
    },
}

use Kind::{Bool, List, Value};
use Roles::{Both, Server};

const SPLIT: Kind = List { split: true };
const REPEAT: Kind = List { split: false };

/// Every k3s flag a config file may set: (name, roles, kind).
pub const FLAGS: &[(&str, Roles, Kind)] = &[
    // logging
    ("debug", Both, Bool),
    ("v", Both, Value),
    ("vmodule", Both, Value),
    ("log", Both, Value),
    ("alsologtostderr", Both, Bool),
    // cluster
    ("token", Both, Value),
    ("token-file", Both, Value),
    ("server", Both, Value),
    ("agent-token", Server, Value),
    ("agent-token-file", Server, Value),
    ("cluster-init", Server, Bool),
    ("cluster-reset", Server, Bool),
    ("cluster-reset-restore-path", Server, Value),
    // listener
    ("bind-address", Both, Value),
    ("https-listen-port", Server, Value),
    ("supervisor-port", Server, Value),
    ("apiserver-port", Server, Value),
    ("apiserver-bind-address", Server, Value),
    ("advertise-address", Server, Value),
    ("advertise-port", Server, Value),
    ("tls-san", Server, SPLIT),
    ("tls-san-security", Server, Bool),
    // data
    ("data-dir", Both, Value),
    // networking (server)
    ("cluster-cidr", Server, SPLIT),
    ("service-cidr", Server, SPLIT),
    ("service-node-port-range", Server, Value),
    ("cluster-dns", Server, SPLIT),
    ("cluster-domain", Server, Value),
    ("flannel-backend", Server, Value),
    ("flannel-ipv6-masq", Server, Bool),
    ("flannel-external-ip", Server, Bool),
    ("egress-selector-mode", Server, Value),
    ("servicelb-namespace", Server, Value),
    // client
    ("write-kubeconfig", Server, Value),
    ("write-kubeconfig-mode", Server, Value),
    ("write-kubeconfig-group", Server, Value),
    ("helm-job-image", Server, Value),
    // flags for Kubernetes processes
    ("kube-apiserver-arg", Server, REPEAT),
    ("etcd-arg", Server, REPEAT),
    ("kube-controller-manager-arg", Server, REPEAT),
    ("kube-scheduler-arg", Server, REPEAT),
    ("kube-cloud-controller-manager-arg", Server, REPEAT),
    ("kubelet-arg", Both, REPEAT),
    ("kube-proxy-arg", Both, REPEAT),
    // datastore
    ("datastore-endpoint", Server, Value),
    ("datastore-cafile", Server, Value),
    ("datastore-certfile", Server, Value),
    ("datastore-keyfile", Server, Value),
    ("kine-tls", Server, Bool),
    ("etcd-expose-metrics", Server, Bool),
    ("etcd-disable-snapshots", Server, Bool),
    ("etcd-snapshot-name", Server, Value),
    ("etcd-snapshot-schedule-cron", Server, Value),
    ("etcd-snapshot-retention", Server, Value),
    ("etcd-snapshot-dir", Server, Value),
    ("etcd-snapshot-compress", Server, Bool),
    ("etcd-s3", Server, Bool),
    ("etcd-s3-endpoint", Server, Value),
    ("etcd-s3-endpoint-ca", Server, Value),
    ("etcd-s3-skip-ssl-verify", Server, Bool),
    ("etcd-s3-access-key", Server, Value),
    ("etcd-s3-secret-key", Server, Value),
    ("etcd-s3-session-token", Server, Value),
    ("etcd-s3-bucket", Server, Value),
    ("etcd-s3-bucket-lookup-type", Server, Value),
    ("etcd-s3-region", Server, Value),
    ("etcd-s3-folder", Server, Value),
    ("etcd-s3-proxy", Server, Value),
    ("etcd-s3-config-secret", Server, Value),
    ("etcd-s3-insecure", Server, Bool),
    ("etcd-s3-timeout", Server, Value),
    ("etcd-s3-retention", Server, Value),
    // storage, components
    ("default-local-storage-path", Server, Value),
    ("disable", Server, SPLIT),
    ("disable-scheduler", Server, Bool),
    ("disable-cloud-controller", Server, Bool),
    ("disable-kube-proxy", Server, Bool),
    ("disable-network-policy", Server, Bool),
    ("disable-helm-controller", Server, Bool),
    ("disable-apiserver", Server, Bool),
    ("disable-controller-manager", Server, Bool),
    ("disable-etcd", Server, Bool),
    ("disable-agent", Server, Bool),
    ("embedded-registry", Server, Bool),
    ("supervisor-metrics", Server, Bool),
    ("secrets-encryption", Server, Bool),
    ("secrets-encryption-provider", Server, Value),
    ("system-default-registry", Server, Value),
    ("enable-pprof", Both, Bool),
    // agent/node
    ("node-name", Both, Value),
    ("with-node-id", Both, Bool),
    ("node-label", Both, SPLIT),
    ("node-taint", Both, SPLIT),
    ("image-credential-provider-bin-dir", Both, Value),
    ("image-credential-provider-config", Both, Value),
    ("protect-kernel-defaults", Both, Bool),
    ("selinux", Both, Bool),
    ("lb-server-port", Both, Value),
    // agent/runtime
    ("docker", Both, Bool),
    ("container-runtime-endpoint", Both, Value),
    ("default-runtime", Both, Value),
    ("image-service-endpoint", Both, Value),
    ("disable-default-registry-endpoint", Both, Bool),
    ("nonroot-devices", Both, Bool),
    ("pause-image", Both, Value),
    ("snapshotter", Both, Value),
    ("private-registry", Both, Value),
    ("airgap-extra-registry", Both, REPEAT),
    // agent/networking
    ("node-ip", Both, SPLIT),
    ("node-external-ip", Both, SPLIT),
    ("node-internal-dns", Both, SPLIT),
    ("node-external-dns", Both, SPLIT),
    ("resolv-conf", Both, Value),
    ("flannel-iface", Both, Value),
    ("flannel-conf", Both, Value),
    ("flannel-cni-conf", Both, Value),
    ("vpn-auth", Both, Value),
    ("vpn-auth-file", Both, Value),
    // experimental
    ("rootless", Both, Bool),
    ("prefer-bundled-bin", Both, Bool),
];

/// Keys nodeforge writes itself; a `[k3s]` table must not set them.
pub const SET_BY_NODEFORGE: &[&str] = &["token", "server", "datastore-endpoint", "node-name"];

/// The kind of flag `key` for a server (`server = true`) or an agent; `None` when k3s has no such
/// flag for that role.
pub fn lookup(key: &str, server: bool) -> Option<Kind> {
    FLAGS
        .iter()
        .find(|(n, r, _)| *n == key && (server || *r == Both))
        .map(|(_, _, k)| *k)
}

/// Check one `[k3s]` entry for a server or an agent ([`K3S_FLAG`]).
pub fn check(key: &str, value: &toml::Value, server: bool) -> Checked<Kind> {
    let role = if server { "server" } else { "agent" };
    let Some(kind) = lookup(key, server) else {
        let detail = if lookup(key, true).is_some() {
            format!("`{key}` is a k3s server flag: an agent does not take it")
        } else if let Some(bare) = key.strip_prefix("--") {
            format!("`{key}`: write the flag without the leading -- (`{bare}`)")
        } else {
            format!("`{key}` is not a k3s {role} flag")
        };
        return Err(Violation::new(&K3S_FLAG, detail));
    };
    let ok = match (kind, value) {
        (Bool, toml::Value::Boolean(_)) => true,
        (Value, toml::Value::String(_) | toml::Value::Integer(_)) => true,
        (List { .. }, toml::Value::String(_)) => true,
        (List { .. }, toml::Value::Array(a)) => a.iter().all(|x| x.is_str()),
        _ => false,
    };
    if !ok {
        let want = match kind {
            Bool => "true or false",
            Value => "a string or a number",
            List { .. } => "a string or a list of strings",
        };
        return Err(Violation::new(
            &K3S_FLAG,
            format!("`{key}` takes {want}, not {}", value.type_str()),
        ));
    }
    Ok(kind)
}

/// The items of a repeatable flag's value: a list's strings, or one string, each split on commas
/// when `split`; trimmed, empty items dropped.
pub fn list_items(value: &toml::Value, split: bool) -> Vec<String> {
    let raw: Vec<&str> = match value {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for r in raw {
        let parts: Vec<&str> = if split {
            r.split(',').collect()
        } else {
            vec![r]
        };
        for p in parts {
            let p = p.trim();
            if !p.is_empty() {
                out.push(p.to_string());
            }
        }
    }
    out
}
