//! The cluster file, role profiles and node resolution; `init`, `check`, `render`.
//!
//! `cluster.toml` is parsed strictly (unknown keys are errors naming the file, the key and the line),
//! each node is resolved into a [`NodeSpec`] with its role [`Profile`], and the result is validated
//! (see [`validate`]). Secrets live in [`crate::secrets`], never here.

mod lines;
pub mod rules;
mod validate;

pub use lines::KeyLines;
pub use validate::{display_key, validate, Issue, Severity};

use crate::base::Family;
use crate::fetch::Arch;
use crate::secrets::{self, Secrets};
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
    pub kube_vip: Option<crate::addons::kube_vip::KubeVip>,
    /// Argo CD with a root Application (src/addons/argocd.rs).
    #[serde(default)]
    pub argocd: Option<crate::addons::argocd::ArgoCd>,
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
    pub registries: Option<crate::addons::registries::Registries>,
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

// ---------------------------------------------------------------- raw file

fn default_datastore() -> String {
    "sqlite".into()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_admin() -> String {
    "k3s-admin".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster: RawCluster,
    #[serde(default)]
    boards: RawBoards,
    #[serde(default)]
    k3s: RawK3s,
    #[serde(default)]
    addons: Addons,
    #[serde(default)]
    registries: Option<crate::addons::registries::Registries>,
    #[serde(default)]
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    k3s_version: String,
    server: String,
    #[serde(default = "default_datastore")]
    datastore: String,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default = "default_admin")]
    admin_user: String,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    tls_san: Vec<String>,
    #[serde(default)]
    etcd_snapshot_schedule: Option<String>,
    #[serde(default)]
    etcd_snapshot_retention: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBoards {
    #[serde(default)]
    rpi4: Option<BaseRef>,
    #[serde(default)]
    x86_64: Option<BaseRef>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawK3s {
    #[serde(default)]
    mirror: Option<String>,
    #[serde(default)]
    airgap: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    hostname: toml::Spanned<String>,
    role: String,
    board: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    usb_quirks: Vec<String>,
    #[serde(default)]
    data_disk: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    taints: Vec<String>,
    #[serde(default)]
    k3s: toml::Table,
    #[serde(default)]
    profile: Option<String>,
}

/// Resolve a base/mirror reference: URLs and catalog names stay; `file://relative` and plain paths
/// (anything with a `/`, an image extension, or naming an existing file) become absolute `file://`
/// URLs against `dir`. Other bare words stay as they are (the catalog reports unknown names).
pub fn resolve_ref(s: &str, dir: &Path) -> String {
    let path = if let Some(p) = s.strip_prefix("file://") {
        p
    } else if s.contains("://") || is_catalog_name(s) {
        return s.to_string();
    } else {
        let image_ext = [".img", ".raw", ".xz", ".gz", ".zst", ".tar", ".iso"]
            .iter()
            .any(|e| s.ends_with(e));
        if !(s.contains('/') || image_ext || dir.join(s).exists()) {
            return s.to_string();
        }
        s
    };
    let p = Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let base = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|c| c.join(dir))
                .unwrap_or_else(|_| dir.to_path_buf())
        };
        base.join(p)
    };
    format!("file://{}", abs.display())
}

/// True when `s` names an entry of the pinned base catalog.
pub fn is_catalog_name(s: &str) -> bool {
    matches!(crate::catalog::lookup(s), Ok(Some(_)))
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Load the cluster file at `path`, or the embedded example when `None`.
pub fn load_cluster(path: Option<&Path>) -> Result<Cluster> {
    match path {
        None => parse_cluster(EXAMPLE_CLUSTER, None),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read cluster file {}", p.display()))?;
            parse_cluster(&text, Some(p))
        }
    }
}

/// The cluster file to use: `arg` when given, else `./cluster.toml` when it exists, else `None`
/// (the embedded example).
pub fn cluster_path(arg: Option<&Path>) -> Option<PathBuf> {
    match arg {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = PathBuf::from("cluster.toml");
            p.exists().then_some(p)
        }
    }
}

/// A cluster file checked: the cluster when it could be resolved, and every issue found (with file
/// lines filled in), for `check` and `check --json`.
#[derive(Debug)]
pub struct Report {
    /// The cluster file's name for messages.
    pub origin: String,
    /// The resolved cluster (`None` when resolving failed); its `warnings` are filled in.
    pub cluster: Option<Cluster>,
    /// Errors and warnings, in the order found.
    pub issues: Vec<Issue>,
}

impl Report {
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }
    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Issue> {
        self.issues
            .iter()
            .filter(|i| i.severity == Severity::Warning)
    }
}

/// Parse, resolve and validate cluster text. `file` names it in messages and gives the directory
/// for relative paths and user `profiles/`/`overlays/`. Validation errors fail (one line each:
/// node, line, key, value, rule and its source); warnings are kept in `Cluster::warnings`.
pub fn parse_cluster(text: &str, file: Option<&Path>) -> Result<Cluster> {
    let report = analyze_cluster(text, file)?;
    let errors: Vec<String> = report.errors().map(Issue::to_string).collect();
    if !errors.is_empty() {
        bail!("{}:\n  {}", report.origin, errors.join("\n  "));
    }
    report
        .cluster
        .with_context(|| format!("{}: the cluster could not be resolved", report.origin))
}

/// Parse, resolve and validate cluster text, returning every issue rather than failing on the
/// first. Fails only when the text is not a valid cluster file at all (TOML syntax, unknown keys,
/// wrong types) or a user profile cannot be read.
pub fn analyze_cluster(text: &str, file: Option<&Path>) -> Result<Report> {
    let origin = match file {
        Some(p) => p.display().to_string(),
        None => "the embedded example cluster".to_string(),
    };
    let raw: RawFile =
        toml::from_str(text).with_context(|| format!("invalid cluster file {origin}"))?;
    let key_lines = KeyLines::parse(text);
    let dir: PathBuf = match file.and_then(|p| p.parent()) {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let user_dir = file.map(|_| dir.clone());
    let mut issues: Vec<Issue> = Vec::new();

    let datastore = match Datastore::parse(&raw.cluster.datastore) {
        Ok(d) => d,
        Err(e) => {
            let mut i = Issue::error(None, format!("{e:#}"));
            i.key = Some("cluster.datastore".into());
            i.value = Some(rules::net::redact_password(&raw.cluster.datastore));
            issues.push(i);
            Datastore::Sqlite
        }
    };

    let mut boards = BTreeMap::new();
    for (b, r) in [
        (Board::Rpi4, raw.boards.rpi4),
        (Board::X86_64, raw.boards.x86_64),
    ] {
        let r = match r {
            Some(mut r) => {
                r.base = resolve_ref(&r.base, &dir);
                if !r.is_catalog() && r.sha256.is_none() && r.sha512.is_none() {
                    let mut i = Issue::error(
                        None,
                        format!(
                            "[boards.{b}] base {} is a URL or path: it needs `sha256` or `sha512`",
                            r.base
                        ),
                    );
                    i.key = Some(format!("boards.{b}.base"));
                    issues.push(i);
                }
                r
            }
            None => BaseRef {
                base: DEFAULT_BASES
                    .iter()
                    .find(|(db, _)| *db == b)
                    .map(|x| x.1.to_string())
                    .unwrap_or_default(),
                sha256: None,
                sha512: None,
                family: None,
            },
        };
        boards.insert(b, r);
    }

    let profiles = ProfileSet::load(user_dir.as_deref())?;
    let mut nodes = Vec::new();
    // hostname -> index of its first [[nodes]] entry (for key paths) and that entry's line
    let mut entry: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut seen_first_server = false;
    for (idx, rn) in raw.nodes.into_iter().enumerate() {
        let at = line_of(text, rn.hostname.span().start);
        let line = Some(at);
        let hostname = rn.hostname.get_ref().clone();
        entry.entry(hostname.clone()).or_insert((idx, at));
        let who = Some(hostname.clone());
        let board = match Board::parse(&rn.board) {
            Some(b) => b,
            None => {
                let mut i = Issue::error(
                    who,
                    format!(
                        "unknown board {:?} (known: {})",
                        rn.board,
                        Board::ALL.map(|b| b.as_str()).join(", ")
                    ),
                );
                i.key = Some("board".into());
                issues.push(i);
                continue;
            }
        };
        if !profiles.has(&rn.role) {
            let mut i = Issue::error(
                who,
                format!(
                    "unknown role {:?} (known: {}; or add profiles/{}.toml beside the cluster file)",
                    rn.role,
                    profiles.names().join(", "),
                    rn.role
                ),
            );
            i.key = Some("role".into());
            issues.push(i);
            continue;
        }
        let pname = rn.profile.clone().unwrap_or_else(|| rn.role.clone());
        let profile = match profiles.get(&pname) {
            Some(p) => p.clone(),
            None => {
                let mut i = Issue::error(
                    who,
                    format!(
                        "unknown profile {pname:?} (known: {})",
                        profiles.names().join(", ")
                    ),
                );
                i.key = Some("profile".into());
                issues.push(i);
                continue;
            }
        };
        let network = match parse_network(&rn) {
            Ok(n) => n,
            Err(mut i) => {
                i.node = who;
                issues.push(*i);
                continue;
            }
        };
        let first_server = profile.k3s_role == K3sRole::Server && !seen_first_server;
        seen_first_server |= profile.k3s_role == K3sRole::Server;
        nodes.push(NodeSpec {
            hostname,
            role: rn.role,
            board,
            network,
            interface: rn.interface,
            usb_quirks: rn.usb_quirks,
            data_disk: rn.data_disk,
            labels: rn.labels,
            taints: rn.taints,
            k3s_extra: rn.k3s,
            profile,
            first_server,
            line,
        });
    }

    let user_manifests = match &user_dir {
        Some(d) => read_user_manifests(d)?,
        None => Vec::new(),
    };
    let mut cluster = Cluster {
        name: raw.cluster.name,
        k3s_version: raw.cluster.k3s_version,
        server: raw.cluster.server,
        datastore,
        ssh_authorized_keys: raw.cluster.ssh_authorized_keys,
        timezone: raw.cluster.timezone,
        admin_user: raw.cluster.admin_user,
        domain: raw.cluster.domain,
        tls_san: raw.cluster.tls_san,
        etcd_snapshot_schedule: raw
            .cluster
            .etcd_snapshot_schedule
            .unwrap_or_else(|| "0 */12 * * *".into()),
        etcd_snapshot_retention: raw.cluster.etcd_snapshot_retention.unwrap_or(5),
        boards,
        k3s_mirror: resolve_ref(
            raw.k3s.mirror.as_deref().unwrap_or(DEFAULT_K3S_MIRROR),
            &dir,
        ),
        airgap: raw.k3s.airgap,
        addons: raw.addons,
        registries: raw.registries,
        nodes,
        file: file.map(Path::to_path_buf),
        user_manifests,
        warnings: Vec::new(),
    };
    issues.extend(validate(&cluster));
    // Point each issue at its line: the value's own line, else its node entry's.
    for i in &mut issues {
        let node = i.node.as_deref().and_then(|n| entry.get(n));
        i.line = match (&i.key, node) {
            (Some(k), Some((idx, l))) => key_lines
                .get(&format!("nodes.{idx}.{k}"))
                .filter(|_| !k.starts_with("profile ") && !k.starts_with("cluster."))
                .or_else(|| {
                    k.starts_with("cluster.")
                        .then(|| key_lines.get(k))
                        .flatten()
                })
                .or(Some(*l)),
            (None, Some((_, l))) => Some(*l),
            (Some(k), None) => key_lines.get(k),
            (None, None) => None,
        };
    }
    cluster.warnings = issues
        .iter()
        .filter(|i| i.severity == Severity::Warning)
        .map(Issue::to_string)
        .collect();
    let errors = issues.iter().any(|i| i.severity == Severity::Error);
    Ok(Report {
        origin,
        cluster: (!errors).then_some(cluster),
        issues,
    })
}

/// The node's network from its raw entry; a value breaking its rule comes back as an issue
/// (without node and line, which the caller adds).
fn parse_network(rn: &RawNode) -> std::result::Result<Network, Box<Issue>> {
    let broken = |key: &str, value: &str, v: rules::Violation| {
        Box::new(Issue::broken(Severity::Error, None, key, value, &v))
    };
    let Some(addr) = &rn.address else {
        if rn.gateway.is_some() || !rn.dns.is_empty() {
            return Err(Box::new(Issue::error(
                None,
                "`gateway`/`dns` need a static `address` (omit them for DHCP)",
            )));
        }
        return Ok(Network::Dhcp);
    };
    let (address, prefix) =
        rules::net::static_address(addr).map_err(|v| broken("address", addr, v))?;
    let gateway = match &rn.gateway {
        Some(g) => {
            Some(rules::net::gateway(address, prefix, g).map_err(|v| broken("gateway", g, v))?)
        }
        None => None,
    };
    let mut dns = Vec::new();
    for (i, d) in rn.dns.iter().enumerate() {
        dns.push(rules::net::dns_server(d).map_err(|v| broken(&format!("dns.{i}"), d, v))?);
    }
    Ok(Network::Static {
        address,
        prefix,
        gateway,
        dns,
    })
}

fn read_user_manifests(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mdir = dir.join("overlays").join("manifests");
    if !mdir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&mdir).with_context(|| format!("cannot list {}", mdir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", mdir.display()))?;
        let name = e.file_name().to_string_lossy().to_string();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let bytes = std::fs::read(e.path())
            .with_context(|| format!("cannot read {}", e.path().display()))?;
        out.push((name, bytes));
    }
    out.sort();
    Ok(out)
}

/// The profiles available to a cluster: built-in, then `<dir>/profiles/*.toml` (which may override).
pub struct ProfileSet {
    map: BTreeMap<String, Profile>,
}

impl ProfileSet {
    /// Built-in profiles plus the user's `<dir>/profiles/*.toml`.
    pub fn load(user_dir: Option<&Path>) -> Result<ProfileSet> {
        let mut map = BTreeMap::new();
        for (name, text) in BUILTIN_PROFILES {
            let p = Profile::parse(name, text, &format!("profiles/{name}.toml (built in)"))?;
            map.insert(name.to_string(), p);
        }
        if let Some(d) = user_dir {
            let pdir = d.join("profiles");
            if pdir.is_dir() {
                for e in std::fs::read_dir(&pdir)
                    .with_context(|| format!("cannot list {}", pdir.display()))?
                {
                    let e = e.with_context(|| format!("cannot list {}", pdir.display()))?;
                    let path = e.path();
                    if path.extension().and_then(|x| x.to_str()) != Some("toml") {
                        continue;
                    }
                    let name = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .with_context(|| format!("bad profile file name {}", path.display()))?
                        .to_string();
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read profile {}", path.display()))?;
                    let p = Profile::parse(&name, &text, &path.display().to_string())?;
                    map.insert(name, p);
                }
            }
        }
        Ok(ProfileSet { map })
    }
    /// True when `name` is a known profile.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
    /// The profile `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.map.get(name)
    }
    /// Known profile names.
    pub fn names(&self) -> Vec<&str> {
        self.map.keys().map(String::as_str).collect()
    }
}

// ---------------------------------------------------------------- commands

/// Arguments of `nodeforge init`.
#[derive(clap::Args)]
pub struct InitArgs {
    /// Directory to write `cluster.toml` and `nodeforge-secrets.toml` into.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite existing files (a new token breaks an existing cluster: be sure).
    #[arg(long)]
    pub force: bool,
    /// Keep the existing cluster file and secrets; add node passwords for new nodes.
    #[arg(long, conflicts_with = "force")]
    pub update: bool,
    /// With `--update`: add a cluster CA and an agent token to secrets that have none. Safe only
    /// before the first server's first boot (see docs/k3s-trust.md).
    #[arg(long, requires = "update")]
    pub adopt_ca: bool,
    /// Cluster file for `--update` (default `<DIR>/cluster.toml`).
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<PathBuf>,
    /// Secrets file (default `<dir of cluster file>/nodeforge-secrets.toml`).
    #[arg(long)]
    pub secrets: Option<PathBuf>,
}

/// Arguments of `nodeforge check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Cluster file (default `cluster.toml`; the embedded example when that does not exist).
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<PathBuf>,
    /// Secrets file (default `<dir of cluster file>/nodeforge-secrets.toml`); checked if present.
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Print the findings as one JSON object on stdout (for editors and CI): `ok`, `file`,
    /// `errors` and `warnings`, each issue with severity, file, line, node, key, value, rule,
    /// source and message. Exits non-zero when there are errors.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `nodeforge render`.
#[derive(clap::Args)]
pub struct RenderArgs {
    /// The node to render.
    pub node: String,
    /// Cluster file (default `cluster.toml`; the embedded example when that does not exist).
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<PathBuf>,
    /// Secrets file (default `<dir of cluster file>/nodeforge-secrets.toml`).
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Output directory (default `seed-<NODE>`).
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
    /// Base family to render for (default: from the board's base).
    #[arg(long, value_parser = parse_family)]
    pub family: Option<Family>,
    /// Render the generic seed (no hostname, token or node identity).
    #[arg(long)]
    pub generic: bool,
}

fn parse_family(s: &str) -> std::result::Result<Family, String> {
    toml::Value::String(s.to_string())
        .try_into::<Family>()
        .map_err(|_| "expected raspios, ubuntu-raspi, debian-raspi or debian-generic".to_string())
}

/// Run `nodeforge init`.
pub fn cmd_init(a: &InitArgs) -> Result<()> {
    let cluster_file = a
        .cluster
        .clone()
        .unwrap_or_else(|| a.dir.join("cluster.toml"));
    let secrets_file = a
        .secrets
        .clone()
        .unwrap_or_else(|| secrets::default_path(Some(&cluster_file)));
    if a.update {
        let cluster = load_cluster(Some(&cluster_file))?;
        let names: Vec<&str> = cluster.nodes.iter().map(|n| n.hostname.as_str()).collect();
        if secrets_file.exists() {
            let mut s = Secrets::load(&secrets_file)?;
            if a.adopt_ca && s.adopt_ca()? {
                s.save(&secrets_file)?;
                println!(
                    "{}: added a cluster CA and an agent token: rebuild every image before the first server's first boot",
                    secrets_file.display()
                );
            }
            let added = s.add_missing(names)?;
            let extra = crate::addons::add_missing(&mut s, &cluster)?;
            if !extra.is_empty() {
                s.save(&secrets_file)?;
                println!("{}: added {}", secrets_file.display(), extra.join(", "));
            }
            if added.is_empty() {
                println!("{}: every node has its password", secrets_file.display());
            } else {
                s.save(&secrets_file)?;
                println!(
                    "{}: added node passwords for {}",
                    secrets_file.display(),
                    added.join(", ")
                );
            }
        } else {
            let mut s = Secrets::generate(names)?;
            crate::addons::add_missing(&mut s, &cluster)?;
            s.save(&secrets_file)?;
            println!("wrote {} (mode 0600): back it up", secrets_file.display());
        }
        return Ok(());
    }
    for f in [&cluster_file, &secrets_file] {
        if f.exists() && !a.force {
            bail!(
                "{} already exists: use `nodeforge init --update` to add new nodes, or --force to overwrite (a new token cannot join an existing cluster)",
                f.display()
            );
        }
    }
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create directory {}", a.dir.display()))?;
    let example = parse_cluster(EXAMPLE_CLUSTER, None)?;
    crate::output::write_atomic(&cluster_file, EXAMPLE_CLUSTER.as_bytes())?;
    let names: Vec<&str> = example.nodes.iter().map(|n| n.hostname.as_str()).collect();
    let mut s = Secrets::generate(names)?;
    crate::addons::add_missing(&mut s, &example)?;
    s.save(&secrets_file)?;
    println!(
        "wrote {} (edit it, then `nodeforge check`)",
        cluster_file.display()
    );
    println!(
        "wrote {} (mode 0600): keep it private and back it up",
        secrets_file.display()
    );
    Ok(())
}

fn print_warnings(c: &Cluster) {
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
}

/// Warnings `check` adds about what it cannot see without the base images: the time zone is
/// checked against a base's `/usr/share/zoneinfo` only when `build` opens it.
fn unverified_timezone(c: &Cluster) -> Vec<Issue> {
    if matches!(c.timezone.as_str(), "UTC" | "Etc/UTC") {
        return Vec::new();
    }
    let mut v = Vec::new();
    for b in Board::ALL {
        if let (true, Some(r)) = (c.nodes.iter().any(|n| n.board == b), c.boards.get(&b)) {
            let i = Issue::broken(
                Severity::Warning,
                None,
                "cluster.timezone",
                &c.timezone,
                &rules::Violation::new(
                    &rules::host::TIMEZONE,
                    format!(
                        "timezone {:?} is not yet checked against /usr/share/zoneinfo of the {b} base {} (build checks it once the base is fetched)",
                        c.timezone, r.base
                    ),
                ),
            );
            v.push(i);
        }
    }
    v
}

/// `check --json`: the report as one JSON object on stdout; errors make the command fail.
fn check_json(path: Option<&Path>) -> Result<()> {
    let origin = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the embedded example cluster".into());
    let report = match path {
        None => analyze_cluster(EXAMPLE_CLUSTER, None),
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read cluster file {}", p.display()))
            .and_then(|t| analyze_cluster(&t, Some(p))),
    };
    let (issues, ok) = match report {
        Ok(mut r) => {
            if let Some(c) = &r.cluster {
                r.issues.extend(unverified_timezone(c));
            }
            let ok = r.errors().next().is_none();
            (r.issues, ok)
        }
        // Not a cluster file at all (syntax, unknown key, unreadable): one error, line from TOML.
        Err(e) => {
            let msg = format!("{e:#}");
            let mut i = Issue::error(None, msg.clone());
            i.line = msg
                .split("line ")
                .nth(1)
                .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok());
            (vec![i], false)
        }
    };
    let pick = |sev: Severity| -> Vec<serde_json::Value> {
        issues
            .iter()
            .filter(|i| i.severity == sev)
            .map(|i| i.to_json(&origin))
            .collect()
    };
    let out = serde_json::json!({
        "file": origin,
        "ok": ok,
        "errors": pick(Severity::Error),
        "warnings": pick(Severity::Warning),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !ok {
        bail!("{origin}: the cluster file has errors (see the JSON on stdout)");
    }
    Ok(())
}

/// Run `nodeforge check`.
pub fn cmd_check(a: &CheckArgs) -> Result<()> {
    let path = cluster_path(a.cluster.as_deref());
    if a.json {
        return check_json(path.as_deref());
    }
    let cluster = load_cluster(path.as_deref())?;
    print_warnings(&cluster);
    for w in unverified_timezone(&cluster) {
        eprintln!("warning: {w}");
    }
    print!("{}", plan(&cluster));
    let spath = a
        .secrets
        .clone()
        .unwrap_or_else(|| cluster.default_secrets_path());
    let loaded = if spath.exists() {
        Some(Secrets::load(&spath)?)
    } else {
        None
    };
    let lines = crate::addons::check_lines(&cluster, loaded.as_ref());
    for l in &lines {
        println!("{l}");
    }
    if lines.iter().any(|l| l.starts_with("ERROR ")) {
        bail!(
            "{}: add-on settings have errors (see above)",
            cluster.origin()
        );
    }
    if let Some(s) = loaded {
        let missing: Vec<&str> = cluster
            .nodes
            .iter()
            .filter(|n| !s.node_passwords.contains_key(&n.hostname))
            .map(|n| n.hostname.as_str())
            .collect();
        if !missing.is_empty() {
            println!(
                "secrets: {} lacks node passwords for {} (run `nodeforge init --update` or build)",
                spath.display(),
                missing.join(", ")
            );
        } else {
            println!("secrets: {} has every node's password", spath.display());
        }
        print!("{}", s.trust_report()?);
        if matches!(cluster.datastore, Datastore::Postgres { .. }) && s.datastore_password.is_none()
        {
            bail!(
                "datastore is postgres but {} has no `datastore_password`",
                spath.display()
            );
        }
    } else {
        println!(
            "secrets: {} does not exist yet (run `nodeforge init{}`)",
            spath.display(),
            if cluster.file.is_some() {
                " --update"
            } else {
                ""
            }
        );
    }
    println!("ok");
    Ok(())
}

/// The plan `check` prints: nodes, roles, boards, bases, add-ons, what each image holds. No secrets.
pub fn plan(c: &Cluster) -> String {
    let mut s = String::new();
    s.push_str(&format!("cluster {} ({})\n", c.name, c.origin()));
    s.push_str(&format!(
        "  k3s {}  server {}  datastore {}\n",
        c.k3s_version,
        c.server,
        c.datastore.kind()
    ));
    s.push_str(&format!(
        "  k3s mirror {}{}\n",
        c.k3s_mirror,
        if c.airgap {
            " (airgap images bundled)"
        } else {
            ""
        }
    ));
    let used: Vec<Board> = Board::ALL
        .into_iter()
        .filter(|b| c.nodes.iter().any(|n| n.board == *b))
        .collect();
    for b in used {
        if let Some(r) = c.boards.get(&b) {
            s.push_str(&format!(
                "  base {b}: {}{} (family {})\n",
                r.base,
                r.sha256
                    .as_deref()
                    .map(|h| format!(" sha256 {h}"))
                    .or_else(|| r.sha512.as_deref().map(|h| format!(" sha512 {h}")))
                    .unwrap_or_default(),
                r.expected_family(b).name()
            ));
        }
    }
    let addons = c.addons.enabled();
    s.push_str(&format!(
        "  add-ons: {}\n",
        if addons.is_empty() {
            "none".to_string()
        } else {
            addons.join(", ")
        }
    ));
    s.push_str(&format!("  nodes ({}):\n", c.nodes.len()));
    for n in &c.nodes {
        let net = match &n.network {
            Network::Dhcp => "dhcp".to_string(),
            Network::Static {
                address, prefix, ..
            } => format!("{address}/{prefix} on {}", n.interface_name()),
        };
        s.push_str(&format!(
            "    {:<16} {:<20} {:<7} {:<6} {}\n",
            n.hostname,
            n.role,
            n.board.as_str(),
            n.k3s_role().as_str(),
            net
        ));
        let mut holds = vec![format!(
            "k3s {} {} ({}){}",
            c.k3s_version,
            n.board.arch().as_str(),
            n.k3s_role().as_str(),
            if c.airgap { " + airgap images" } else { "" }
        )];
        if n.first_server && c.datastore == Datastore::Etcd {
            holds.push("cluster-init".into());
        }
        if !n.profile.packages.is_empty() {
            holds.push(format!("packages {}", n.profile.packages.join(" ")));
        }
        if n.profile.nvidia {
            holds.push("NVIDIA driver + container toolkit".into());
        }
        if let (Some(d), Some(m)) = (&n.data_disk, &n.profile.data_disk_mount) {
            holds.push(format!("data disk {d} -> {m}"));
        }
        if n.board == Board::Rpi4 {
            holds.push("cgroup flags".into());
            if !n.usb_quirks.is_empty() {
                holds.push(format!("usb quirks {}", n.usb_quirks.join(",")));
            }
        }
        if n.is_server() {
            let mut m: Vec<&str> = addons.clone();
            m.extend(c.user_manifests.iter().map(|x| x.0.as_str()));
            if !m.is_empty() {
                holds.push(format!("manifests {}", m.join(" ")));
            }
        }
        s.push_str(&format!("      image: {}\n", holds.join("; ")));
    }
    s
}

/// Run `nodeforge render`.
pub fn cmd_render(a: &RenderArgs) -> Result<()> {
    let path = cluster_path(a.cluster.as_deref());
    let cluster = load_cluster(path.as_deref())?;
    print_warnings(&cluster);
    let node = cluster.node(&a.node)?;
    let family = match a.family {
        Some(f) => f,
        None => cluster.base(node.board)?.expected_family(node.board),
    };
    let secrets = if a.generic {
        None
    } else {
        let spath = a
            .secrets
            .clone()
            .unwrap_or_else(|| cluster.default_secrets_path());
        Some(Secrets::load(&spath)?)
    };
    let epoch = crate::pipeline::source_date_epoch()?;
    let seed = crate::seed::render(&cluster, node, secrets.as_ref(), family, epoch)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("seed-{}", node.hostname)));
    if !out.exists() {
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create directory {}", out.display()))?;
        // The seed holds secrets: keep the new directory private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {}", out.display()))?;
        }
    }
    let mut written = Vec::new();
    for (name, bytes) in &seed.files {
        crate::output::write_atomic_mode(&out.join(name), bytes, 0o600)?;
        written.push(name.clone());
    }
    if let Some(pi) = &seed.pi {
        let cmd = format!("{}\n", pi.cmdline_add.join(" "));
        crate::output::write_atomic_mode(&out.join("cmdline-add.txt"), cmd.as_bytes(), 0o600)?;
        let mut cfg = String::new();
        for (sec, line) in &pi.config {
            cfg.push_str(&format!("[{sec}] {line}\n"));
        }
        crate::output::write_atomic_mode(&out.join("config-add.txt"), cfg.as_bytes(), 0o600)?;
        written.push("cmdline-add.txt".into());
        written.push("config-add.txt".into());
    }
    println!(
        "rendered {} ({}, family {}{}) into {}: {}",
        node.hostname,
        node.role,
        family.name(),
        if a.generic { ", generic" } else { "" },
        out.display(),
        written.join(", ")
    );
    println!("files may hold secrets (mode 0600): do not share them");
    Ok(())
}
