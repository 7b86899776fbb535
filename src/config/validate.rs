//! Validation of a resolved cluster: every value nodeforge passes on is checked against the rule of
//! the program that consumes it ([`super::rules`]). Each issue names the node, the key, the value
//! and the rule; `parse_cluster` adds the file and line.

use super::rules::{dns, host, k3s_flags, k8s, net, users, Rule, Violation};
use super::{Board, Cluster, Datastore, Network, NodeSpec};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// How bad an issue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Loading fails.
    Error,
    /// Printed; loading succeeds.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One validation finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// The node concerned (`None` = the cluster).
    pub node: Option<String>,
    /// Key path of the value: `cluster.server`, or relative to the node's `[[nodes]]` entry
    /// (`labels.1`, `k3s.tls-san`); `None` when no single value is at fault.
    pub key: Option<String>,
    /// The offending value as written.
    pub value: Option<String>,
    /// The consumer's rule broken, when there is one.
    pub rule: Option<&'static Rule>,
    /// What is wrong and how to fix it (with the rule and its source when there is a rule).
    pub message: String,
    /// 1-based line in the cluster file (filled in by `parse_cluster`).
    pub line: Option<usize>,
}

impl Issue {
    /// An error.
    pub fn error(node: Option<String>, message: impl Into<String>) -> Issue {
        Issue::new(Severity::Error, node, message)
    }
    /// A warning.
    pub fn warning(node: Option<String>, message: impl Into<String>) -> Issue {
        Issue::new(Severity::Warning, node, message)
    }
    fn new(severity: Severity, node: Option<String>, message: impl Into<String>) -> Issue {
        Issue {
            severity,
            node,
            key: None,
            value: None,
            rule: None,
            message: message.into(),
            line: None,
        }
    }
    /// An issue for the value `value` at `key` breaking `v`'s rule.
    pub fn broken(
        severity: Severity,
        node: Option<String>,
        key: &str,
        value: &str,
        v: &Violation,
    ) -> Issue {
        Issue {
            severity,
            node,
            key: Some(key.to_string()),
            value: Some(value.to_string()),
            rule: Some(v.rule),
            message: format!("`{}`: {v}", display_key(key)),
            line: None,
        }
    }
    /// The issue as JSON for `check --json`: severity, file, line, node, key, value, rule, source,
    /// message.
    pub fn to_json(&self, file: &str) -> serde_json::Value {
        serde_json::json!({
            "severity": self.severity.as_str(),
            "file": file,
            "line": self.line,
            "node": self.node,
            "key": self.key.as_deref().map(display_key),
            "value": self.value,
            "rule": self.rule.map(|r| r.name),
            "source": self.rule.map(|r| r.source),
            "message": self.message,
        })
    }
}

/// A key path without list indexes (`labels.1` → `labels`).
pub fn display_key(path: &str) -> String {
    path.split('.')
        .filter(|p| p.parse::<usize>().is_err())
        .collect::<Vec<_>>()
        .join(".")
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.node, self.line) {
            (Some(n), Some(l)) => write!(f, "node {n} (line {l}): {}", self.message),
            (Some(n), None) => write!(f, "node {n}: {}", self.message),
            (None, Some(l)) => write!(f, "line {l}: {}", self.message),
            (None, None) => write!(f, "{}", self.message),
        }
    }
}

/// RFC 1123 label, lower case (Kubernetes node names are lower case): 1–63 of `[a-z0-9-]`,
/// starting and ending with a letter or digit.
pub fn is_rfc1123_label(s: &str) -> bool {
    dns::is_label(s)
}

/// Collects issues for one owner (the cluster or a node).
struct Sink<'a> {
    v: &'a mut Vec<Issue>,
    node: Option<String>,
}

impl Sink<'_> {
    fn check<T>(&mut self, key: &str, value: &str, r: Result<T, Violation>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(e) => {
                self.v.push(Issue::broken(
                    Severity::Error,
                    self.node.clone(),
                    key,
                    value,
                    &e,
                ));
                None
            }
        }
    }
    fn warn(&mut self, key: &str, value: &str, rule: &'static Rule, msg: String) {
        self.v.push(Issue::broken(
            Severity::Warning,
            self.node.clone(),
            key,
            value,
            &Violation::new(rule, msg),
        ));
    }
    fn error(&mut self, msg: impl Into<String>) {
        self.v.push(Issue::error(self.node.clone(), msg));
    }
}

/// Check a resolved cluster. Unknown roles, boards and add-ons, and malformed static addresses,
/// are caught while resolving (`parse_cluster`); everything else is here.
pub fn validate(c: &Cluster) -> Vec<Issue> {
    let mut v = Vec::new();
    cluster_values(c, &mut v);
    for n in &c.nodes {
        node_values(n, &mut v);
    }
    topology(c, &mut v);
    addons(c, &mut v);
    v
}

fn cluster_values(c: &Cluster, v: &mut Vec<Issue>) {
    let mut s = Sink { v, node: None };
    if c.name.trim().is_empty() {
        s.error("`cluster.name` is empty");
    }
    if !c.k3s_version.starts_with('v') || !c.k3s_version.contains("+k3s") {
        s.error(format!(
            "`cluster.k3s_version` {:?} should look like v1.33.5+k3s1",
            c.k3s_version
        ));
    }
    s.check("cluster.server", &c.server, net::server_url(&c.server));
    s.check(
        "cluster.admin_user",
        &c.admin_user,
        users::admin_user(&c.admin_user),
    );
    s.check("cluster.timezone", &c.timezone, host::timezone(&c.timezone));
    if let Some(d) = &c.domain {
        s.check("cluster.domain", d, dns::domain(d));
    }
    for (i, san) in c.tls_san.iter().enumerate() {
        s.check(&format!("cluster.tls_san.{i}"), san, net::tls_san(san));
    }
    if let Datastore::Postgres { endpoint } = &c.datastore {
        let shown = net::redact_password(endpoint);
        s.check("cluster.datastore", &shown, net::datastore_url(endpoint));
    }
    if c.ssh_authorized_keys.is_empty() {
        s.v.push(Issue::warning(
            None,
            "`cluster.ssh_authorized_keys` is empty: nobody can log in to the nodes",
        ));
    }
    if c.nodes.is_empty() {
        s.error("the cluster has no [[nodes]]");
    }
    for (name, _) in &c.user_manifests {
        let stem = name.trim_end_matches(".yaml").trim_end_matches(".yml");
        if stem.split('.').any(|l| !is_rfc1123_label(l)) {
            s.error(format!(
                "overlays/manifests/{name}: k3s needs RFC 1123 manifest names (lower-case letters, digits, '-', '.')"
            ));
        }
    }
}

fn node_values(n: &NodeSpec, v: &mut Vec<Issue>) {
    let mut s = Sink {
        v,
        node: Some(n.hostname.clone()),
    };
    s.check("hostname", &n.hostname, dns::hostname(&n.hostname));
    if let Some(i) = &n.interface {
        s.check("interface", i, net::interface_name(i));
    }
    if let Network::Static { dns, .. } = &n.network {
        if dns.is_empty() {
            let msg = "a static address without `dns`: the network-config has no nameservers, so apt, image pulls and NTP fail (add e.g. dns = [\"10.0.0.1\"])";
            if n.board == Board::X86_64 {
                s.check::<()>("address", "", Err(Violation::new(&net::DNS_SERVERS, msg)));
            } else {
                s.warn("address", "", &net::DNS_SERVERS, msg.to_string());
            }
        }
        if n.board == Board::X86_64 && n.interface.is_none() {
            s.error("a static address on x86_64 needs `interface` (e.g. \"enp1s0\"): Debian uses predictable NIC names and cloud-init 22.4 ignores `match: name` globs");
        }
    }
    if let Network::Static { gateway: None, .. } = &n.network {
        s.v.push(Issue::warning(
            s.node.clone(),
            "static address without `gateway`: the node has no default route",
        ));
    }
    for (i, q) in n.usb_quirks.iter().enumerate() {
        s.check(&format!("usb_quirks.{i}"), q, host::usb_quirk(q));
    }
    if !n.usb_quirks.is_empty() && n.board != Board::Rpi4 {
        s.error("usb_quirks apply to rpi4 nodes only");
    }
    if let Some(d) = &n.data_disk {
        if let Some(host::DiskPath::KernelName) = s.check("data_disk", d, host::data_disk(d)) {
            s.warn(
                "data_disk",
                d,
                &host::DATA_DISK,
                format!("data_disk {d:?} is a kernel name, which can change between boots (another disk plugged in first): prefer /dev/disk/by-id/..."),
            );
        }
        if n.profile.data_disk_mount.is_none() {
            s.error(format!(
                "role {} takes no `data_disk` (use arm-worker-storage)",
                n.role
            ));
        }
        if n.board == Board::Rpi4 {
            // docs/raspberry-pi-eeprom.md#known-traps: with a second USB disk attached the EEPROM may try the wrong drive first.
            s.v.push(Issue::warning(
                s.node.clone(),
                "boots from USB and has a data_disk: the Pi 4 bootloader may try the data disk \
                 first (set BOOT_ORDER and USB_MSD_DISCOVER_TIMEOUT with `nodeforge eeprom`, or \
                 plug the boot drive into the port the bootloader scans first). Once booted, \
                 nodeforge images mount root and boot by PARTUUID or label, so moving device \
                 names (sda/sdb) cannot swap the root disk; the data disk is formatted only when \
                 it holds no filesystem",
            ));
        }
    }
    for (i, l) in n.labels.iter().enumerate() {
        s.check(&format!("labels.{i}"), l, k8s::node_label(l));
    }
    for (i, t) in n.taints.iter().enumerate() {
        s.check(&format!("taints.{i}"), t, k8s::node_taint(t));
    }
    let pkey = |what: &str| format!("profile {} {what}", n.profile.name);
    for l in &n.profile.node_labels {
        s.check(&pkey("node_labels"), l, k8s::node_label(l));
    }
    for t in &n.profile.node_taints {
        s.check(&pkey("node_taints"), t, k8s::node_taint(t));
    }
    let server = n.is_server();
    for (table, prefix) in [(&n.profile.k3s, pkey("k3s")), (&n.k3s_extra, "k3s".into())] {
        for (k, val) in table {
            let key = format!("{prefix}.{k}");
            let shown = val.to_string();
            if k3s_flags::SET_BY_NODEFORGE.contains(&k.as_str()) {
                s.error(format!(
                    "k3s key `{k}` is set by nodeforge: remove it from the node's/profile's [k3s] table"
                ));
                continue;
            }
            let Some(kind) = s.check(&key, &shown, k3s_flags::check(k, val, server)) else {
                continue;
            };
            let k3s_flags::Kind::List { split } = kind else {
                continue;
            };
            for item in k3s_flags::list_items(val, split) {
                let r = match k.as_str() {
                    "tls-san" => net::tls_san(&item),
                    "node-label" => k8s::node_label(&item),
                    "node-taint" => k8s::node_taint(&item),
                    _ => Ok(()),
                };
                s.check(&key, &item, r);
            }
        }
    }
}

fn topology(c: &Cluster, v: &mut Vec<Issue>) {
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_addr: BTreeMap<Ipv4Addr, Vec<&str>> = BTreeMap::new();
    for n in &c.nodes {
        *by_name.entry(n.hostname.as_str()).or_default() += 1;
        if let Some(a) = n.ip() {
            by_addr.entry(a).or_default().push(&n.hostname);
        }
    }
    for (name, count) in by_name {
        if count > 1 {
            v.push(Issue::error(
                Some(name.to_string()),
                format!("duplicate hostname ({count} nodes are named {name})"),
            ));
        }
    }
    for (addr, names) in by_addr {
        if names.len() > 1 {
            for n in &names {
                v.push(Issue::error(
                    Some(n.to_string()),
                    format!(
                        "duplicate address {addr} (also used by {})",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    let servers: Vec<&str> = c.servers().map(|n| n.hostname.as_str()).collect();
    let agents: Vec<&str> = c
        .nodes
        .iter()
        .filter(|n| !n.is_server())
        .map(|n| n.hostname.as_str())
        .collect();
    for n in &c.nodes {
        if !n.profile.boards.contains(&n.board) {
            v.push(Issue::error(
                Some(n.hostname.clone()),
                format!(
                    "role {} runs on {} only, not on {}",
                    n.role,
                    n.profile
                        .boards
                        .iter()
                        .map(|b| b.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    n.board
                ),
            ));
        }
    }
    if !agents.is_empty() && servers.is_empty() {
        v.push(Issue::error(
            Some(agents.join(", ")),
            "agents but no node with role `server`: they have nothing to join",
        ));
    }
    let who = Some(servers.join(", ")).filter(|s| !s.is_empty());
    match &c.datastore {
        Datastore::Etcd => {
            let count = servers.len().to_string();
            match host::etcd_servers(servers.len()) {
                Err(e) => v.push(Issue::broken(
                    Severity::Error,
                    who,
                    "cluster.datastore",
                    &count,
                    &e,
                )),
                Ok(Some(note)) => v.push(Issue::broken(
                    Severity::Warning,
                    who,
                    "cluster.datastore",
                    &count,
                    &Violation::new(&host::ETCD_QUORUM, note),
                )),
                Ok(None) => {}
            }
        }
        Datastore::Sqlite => {
            if servers.len() > 1 {
                v.push(Issue::error(
                    who,
                    "sqlite supports one server only: use datastore = \"etcd\" (odd count) or postgres",
                ));
            }
        }
        Datastore::Postgres { .. } => {
            if servers.len() == 1 {
                v.push(Issue::warning(
                    who,
                    "postgres datastore with a single server: add a second server for HA",
                ));
            }
        }
    }
    // the registration address: an IP that no server has is likely a typo (or a VIP)
    if let Some(ip) = c.server_host().and_then(|h| h.parse::<Ipv4Addr>().ok()) {
        let static_servers: Vec<Ipv4Addr> = c.servers().filter_map(|n| n.ip()).collect();
        if !static_servers.is_empty() && !static_servers.contains(&ip) {
            v.push(Issue::warning(
                None,
                format!(
                    "`cluster.server` {} is no server's address (fine if it is a VIP or load balancer)",
                    c.server
                ),
            ));
        }
    }
}

fn addons(c: &Cluster, v: &mut Vec<Issue>) {
    if let Some(m) = &c.addons.metallb {
        if m.addresses.is_empty() {
            v.push(Issue::error(
                None,
                "[addons.metallb] needs `addresses` (e.g. [\"10.0.0.200-10.0.0.220\"])",
            ));
        }
        let mut s = Sink { v, node: None };
        for (i, a) in m.addresses.iter().enumerate() {
            let key = format!("addons.metallb.addresses.{i}");
            let Some(range) = s.check(&key, a, net::metallb_entry(a)) else {
                continue;
            };
            let mut used: Vec<(String, IpAddr)> = c
                .nodes
                .iter()
                .filter_map(|n| {
                    n.ip()
                        .map(|ip| (format!("node {}", n.hostname), IpAddr::V4(ip)))
                })
                .collect();
            if let Some(ip) = c.server_host().and_then(|h| h.parse::<IpAddr>().ok()) {
                used.push(("the registration address".into(), ip));
            }
            for (who, ip) in used {
                if range.contains(ip) {
                    s.check::<()>(
                        &key,
                        a,
                        Err(Violation::new(
                            &net::METALLB_RANGE,
                            format!("address pool {a:?} holds {ip}, the address of {who}: MetalLB would hand it to a service"),
                        )),
                    );
                }
            }
        }
    }
    if c.addons.longhorn.is_some() && !c.nodes.iter().any(|n| n.profile.multipath_blacklist) {
        v.push(Issue::warning(
            None,
            "[addons.longhorn] is on but no node has a storage role (arm-worker-storage)",
        ));
    }
    if c.addons.nvidia_device_plugin.is_some() && !c.nodes.iter().any(|n| n.profile.nvidia) {
        v.push(Issue::warning(
            None,
            "[addons.nvidia-device-plugin] is on but no node has role gpu-worker",
        ));
    }
}
