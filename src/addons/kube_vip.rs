//! `[addons.kube-vip]`: a virtual IP for the API server on every server, by kube-vip in ARP mode.
//!
//! kube-vip's k3s guide (docs/addons.md#kube-vip) runs it as a DaemonSet from the server's
//! manifests directory with its RBAC (ServiceAccount `kube-vip`, ClusterRole
//! `system:kube-vip-role`, ClusterRoleBinding `system:kube-vip-binding`), not as a static pod:
//! k3s brings up its first server without the VIP, so nothing needs the VIP before the API server
//! exists, and the DaemonSet follows servers added later. The objects below are what
//! `kube-vip manifest daemonset --inCluster --taint --controlplane --arp --leaderElection` writes.
//! The VIP is added to every server's `tls-san` (seed/k3s.rs).

pub use crate::config::KubeVip;
use crate::config::{Cluster, Datastore, Network};
use crate::yaml::to_yaml;
use anyhow::Result;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// The kube-vip image pin's name in `overlays/charts.toml` (`[images.kube-vip]`).
pub const IMAGE_PIN: &str = "kube-vip";
/// Manifest file name on servers.
pub const FILE: &str = "kube-vip.yaml";
/// The API server port the VIP fronts.
pub const API_PORT: u16 = 6443;

fn env(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

/// The RBAC objects and the DaemonSet (four YAML documents). Same input → same bytes. Errors:
/// the built-in pins table lacks `[images.kube-vip]` (a build defect).
pub fn manifest(k: &KubeVip) -> Result<String> {
    let image = super::charts::image(IMAGE_PIN)?;
    let ns = "kube-system";
    let sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "kube-vip", "namespace": ns },
    });
    let rule = |groups: &str, res: &[&str], verbs: &[&str]| json!({ "apiGroups": [groups], "resources": res, "verbs": verbs });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {
            "name": "system:kube-vip-role",
            "annotations": { "rbac.authorization.kubernetes.io/autoupdate": "true" },
        },
        "rules": [
            rule("", &["services/status"], &["update"]),
            rule("", &["services", "endpoints"], &["list", "get", "watch", "update"]),
            rule("", &["nodes"], &["list", "get", "watch", "update", "patch"]),
            rule("coordination.k8s.io", &["leases"], &["list", "get", "watch", "update", "create"]),
            rule("discovery.k8s.io", &["endpointslices"], &["list", "get", "watch", "update"]),
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": "system:kube-vip-binding" },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "system:kube-vip-role",
        },
        "subjects": [{ "kind": "ServiceAccount", "name": "kube-vip", "namespace": ns }],
    });
    let mut envs = vec![
        env("vip_arp", "true"),
        env("port", &API_PORT.to_string()),
        json!({ "name": "vip_nodename",
                "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } }),
    ];
    if let Some(i) = &k.interface {
        envs.push(env("vip_interface", i));
    }
    envs.extend([
        env("cp_enable", "true"),
        env("cp_namespace", ns),
        env("vip_leaderelection", "true"),
        env("vip_leasename", "plndr-cp-lock"),
        env("vip_leaseduration", "5"),
        env("vip_renewdeadline", "3"),
        env("vip_retryperiod", "1"),
        env("address", &k.address.to_string()),
    ]);
    let labels = json!({ "app.kubernetes.io/name": "kube-vip-ds",
                         "app.kubernetes.io/version": image.version });
    let exists = |key: &str| json!({ "matchExpressions": [{ "key": key, "operator": "Exists" }] });
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": { "name": "kube-vip-ds", "namespace": ns, "labels": labels },
        "spec": {
            "selector": { "matchLabels": { "app.kubernetes.io/name": "kube-vip-ds" } },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    // Servers only (k3s labels them node-role.kubernetes.io/control-plane), and
                    // past the CriticalAddonsOnly taint servers get when the cluster has agents.
                    "affinity": { "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                exists("node-role.kubernetes.io/master"),
                                exists("node-role.kubernetes.io/control-plane"),
                            ] } } },
                    "tolerations": [
                        { "effect": "NoSchedule", "operator": "Exists" },
                        { "effect": "NoExecute", "operator": "Exists" },
                    ],
                    "hostNetwork": true,
                    "serviceAccountName": "kube-vip",
                    "containers": [{
                        "name": "kube-vip",
                        "image": image.reference(),
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["manager"],
                        "env": envs,
                        "securityContext": { "capabilities": {
                            "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] } },
                    }],
                },
            },
        },
    });
    let mut out = format!(
        "# kube-vip (add-on `kube-vip`): API server VIP {} in ARP mode on every server.\n",
        k.address
    );
    for (i, doc) in [sa, role, binding, ds].iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(doc)?);
    }
    Ok(out)
}

fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    u32::from(a) & mask(prefix) == u32::from(net) & mask(prefix)
}

/// The node whose own address or name `host` (the host of `cluster.server`) is, if any: its
/// static IPv4 address, its hostname, or a name under it (`cp1.lan`).
pub fn node_owning(c: &Cluster, host: &str) -> Option<String> {
    c.nodes
        .iter()
        .find(|n| {
            n.ip().is_some_and(|ip| ip.to_string() == host)
                || host == n.hostname
                || host.starts_with(&format!("{}.", n.hostname))
        })
        .map(|n| n.hostname.clone())
}

/// What `check` says about the VIP and the registration address: `(errors, warnings)`.
///
/// - the VIP equals a node's address → error; outside every static server's subnet → warning;
/// - a fixed registration address — `cluster.server` naming the kube-vip VIP, or a DNS name or
///   address that is not one node's own — is required with `datastore = "etcd"` and three or
///   more servers (error) and advised with two or more servers otherwise (warning): nodes join
///   and agents reconnect through `cluster.server`, so while the node it names is down or being
///   rebuilt nothing can join (k3s docs, "High Availability Embedded etcd": a fixed registration
///   address in front of the servers). A VIP configured but not used as `cluster.server` does
///   not count: the seeds register through `cluster.server`.
pub fn check(c: &Cluster) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let vip = c.addons.kube_vip.as_ref();
    if let Some(k) = vip {
        if let Some(n) = c.nodes.iter().find(|n| n.ip() == Some(k.address)) {
            errors.push(format!(
                "kube-vip: address {} is node {}'s own address: the VIP must be a free address",
                k.address, n.hostname
            ));
        }
        if let Some((_, net)) = vip_subnet(c, k.address) {
            if net.is_none() {
                warnings.push(format!(
                    "kube-vip: address {} is outside every server's subnet: ARP mode announces it on the servers' LAN only",
                    k.address
                ));
            }
        }
    }
    let servers = c.servers().count();
    let host = c.server_host().unwrap_or_default();
    let is_vip = vip.is_some_and(|k| k.address.to_string() == host);
    if let (false, Some(n)) = (is_vip, node_owning(c, host)) {
        let use_vip = match vip {
            Some(k) => format!(
                "set cluster.server = \"https://{}:{API_PORT}\" (the kube-vip VIP)",
                k.address
            ),
            None => "add [addons.kube-vip] address and name it in cluster.server, or use a DNS name that resolves to every server".to_string(),
        };
        let why = format!(
            "cluster.server {} is {n}'s own address: nodes join and agents reconnect through it, so while {n} is down or being rebuilt nothing can join; {use_vip}",
            c.server
        );
        if c.datastore == Datastore::Etcd && servers >= 3 {
            errors.push(format!(
                "{why} (a fixed registration address is required with etcd and {servers} servers)"
            ));
        } else if servers >= 2 {
            warnings.push(why);
        }
    }
    (errors, warnings)
}

/// For `check`: `Some((statics, subnet))` when some server has a static address — `subnet` is
/// the first static server (hostname, network, prefix) whose subnet holds `vip`; `None` when
/// every server uses DHCP (the subnet is unknown).
#[allow(clippy::type_complexity)]
pub fn vip_subnet(c: &Cluster, vip: Ipv4Addr) -> Option<(usize, Option<(String, Ipv4Addr, u8)>)> {
    let statics: Vec<_> = c
        .servers()
        .filter_map(|n| match &n.network {
            Network::Static {
                address, prefix, ..
            } => Some((n.hostname.clone(), *address, *prefix)),
            Network::Dhcp => None,
        })
        .collect();
    if statics.is_empty() {
        return None;
    }
    let hit = statics
        .iter()
        .find(|(_, a, p)| in_subnet(vip, *a, *p))
        .map(|(h, a, p)| (h.clone(), network(*a, *p), *p));
    Some((statics.len(), hit))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn network(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a) & mask(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let a: Ipv4Addr = "10.0.0.9".parse().unwrap();
        assert!(in_subnet(a, "10.0.0.10".parse().unwrap(), 24));
        assert!(!in_subnet(a, "10.0.1.10".parse().unwrap(), 24));
        assert!(in_subnet(a, "192.168.0.1".parse().unwrap(), 0));
    }
}
