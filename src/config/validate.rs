//! Validation rules of a resolved cluster: each issue names the node it concerns.

use super::{Board, Cluster, Datastore, Network};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// How bad an issue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Loading fails.
    Error,
    /// Printed; loading succeeds.
    Warning,
}

/// One validation finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// The node concerned (`None` = the cluster).
    pub node: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Issue {
    /// An error.
    pub fn error(node: Option<String>, message: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            node,
            message: message.into(),
        }
    }
    /// A warning.
    pub fn warning(node: Option<String>, message: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Warning,
            node,
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "node {n}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// RFC 1123 label, lower case (Kubernetes node names are lower case): 1–63 of `[a-z0-9-]`,
/// starting and ending with a letter or digit.
pub fn is_rfc1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let m = mask(prefix);
    u32::from(a) & m == u32::from(b) & m
}

fn label_ok(l: &str) -> Result<(), String> {
    let (key, _val) = l
        .split_once('=')
        .ok_or_else(|| format!("label {l:?} must be key=value"))?;
    if key.is_empty() {
        return Err(format!("label {l:?} has an empty key"));
    }
    if let Some((prefix, _)) = key.split_once('/') {
        // Kubernetes lets a kubelet set only these labels in its own namespaces (NodeRestriction).
        const ALLOWED_KEYS: &[&str] = &[
            "kubernetes.io/hostname",
            "kubernetes.io/arch",
            "kubernetes.io/os",
            "topology.kubernetes.io/zone",
            "topology.kubernetes.io/region",
            "node.kubernetes.io/instance-type",
        ];
        let restricted = prefix.ends_with("kubernetes.io") || prefix.ends_with("k8s.io");
        let allowed = prefix.ends_with("node.kubernetes.io")
            || prefix.ends_with("kubelet.kubernetes.io")
            || ALLOWED_KEYS.contains(&key);
        if restricted && !allowed {
            return Err(format!(
                "label {l:?}: k3s rejects kubernetes.io/k8s.io labels at registration"
            ));
        }
    }
    Ok(())
}

fn taint_ok(t: &str) -> Result<(), String> {
    let (kv, effect) = t
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {t:?} must be key=value:Effect"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!(
            "taint {t:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    if kv.is_empty() || kv.starts_with('=') {
        return Err(format!("taint {t:?} has an empty key"));
    }
    Ok(())
}

fn quirk_ok(q: &str) -> bool {
    let parts: Vec<&str> = q.split(':').collect();
    let hex4 = |s: &str| s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit());
    match parts.as_slice() {
        [v, p] => hex4(v) && hex4(p),
        [v, p, f] => {
            hex4(v) && hex4(p) && !f.is_empty() && f.chars().all(|c| c.is_ascii_alphabetic())
        }
        _ => false,
    }
}

/// Check a resolved cluster. Unknown roles, boards and add-ons are caught while resolving
/// (`parse_cluster`); everything else is here.
pub fn validate(c: &Cluster) -> Vec<Issue> {
    let mut v = Vec::new();
    let cl = |m: String| Issue::error(None, m);

    if c.name.trim().is_empty() {
        v.push(cl("`cluster.name` is empty".into()));
    }
    if !c.k3s_version.starts_with('v') || !c.k3s_version.contains("+k3s") {
        v.push(cl(format!(
            "`cluster.k3s_version` {:?} should look like v1.33.5+k3s1",
            c.k3s_version
        )));
    }
    if !c.server.starts_with("https://") || c.server_host().map_or(true, str::is_empty) {
        v.push(cl(format!(
            "`cluster.server` {:?} must be https://HOST:PORT (the registration address)",
            c.server
        )));
    }
    if c.ssh_authorized_keys.is_empty() {
        v.push(Issue::warning(
            None,
            "`cluster.ssh_authorized_keys` is empty: nobody can log in to the nodes",
        ));
    }
    if let Some(d) = &c.domain {
        if d.split('.').any(|l| !is_rfc1123_label(l)) {
            v.push(cl(format!(
                "`cluster.domain` {d:?} is not a valid DNS name"
            )));
        }
    }
    if c.nodes.is_empty() {
        v.push(cl("the cluster has no [[nodes]]".into()));
    }

    // hostnames
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &c.nodes {
        *by_name.entry(n.hostname.as_str()).or_default() += 1;
        if !is_rfc1123_label(&n.hostname) {
            v.push(Issue::error(
                Some(n.hostname.clone()),
                "hostname is not an RFC 1123 label (1-63 lower-case letters, digits and '-', not starting or ending with '-')",
            ));
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

    // addresses
    let mut by_addr: BTreeMap<Ipv4Addr, Vec<&str>> = BTreeMap::new();
    for n in &c.nodes {
        let who = Some(n.hostname.clone());
        if let Network::Static {
            address,
            prefix,
            gateway,
            ..
        } = &n.network
        {
            by_addr.entry(*address).or_default().push(&n.hostname);
            if let Some(g) = gateway {
                if !same_subnet(*address, *g, *prefix) {
                    v.push(Issue::error(
                        who.clone(),
                        format!("address {address}/{prefix} is outside its gateway {g}'s subnet"),
                    ));
                }
                if g == address {
                    v.push(Issue::error(who.clone(), "address equals its gateway"));
                }
            } else {
                v.push(Issue::warning(
                    who.clone(),
                    "static address without `gateway`: the node has no default route",
                ));
            }
            if n.board == Board::X86_64 && n.interface.is_none() {
                v.push(Issue::error(
                    who.clone(),
                    "a static address on x86_64 needs `interface` (e.g. \"enp1s0\"): Debian uses predictable NIC names and cloud-init 22.4 ignores `match: name` globs",
                ));
            }
        }
        if let Some(i) = &n.interface {
            if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '*']) {
                v.push(Issue::error(
                    who.clone(),
                    format!("interface {i:?} is not a NIC name"),
                ));
            }
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

    // roles and boards
    let servers: Vec<&str> = c.servers().map(|n| n.hostname.as_str()).collect();
    let agents: Vec<&str> = c
        .nodes
        .iter()
        .filter(|n| !n.is_server())
        .map(|n| n.hostname.as_str())
        .collect();
    for n in &c.nodes {
        let who = Some(n.hostname.clone());
        if !n.profile.boards.contains(&n.board) {
            v.push(Issue::error(
                who.clone(),
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
        if n.data_disk.is_some() && n.profile.data_disk_mount.is_none() {
            v.push(Issue::error(
                who.clone(),
                format!(
                    "role {} takes no `data_disk` (use arm-worker-storage)",
                    n.role
                ),
            ));
        }
        if let (Some(_), Board::Rpi4) = (&n.data_disk, n.board) {
            // docs/raspberry-pi-eeprom.md#known-traps: with a second USB disk attached the EEPROM may try the wrong drive first.
            v.push(Issue::warning(
                who.clone(),
                "boots from USB and has a data_disk: the Pi 4 bootloader may try the data disk \
                 first (set BOOT_ORDER and USB_MSD_DISCOVER_TIMEOUT with `nodeforge eeprom`, or \
                 plug the boot drive into the port the bootloader scans first). Once booted, \
                 nodeforge images mount root and boot by PARTUUID or label, so moving device \
                 names (sda/sdb) cannot swap the root disk; the data disk is formatted only when \
                 it holds no filesystem",
            ));
        }
        if let Some(d) = &n.data_disk {
            if !d.starts_with("/dev/") {
                v.push(Issue::error(
                    who.clone(),
                    format!("data_disk {d:?} must be a /dev/ path (prefer /dev/disk/by-id/...)"),
                ));
            }
        }
        if !n.usb_quirks.is_empty() && n.board != Board::Rpi4 {
            v.push(Issue::error(
                who.clone(),
                "usb_quirks apply to rpi4 nodes only",
            ));
        }
        for q in &n.usb_quirks {
            if !quirk_ok(q) {
                v.push(Issue::error(
                    who.clone(),
                    format!("usb quirk {q:?} must be VVVV:PPPP or VVVV:PPPP:flags (hex ids)"),
                ));
            }
        }
        for l in n.labels.iter().chain(&n.profile.node_labels) {
            if let Err(e) = label_ok(l) {
                v.push(Issue::error(who.clone(), e));
            }
        }
        for t in n.taints.iter().chain(&n.profile.node_taints) {
            if let Err(e) = taint_ok(t) {
                v.push(Issue::error(who.clone(), e));
            }
        }
        for k in ["token", "server", "datastore-endpoint", "node-name"] {
            if n.k3s_extra.contains_key(k) || n.profile.k3s.contains_key(k) {
                v.push(Issue::error(
                    who.clone(),
                    format!("k3s key `{k}` is set by nodeforge: remove it from the node's/profile's [k3s] table"),
                ));
            }
        }
    }
    if !agents.is_empty() && servers.is_empty() {
        v.push(Issue::error(
            Some(agents.join(", ")),
            "agents but no node with role `server`: they have nothing to join",
        ));
    }
    match &c.datastore {
        Datastore::Etcd => {
            if servers.len() % 2 == 0 && !servers.is_empty() {
                v.push(Issue::error(
                    Some(servers.join(", ")),
                    format!(
                        "embedded etcd needs an odd number of servers for quorum, found {}",
                        servers.len()
                    ),
                ));
            }
        }
        Datastore::Sqlite => {
            if servers.len() > 1 {
                v.push(Issue::error(
                    Some(servers.join(", ")),
                    "sqlite supports one server only: use datastore = \"etcd\" (odd count) or postgres",
                ));
            }
        }
        Datastore::Postgres { .. } => {
            if servers.len() == 1 {
                v.push(Issue::warning(
                    Some(servers.join(", ")),
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
    for (name, _) in &c.user_manifests {
        let stem = name.trim_end_matches(".yaml").trim_end_matches(".yml");
        if stem.split('.').any(|l| !is_rfc1123_label(l)) {
            v.push(cl(format!(
                "overlays/manifests/{name}: k3s needs RFC 1123 manifest names (lower-case letters, digits, '-', '.')"
            )));
        }
    }

    // add-ons
    if let Some(m) = &c.addons.metallb {
        if m.addresses.is_empty() {
            v.push(cl(
                "[addons.metallb] needs `addresses` (e.g. [\"10.0.0.200-10.0.0.220\"])".into(),
            ));
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
    v
}
