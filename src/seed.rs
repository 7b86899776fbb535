//! Pure rendering of a node's first-boot seed: cloud-init `user-data`, `meta-data`, `network-config`,
//! the k3s `config.yaml`, and the Pi boot edits. Same inputs → same bytes.
//!
//! YAML is emitted with `serde-saphyr` from serde structs (it quotes YAML 1.1 booleans such as `yes`,
//! `on`, `no` that cloud-init's PyYAML would otherwise read as booleans), never from string templates.
//!
//! **Generic seed** (`secrets = None`): the image is not yet tied to a node. It holds `meta-data` with
//! a content-derived instance-id and no hostname, no `network-config` (DHCP), and a `user-data` with
//! the timezone, the admin user and SSH keys, password login off, root grow, the role's packages,
//! services and (for gpu roles) the NVIDIA install, but no hostname, no k3s `config.yaml`, no node
//! password, no data-disk step and no k3s install step (a server without its token would start a
//! new cluster). Flash-time seeding replaces all three files with the node's full seed, whose new
//! instance-id makes cloud-init run its per-instance steps again.

mod k3s;

pub use k3s::k3s_config;

use crate::base::Family;
use crate::config::{Board, Cluster, Network, NodeSpec};
use crate::pi::PiBoot;
use crate::secrets::Secrets;
use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Directory of the nodeforge helper scripts on the node.
pub const SCRIPT_DIR: &str = "/usr/local/lib/nodeforge";
/// Where servers pick up auto-deploy manifests.
pub const MANIFEST_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// Folder of the k3s bundle at the root of the seed FAT.
pub const BUNDLE_DIR: &str = "nodeforge";

/// Helper scripts written onto nodes (file name, text): static files from `overlays/scripts/`,
/// parameterised through their arguments only.
pub const SCRIPTS: &[(&str, &str)] = &[
    (
        "install-k3s.sh",
        include_str!("../overlays/scripts/install-k3s.sh"),
    ),
    (
        "data-disk.sh",
        include_str!("../overlays/scripts/data-disk.sh"),
    ),
    ("nvidia.sh", include_str!("../overlays/scripts/nvidia.sh")),
    (
        "pi-boot-persist.sh",
        include_str!("../overlays/scripts/pi-boot-persist.sh"),
    ),
];

/// Add-on manifests shipped in the binary (add-on name, file name, text).
pub const ADDON_MANIFESTS: &[(&str, &str, &str)] = &[
    (
        "metallb",
        "metallb.yaml",
        include_str!("../overlays/manifests/metallb.yaml"),
    ),
    (
        "longhorn",
        "longhorn.yaml",
        include_str!("../overlays/manifests/longhorn.yaml"),
    ),
    (
        "nvidia-device-plugin",
        "nvidia-device-plugin.yaml",
        include_str!("../overlays/manifests/nvidia-device-plugin.yaml"),
    ),
];

/// A rendered seed.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed {
    /// Files at the root of the seed FAT: `user-data`, `meta-data`, and `network-config` for static
    /// nodes. `user-data` may hold secrets (token, node password).
    pub files: Vec<(String, Vec<u8>)>,
    /// Pi boot edits (rpi4 nodes).
    pub pi: Option<PiBoot>,
    /// The instance-id written to `meta-data`.
    pub instance_id: String,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // user-data holds secrets: show names and sizes only.
        f.debug_struct("Seed")
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|(n, b)| format!("{n} ({} bytes)", b.len()))
                    .collect::<Vec<_>>(),
            )
            .field("pi", &self.pi)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl Seed {
    /// The content of seed file `name`.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }
}

/// Where the install step finds the seed FAT on a running node of `family`.
pub fn seed_location(family: Family) -> &'static str {
    match family {
        // The seed is the boot FAT, mounted at /boot/firmware.
        Family::Raspios | Family::UbuntuRaspi => "/boot/firmware",
        // A CIDATA partition the OS does not mount.
        Family::DebianRaspi | Family::DebianGeneric => "LABEL=CIDATA",
    }
}

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

// ---------------------------------------------------------------- cloud-config structs

#[derive(Serialize)]
struct User {
    name: String,
    gecos: String,
    shell: String,
    sudo: String,
    lock_passwd: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh_authorized_keys: Vec<String>,
}

#[derive(Serialize)]
struct Growpart {
    mode: String,
    devices: Vec<String>,
}

#[derive(Serialize)]
struct WriteFile {
    path: String,
    content: String,
    owner: String,
    permissions: String,
}

impl WriteFile {
    fn new(path: &str, content: String, permissions: &str) -> WriteFile {
        WriteFile {
            path: path.to_string(),
            content,
            owner: "root:root".into(),
            permissions: permissions.into(),
        }
    }
}

#[derive(Serialize)]
struct CloudConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fqdn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manage_etc_hosts: Option<bool>,
    timezone: String,
    users: Vec<User>,
    ssh_pwauth: bool,
    disable_root: bool,
    growpart: Growpart,
    resize_rootfs: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_update: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    packages: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    write_files: Vec<WriteFile>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runcmd: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct MetaData {
    #[serde(rename = "instance-id")]
    instance_id: String,
    #[serde(rename = "local-hostname", skip_serializing_if = "Option::is_none")]
    local_hostname: Option<String>,
}

#[derive(Serialize)]
struct NetRoute {
    to: String,
    via: String,
}

#[derive(Serialize)]
struct Nameservers {
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    search: Vec<String>,
}

#[derive(Serialize)]
struct Ethernet {
    dhcp4: bool,
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<NetRoute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<Nameservers>,
}

#[derive(Serialize)]
struct NetV2 {
    version: u8,
    ethernets: std::collections::BTreeMap<String, Ethernet>,
}

#[derive(Serialize)]
struct NetworkConfig {
    network: NetV2,
}

// ---------------------------------------------------------------- rendering

fn script(name: &str) -> Result<WriteFile> {
    let text = SCRIPTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t.to_string())
        .with_context(|| format!("no built-in script {name}"))?;
    Ok(WriteFile::new(
        &format!("{SCRIPT_DIR}/{name}"),
        text,
        "0755",
    ))
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `network-config` (v2) for a static node; `None` for DHCP (cloud-init's fallback is DHCP on the
/// first NIC, and cloud-init 22.4 mishandles `match: name` globs).
pub fn network_config(c: &Cluster, n: &NodeSpec) -> Result<Option<String>> {
    let Network::Static {
        address,
        prefix,
        gateway,
        dns,
    } = &n.network
    else {
        return Ok(None);
    };
    let eth = Ethernet {
        dhcp4: false,
        addresses: vec![format!("{address}/{prefix}")],
        routes: gateway
            .iter()
            .map(|g| NetRoute {
                to: "0.0.0.0/0".into(),
                via: g.to_string(),
            })
            .collect(),
        nameservers: (!dns.is_empty()).then(|| Nameservers {
            addresses: dns.iter().map(|d| d.to_string()).collect(),
            search: c.domain.iter().cloned().collect(),
        }),
    };
    let mut ethernets = std::collections::BTreeMap::new();
    ethernets.insert(n.interface_name().to_string(), eth);
    Ok(Some(to_yaml(&NetworkConfig {
        network: NetV2 {
            version: 2,
            ethernets,
        },
    })?))
}

/// Server auto-deploy manifests for the cluster's add-ons and user manifests (file name, bytes).
pub fn server_manifests(c: &Cluster) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let on = c.addons.enabled();
    for (addon, file, text) in ADDON_MANIFESTS {
        if on.contains(addon) {
            out.push((file.to_string(), text.as_bytes().to_vec()));
        }
    }
    if let Some(m) = &c.addons.metallb {
        out.push(("metallb-pool.yaml".into(), metallb_pool(m)?.into_bytes()));
    }
    out.extend(crate::addons::manifests(c)?);
    for (name, bytes) in &c.user_manifests {
        out.push((name.clone(), bytes.clone()));
    }
    Ok(out)
}

#[derive(Serialize)]
struct ObjMeta {
    name: String,
    namespace: String,
}

#[derive(Serialize)]
struct PoolSpec {
    addresses: Vec<String>,
}

#[derive(Serialize)]
struct L2Spec {
    #[serde(rename = "ipAddressPools")]
    ip_address_pools: Vec<String>,
}

#[derive(Serialize)]
struct Resource<S> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: ObjMeta,
    spec: S,
}

/// The MetalLB address pool and its L2 advertisement (two YAML documents). The CRDs come from the
/// chart; k3s's deploy controller retries until they exist.
fn metallb_pool(m: &crate::config::MetalLb) -> Result<String> {
    let meta = || ObjMeta {
        name: "nodeforge".into(),
        namespace: "metallb-system".into(),
    };
    let pool = Resource {
        api_version: "metallb.io/v1beta1".into(),
        kind: "IPAddressPool".into(),
        metadata: meta(),
        spec: PoolSpec {
            addresses: m.addresses.clone(),
        },
    };
    let l2 = Resource {
        api_version: "metallb.io/v1beta1".into(),
        kind: "L2Advertisement".into(),
        metadata: meta(),
        spec: L2Spec {
            ip_address_pools: vec!["nodeforge".into()],
        },
    };
    Ok(format!("{}---\n{}", to_yaml(&pool)?, to_yaml(&l2)?))
}

/// Render the seed of `node`. `secrets = None` renders the generic seed (see the module docs).
pub fn render(
    cluster: &Cluster,
    node: &NodeSpec,
    secrets: Option<&Secrets>,
    family: Family,
) -> Result<Seed> {
    let c = cluster;
    let n = node;
    let p = &n.profile;
    let full = secrets.is_some();
    let pi = (n.board == Board::Rpi4).then(|| PiBoot::for_node(&n.usb_quirks));

    let mut write_files = Vec::new();
    let mut runcmd: Vec<Vec<String>> = Vec::new();

    if let Some(s) = secrets {
        let k3s = k3s_config(c, n, s)?;
        write_files.push(WriteFile::new(
            "/etc/rancher/k3s/config.yaml",
            to_yaml(&k3s)?,
            "0600",
        ));
        write_files.push(WriteFile::new(
            "/etc/rancher/node/password",
            s.node_password(&n.hostname)?.to_string(),
            "0600",
        ));
        for (path, text) in crate::addons::node_files(c, s)? {
            write_files.push(WriteFile::new(&path, text, "0600"));
        }
        if n.is_server() {
            for (name, text) in crate::addons::secret_manifests(c, s)? {
                let path = format!("{MANIFEST_DIR}/{name}");
                write_files.push(WriteFile::new(&path, text, "0600"));
            }
            for (name, bytes) in server_manifests(c)? {
                let text = String::from_utf8(bytes)
                    .with_context(|| format!("manifest {name} is not UTF-8 text"))?;
                write_files.push(WriteFile::new(
                    &format!("{MANIFEST_DIR}/{name}"),
                    text,
                    "0600",
                ));
            }
        }
    }

    // Debian raspi rewrites cmdline.txt/config.txt on kernel updates: persist the Pi settings.
    if let (Some(b), Family::DebianRaspi) = (&pi, family) {
        write_files.push(script("pi-boot-persist.sh")?);
        let mut args = vec![
            "sh".to_string(),
            format!("{SCRIPT_DIR}/pi-boot-persist.sh"),
            b.cmdline_add.join(" "),
        ];
        args.extend(b.config.iter().map(|(_, l)| l.clone()));
        runcmd.push(args);
    }

    if let (Some(disk), Some(mnt), true) = (&n.data_disk, &p.data_disk_mount, full) {
        write_files.push(script("data-disk.sh")?);
        runcmd.push(cmd(&[
            "sh",
            &format!("{SCRIPT_DIR}/data-disk.sh"),
            disk,
            mnt,
        ]));
    }
    if p.multipath_blacklist {
        write_files.push(WriteFile::new(
            "/etc/multipath.conf",
            "# nodeforge: keep multipathd off Longhorn's disks\nblacklist {\n    devnode \"^sd[a-z0-9]+\"\n}\n".into(),
            "0644",
        ));
        runcmd.push(cmd(&[
            "sh",
            "-c",
            "systemctl disable --now multipathd.socket multipathd.service 2>/dev/null || true",
        ]));
    }
    for s in &p.enable_services {
        runcmd.push(cmd(&["systemctl", "enable", "--now", s]));
    }
    for s in &p.disable_services {
        runcmd.push(cmd(&["systemctl", "disable", "--now", s]));
    }
    if p.nvidia {
        write_files.push(script("nvidia.sh")?);
        runcmd.push(cmd(&["sh", &format!("{SCRIPT_DIR}/nvidia.sh")]));
    }
    if full {
        // Last step: k3s starts only after packages, disks and drivers are in place.
        write_files.push(script("install-k3s.sh")?);
        runcmd.push(cmd(&[
            "sh",
            &format!("{SCRIPT_DIR}/install-k3s.sh"),
            n.k3s_role().as_str(),
            seed_location(family),
        ]));
    }

    let ud = CloudConfig {
        hostname: full.then(|| n.hostname.clone()),
        fqdn: match (&c.domain, full) {
            (Some(d), true) => Some(format!("{}.{d}", n.hostname)),
            _ => None,
        },
        manage_etc_hosts: full.then_some(true),
        timezone: c.timezone.clone(),
        users: vec![User {
            name: c.admin_user.clone(),
            gecos: "nodeforge admin".into(),
            shell: "/bin/bash".into(),
            sudo: "ALL=(ALL) NOPASSWD:ALL".into(),
            lock_passwd: true,
            ssh_authorized_keys: c.ssh_authorized_keys.clone(),
        }],
        ssh_pwauth: false,
        disable_root: true,
        growpart: Growpart {
            mode: "auto".into(),
            devices: vec!["/".into()],
        },
        resize_rootfs: true,
        package_update: (!p.packages.is_empty()).then_some(true),
        packages: p.packages.clone(),
        write_files,
        runcmd,
    };
    let user_data = format!("#cloud-config\n{}", to_yaml(&ud)?);
    let net = if full { network_config(c, n)? } else { None };

    // instance-id from the rendered content: a changed config re-runs cloud-init, an unchanged
    // rebuild keeps it.
    let mut h = Sha256::new();
    h.update(user_data.as_bytes());
    h.update([0u8]);
    if let Some(nc) = &net {
        h.update(nc.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    let instance_id = format!("nodeforge-{}", &digest[..16]);
    let md = MetaData {
        instance_id: instance_id.clone(),
        local_hostname: full.then(|| n.hostname.clone()),
    };
    let mut files = vec![
        ("meta-data".to_string(), to_yaml(&md)?.into_bytes()),
        ("user-data".to_string(), user_data.into_bytes()),
    ];
    if let Some(nc) = net {
        files.push(("network-config".to_string(), nc.into_bytes()));
    }
    Ok(Seed {
        files,
        pi,
        instance_id,
    })
}
