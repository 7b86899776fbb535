//! The cluster file, role profiles and node resolution; `init`, `check`, `render`.
//!
//! `cluster.toml` is parsed strictly (unknown keys are errors naming the file, the key and the line),
//! each node is resolved into a [`NodeSpec`] with its role [`Profile`], and the result is validated
//! (see [`validate`]). Secrets live in [`crate::secrets`], never here.

mod addons;
mod lines;
mod load;
pub mod rules;
mod validate;

pub use addons::{ArgoCd, KubeVip, Mirror, Registries, RegistryConfig, Tls, Zot, ZotStorage};
pub use lines::KeyLines;
pub use load::{
    analyze_cluster, cluster_path, is_catalog_name, load_cluster, parse_cluster, resolve_ref,
    ProfileSet, Report,
};
pub use validate::{display_key, validate, Issue, Severity};

use crate::base::Family;
use crate::fetch::Arch;
use crate::secrets;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The embedded example cluster (`nodeforge init` writes it; the default when no cluster file exists).
pub const EXAMPLE_CLUSTER: &str = include_str!("../examples/cluster.toml");

/// Role profiles shipped in the binary (`profiles/*.toml`).
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("server", include_str!("../profiles/server.toml")),
    ("agent", include_str!("../profiles/agent.toml")),
    (
        "arm-worker-storage",
        include_str!("../profiles/arm-worker-storage.toml"),
    ),
    ("gpu-worker", include_str!("../profiles/gpu-worker.toml")),
];

/// Default catalog base per board when `[boards.<board>]` is absent.
pub const DEFAULT_BASES: &[(Board, &str)] = &[
    (Board::Rpi4, "raspios-lite-arm64"),
    (Board::X86_64, "debian-13-generic-amd64"),
];

/// Default k3s mirror: GitHub releases.
pub const DEFAULT_K3S_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";

/// Hardware a node image is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Board {
    /// Raspberry Pi 4 (arm64, USB or SD boot, MBR).
    #[serde(rename = "rpi4")]
    Rpi4,
    /// Generic x86_64 PC (UEFI and BIOS).
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Board {
    /// All boards.
    pub const ALL: [Board; 2] = [Board::Rpi4, Board::X86_64];

    /// CPU architecture of the board.
    pub fn arch(self) -> Arch {
        match self {
            Board::Rpi4 => Arch::Arm64,
            Board::X86_64 => Arch::Amd64,
        }
    }

    /// The name used in `cluster.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Board::Rpi4 => "rpi4",
            Board::X86_64 => "x86_64",
        }
    }

    /// Parse a board name.
    pub fn parse(s: &str) -> Option<Board> {
        Board::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A board's base image: a catalog name, an `https://`/`file://` URL (relative paths resolved to
/// absolute `file://` URLs against the cluster file's directory), optional sha256, optional family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    /// Catalog name (no `/`, no `.`, no `://`) or URL.
    pub base: String,
    /// Expected sha256 (hex) of the downloaded file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Expected sha512 (hex), for files published with SHA512SUMS only (Debian cloud images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Family override (otherwise detected from the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
}

impl BaseRef {
    /// True when `base` is a catalog name rather than a URL.
    pub fn is_catalog(&self) -> bool {
        !self.base.contains("://")
    }

    /// The catalog's family for a catalog name.
    fn catalog_family(&self) -> Option<Family> {
        crate::catalog::lookup(&self.base)
            .ok()
            .flatten()
            .and_then(|e| e.family().ok())
    }

    /// The family to render seeds for before the image is opened: the override, else a guess from
    /// the base name (`ubuntu` → UbuntuRaspi; `debian` → DebianRaspi on a Pi, DebianGeneric on x86),
    /// else RaspiOS on a Pi and DebianGeneric on x86.
    pub fn expected_family(&self, board: Board) -> Family {
        if let Some(f) = self.family.or_else(|| self.catalog_family()) {
            return f;
        }
        let b = self.base.to_ascii_lowercase();
        match board {
            Board::X86_64 => Family::DebianGeneric,
            Board::Rpi4 if b.contains("ubuntu") => Family::UbuntuRaspi,
            Board::Rpi4 if b.contains("debian") || b.contains("raspi.debian") => {
                Family::DebianRaspi
            }
            Board::Rpi4 => Family::Raspios,
        }
    }
}

/// Where k3s keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// Embedded sqlite: exactly one server.
    Sqlite,
    /// Embedded etcd: an odd number of servers (quorum).
    Etcd,
    /// External postgres; `endpoint` holds no password (it comes from the secrets file).
    Postgres {
        /// `postgres://user@host:port/db`
        endpoint: String,
    },
}

impl Datastore {
    /// The datastore named by `cluster.datastore`; postgres URLs are checked by
    /// [`rules::net::datastore_url`] during validation.
    fn parse(s: &str) -> Result<Datastore> {
        match s {
            "sqlite" => Ok(Datastore::Sqlite),
            "etcd" => Ok(Datastore::Etcd),
            _ if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                Ok(Datastore::Postgres {
                    endpoint: s.to_string(),
                })
            }
            _ => bail!(
                "unknown `datastore` {:?}: use \"sqlite\", \"etcd\" or \"postgres://USER@HOST:PORT/DB\"",
                rules::net::redact_password(s)
            ),
        }
    }

    /// Short name for the plan.
    pub fn kind(&self) -> &'static str {
        match self {
            Datastore::Sqlite => "sqlite",
            Datastore::Etcd => "etcd",
            Datastore::Postgres { .. } => "postgres",
        }
    }
}

/// Insert `password` (percent-encoded) into a postgres URL `scheme://user@host...`.
pub fn endpoint_with_password(endpoint: &str, password: &str) -> Result<String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .context("datastore endpoint is not a URL")?;
    let (user, host) = rest
        .split_once('@')
        .context("datastore endpoint has no user")?;
    let mut enc = String::new();
    for b in password.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(format!("{scheme}://{user}:{enc}@{host}"))
}

/// `[addons.metallb]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetalLb {
    /// Address pool entries (`A.B.C.D-A.B.C.E` ranges or CIDRs).
    pub addresses: Vec<String>,
}

/// An add-on table with no settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

/// Opt-in add-ons (`[addons.<name>]`); an unknown name is an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addons {
    /// MetalLB with an address pool; disables k3s servicelb.
    #[serde(default)]
    pub metallb: Option<MetalLb>,
    /// Longhorn storage (default disks on labelled storage nodes).
    #[serde(default)]
    pub longhorn: Option<NoSettings>,
    /// NVIDIA device plugin (runtimeClassName nvidia).
    #[serde(default, rename = "nvidia-device-plugin")]
    pub nvidia_device_plugin: Option<NoSettings>,
    /// sealed-secrets controller with the sealing key from the secrets file (src/addons).
    #[serde(default, rename = "sealed-secrets")]
    pub sealed_secrets: Option<NoSettings>,
    /// kube-vip API server VIP (src/addons/kube_vip.rs).
    #[serde(default, rename = "kube-vip")]
    pub kube_vip: Option<KubeVip>,
    /// Argo CD with a root Application (src/addons/argocd.rs).
    #[serde(default)]
    pub argocd: Option<ArgoCd>,
    /// Zot OCI registry on labelled nodes (src/addons/zot.rs).
    #[serde(default)]
    pub zot: Option<Zot>,
}

impl Addons {
    /// Names of the enabled add-ons.
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.metallb.is_some() {
            v.push("metallb");
        }
        if self.longhorn.is_some() {
            v.push("longhorn");
        }
        if self.nvidia_device_plugin.is_some() {
            v.push("nvidia-device-plugin");
        }
        if self.sealed_secrets.is_some() {
            v.push("sealed-secrets");
        }
        if self.kube_vip.is_some() {
            v.push("kube-vip");
        }
        if self.argocd.is_some() {
            v.push("argocd");
        }
        if self.zot.is_some() {
            v.push("zot");
        }
        v
    }
}

/// Whether a role runs `k3s server` or `k3s agent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum K3sRole {
    /// Control plane.
    Server,
    /// Worker.
    Agent,
}

impl K3sRole {
    /// `server` or `agent` (the k3s subcommand).
    pub fn as_str(self) -> &'static str {
        match self {
            K3sRole::Server => "server",
            K3sRole::Agent => "agent",
        }
    }
}

fn all_boards() -> Vec<Board> {
    Board::ALL.to_vec()
}

/// A role profile (`profiles/<name>.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name (file stem).
    #[serde(skip)]
    pub name: String,
    /// One line for the plan.
    #[serde(default)]
    pub description: String,
    /// `server` or `agent`.
    pub k3s_role: K3sRole,
    /// Boards this role may run on.
    #[serde(default = "all_boards")]
    pub boards: Vec<Board>,
    /// apt packages installed on first boot (needs network).
    #[serde(default)]
    pub packages: Vec<String>,
    /// systemd units enabled and started.
    #[serde(default)]
    pub enable_services: Vec<String>,
    /// systemd units disabled and stopped.
    #[serde(default)]
    pub disable_services: Vec<String>,
    /// k3s `node-label` entries.
    #[serde(default)]
    pub node_labels: Vec<String>,
    /// k3s `node-taint` entries.
    #[serde(default)]
    pub node_taints: Vec<String>,
    /// Blacklist `sd*` devices in multipath.conf and stop multipathd (Longhorn).
    #[serde(default)]
    pub multipath_blacklist: bool,
    /// Install the NVIDIA driver and container toolkit before k3s starts.
    #[serde(default)]
    pub nvidia: bool,
    /// Mount point of the node's `data_disk`; `None` = the role takes no data disk.
    #[serde(default)]
    pub data_disk_mount: Option<String>,
    /// Extra k3s config keys.
    #[serde(default)]
    pub k3s: toml::Table,
}

impl Profile {
    /// Parse a profile; errors name `origin`.
    pub fn parse(name: &str, text: &str, origin: &str) -> Result<Profile> {
        let mut p: Profile =
            toml::from_str(text).with_context(|| format!("invalid profile {origin}"))?;
        p.name = name.to_string();
        Ok(p)
    }
}

/// A node's network settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// DHCP: on `eth0` for a Pi, on `interface` when given, else cloud-init's fallback (first NIC).
    Dhcp,
    /// A static IPv4 address.
    Static {
        /// Address.
        address: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
        /// Default gateway.
        gateway: Option<Ipv4Addr>,
        /// DNS servers.
        dns: Vec<IpAddr>,
    },
}

/// A node resolved from `[[nodes]]` and its profile.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Hostname (RFC 1123 label) = k3s node-name.
    pub hostname: String,
    /// Role name (a profile name).
    pub role: String,
    /// Board.
    pub board: Board,
    /// Network.
    pub network: Network,
    /// NIC name for the static network-config (Pi default `eth0`).
    pub interface: Option<String>,
    /// USB adapters to run without UAS (`VVVV:PPPP[:flags]`).
    pub usb_quirks: Vec<String>,
    /// Data disk device (storage roles).
    pub data_disk: Option<String>,
    /// Extra node labels (`key=value`).
    pub labels: Vec<String>,
    /// Extra node taints (`key=value:Effect`).
    pub taints: Vec<String>,
    /// Extra k3s config keys (node level; win over the profile's).
    pub k3s_extra: toml::Table,
    /// The profile in effect (the role's, or the node's `profile` override).
    pub profile: Profile,
    /// The first server in file order (bootstraps embedded etcd with `cluster-init`).
    pub first_server: bool,
    /// Line of the node's `hostname` in the cluster file (for messages).
    pub line: Option<usize>,
}

impl NodeSpec {
    /// True for k3s servers.
    pub fn is_server(&self) -> bool {
        self.profile.k3s_role == K3sRole::Server
    }
    /// `server` or `agent`.
    pub fn k3s_role(&self) -> K3sRole {
        self.profile.k3s_role
    }
    /// The address without prefix, for static nodes.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match &self.network {
            Network::Static { address, .. } => Some(*address),
            Network::Dhcp => None,
        }
    }
    /// The NIC name used in network-config.
    pub fn interface_name(&self) -> &str {
        // Pi families name the onboard NIC eth0 (Debian's Pi cmdline sets net.ifnames=0); x86_64
        // static nodes must name theirs (validation).
        self.interface.as_deref().unwrap_or("eth0")
    }
}

/// A parsed, resolved and validated cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// Cluster name.
    pub name: String,
    /// Pinned k3s version (`v1.33.5+k3s1`).
    pub k3s_version: String,
    /// Registration address (`https://host:6443`).
    pub server: String,
    /// Datastore.
    pub datastore: Datastore,
    /// SSH public keys of the admin user.
    pub ssh_authorized_keys: Vec<String>,
    /// Timezone.
    pub timezone: String,
    /// Login user (default `k3s-admin`).
    pub admin_user: String,
    /// DNS domain for fqdns.
    pub domain: Option<String>,
    /// Extra `tls-san` entries.
    pub tls_san: Vec<String>,
    /// etcd snapshot cron schedule.
    pub etcd_snapshot_schedule: String,
    /// etcd snapshots kept.
    pub etcd_snapshot_retention: u32,
    /// Base image per board (defaults filled in from [`DEFAULT_BASES`]).
    pub boards: BTreeMap<Board, BaseRef>,
    /// k3s mirror (URL or absolute `file://` dir laid out like a GitHub release).
    pub k3s_mirror: String,
    /// Bundle the airgap images.
    pub airgap: bool,
    /// Add-ons.
    pub addons: Addons,
    /// `[registries]`: k3s registries.yaml for every node (src/addons/registries.rs).
    pub registries: Option<Registries>,
    /// Nodes in file order.
    pub nodes: Vec<NodeSpec>,
    /// The cluster file (`None` = the embedded example).
    pub file: Option<PathBuf>,
    /// User manifests from `<dir>/overlays/manifests/*.yaml` (file name, bytes), sorted.
    pub user_manifests: Vec<(String, Vec<u8>)>,
    /// Validation warnings (errors fail loading).
    pub warnings: Vec<String>,
}

impl Cluster {
    /// The node named `name`.
    pub fn node(&self, name: &str) -> Result<&NodeSpec> {
        self.nodes
            .iter()
            .find(|n| n.hostname == name)
            .with_context(|| {
                format!(
                    "no node {name:?} in {} (nodes: {})",
                    self.origin(),
                    self.nodes
                        .iter()
                        .map(|n| n.hostname.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
    /// Base image of `board`.
    pub fn base(&self, board: Board) -> Result<&BaseRef> {
        self.boards
            .get(&board)
            .with_context(|| format!("no base image for board {board}"))
    }
    /// The servers.
    pub fn servers(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(|n| n.is_server())
    }
    /// Hostnames of all nodes, in file order (for `secrets::ensure`).
    pub fn hostnames(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.hostname.as_str()).collect()
    }
    /// True when any node is an agent.
    pub fn has_agents(&self) -> bool {
        self.nodes.iter().any(|n| !n.is_server())
    }
    /// The cluster file's name for messages.
    pub fn origin(&self) -> String {
        match &self.file {
            Some(p) => p.display().to_string(),
            None => "the embedded example cluster".to_string(),
        }
    }
    /// The default secrets path for this cluster.
    pub fn default_secrets_path(&self) -> PathBuf {
        secrets::default_path(self.file.as_deref())
    }
    /// Host part of the registration address.
    pub fn server_host(&self) -> Option<&str> {
        let rest = self.server.split_once("://")?.1;
        let auth = rest.split('/').next()?;
        if let Some(v6) = auth.strip_prefix('[') {
            return v6.split(']').next();
        }
        Some(auth.rsplit_once(':').map(|x| x.0).unwrap_or(auth))
    }
}
