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
//!
//! **First-boot hardening** (every full seed):
//! - The last first-boot step (`scrub-seed.sh`) replaces the seed's `user-data` with a copy that
//!   carries no secret (the same per-boot settings without `write_files`, which carries the k3s
//!   `config.yaml` and the node password, and without `runcmd`/`power_state`, which ran once;
//!   rendered here and written to [`SCRUBBED_USER_DATA`]); `meta-data` stays, so the instance-id
//!   is unchanged and cloud-init never re-runs its per-instance modules. cloud-init itself keeps
//!   its copies of user-data root-only (`user-data.txt`, `cloud-config.txt` 0600, `obj.pkl` 0400,
//!   cloud-init `stages.py`, `handlers/cloud_config.py`).
//! - k3s's unit gets a drop-in whose `ExecStartPre` (`time-wait.sh`) keeps the clock at or after the
//!   build time and makes the first start wait, at most [`CLOCK_WAIT_SECONDS`], for a synchronised
//!   clock (not when the kernel took the time from a battery-backed RTC that was not behind the
//!   build time); a `bootcmd` applies the same floor early on every boot (apt refuses repositories whose
//!   `Release` file is "not valid yet").
//! - gpu roles: nouveau blacklisted before the driver, [`GPU_UNIT`] retries the setup every boot
//!   until it succeeds, and cloud-init reboots once (`power_state`) when the driver waits for it.

mod k3s;
mod manifests;
mod network;
mod units;

pub use crate::yaml::to_yaml;
pub use k3s::{k3s_config, SERVER_TAINT};
pub use manifests::server_manifests;
pub use network::{dhcp_network_config, network_config};
pub use units::{clock_dropin, gpu_unit};

use crate::base::Family;
use crate::config::{Board, Cluster, NodeSpec};
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
    (
        "scrub-seed.sh",
        include_str!("../overlays/scripts/scrub-seed.sh"),
    ),
    (
        "time-wait.sh",
        include_str!("../overlays/scripts/time-wait.sh"),
    ),
];

/// Where the secret-free copy of a node's `user-data` is written on the node; `scrub-seed.sh`
/// puts it in place of the seed's `user-data` after the first boot.
pub const SCRUBBED_USER_DATA: &str = "/usr/local/lib/nodeforge/user-data.scrubbed";
/// Seconds the first k3s start waits for a synchronised clock before it starts anyway.
pub const CLOCK_WAIT_SECONDS: u32 = 180;
/// The systemd unit that retries a GPU worker's setup on every boot until it succeeds.
pub const GPU_UNIT: &str = "nodeforge-gpu-setup.service";
/// Created by the GPU setup when the driver is installed but only a reboot loads it; cloud-init's
/// `power_state` reboots the first boot only when it exists.
pub const GPU_REBOOT_FLAG: &str = "/run/nodeforge/gpu-reboot";

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
    /// Files at the root of the seed FAT: `user-data`, `meta-data`, and `network-config` (every
    /// node except generic seeds and DHCP x86_64 nodes without `interface`). `user-data` may hold secrets (token, node password).
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

#[derive(Serialize)]
struct PowerState {
    mode: String,
    message: String,
    condition: Vec<String>,
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bootcmd: Vec<Vec<String>>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    power_state: Option<PowerState>,
}

#[derive(Serialize)]
struct MetaData {
    #[serde(rename = "instance-id")]
    instance_id: String,
    #[serde(rename = "local-hostname", skip_serializing_if = "Option::is_none")]
    local_hostname: Option<String>,
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

/// Render the seed of `node`. `secrets = None` renders the generic seed (see the module docs).
/// `epoch` (Unix seconds, the build's `SOURCE_DATE_EPOCH`) is the floor of the node's clock.
pub fn render(
    cluster: &Cluster,
    node: &NodeSpec,
    secrets: Option<&Secrets>,
    family: Family,
    epoch: i64,
) -> Result<Seed> {
    let c = cluster;
    let n = node;
    let p = &n.profile;
    let full = secrets.is_some();
    let pi = (n.board == Board::Rpi4).then(|| PiBoot::for_node(&n.usb_quirks));

    let mut write_files = Vec::new();
    let mut runcmd: Vec<Vec<String>> = Vec::new();

    // The clock floor is the build time, and never before the cluster CA's certificates begin:
    // a node that believes it is earlier could not validate them and k3s would refuse the join.
    let epoch = match secrets.and_then(|s| s.ca.as_ref()) {
        Some(ca) => epoch.max(ca.valid_from()?),
        None => epoch,
    };

    // Every boot, before anything else: a clock earlier than the build time (a Pi without NTP yet)
    // moves forward to it.
    let bootcmd = vec![cmd(&[
        "sh",
        "-c",
        &format!("[ \"$(date +%s)\" -ge {epoch} ] || date -u -s @{epoch}"),
    ])];

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
        // The cluster CA goes in before k3s's first start (write_files runs before runcmd), so
        // k3s uses it instead of making its own (docs/k3s-trust.md).
        if let (true, Some(ca)) = (n.is_server(), &s.ca) {
            for f in ca.server_files() {
                write_files.push(WriteFile::new(
                    &format!("{}/{}", crate::ca::TLS_DIR, f.path),
                    f.content,
                    f.mode,
                ));
            }
        }
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
        // nouveau takes NVIDIA cards on Debian: blacklisted before the driver goes in (the script
        // rebuilds the initramfs), effective after the one reboot below.
        write_files.push(WriteFile::new(
            "/etc/modprobe.d/nodeforge-blacklist-nouveau.conf",
            "blacklist nouveau\noptions nouveau modeset=0\n".into(),
            "0644",
        ));
        write_files.push(script("nvidia.sh")?);
        write_files.push(WriteFile::new(
            &format!("/etc/systemd/system/{GPU_UNIT}"),
            gpu_unit(),
            "0644",
        ));
        // Through the unit: bounded by its timeout, its outcome in `systemctl status`. A failure
        // does not stop the steps after it (cloud-init's runcmd goes on), so the node still joins.
        runcmd.push(cmd(&["systemctl", "daemon-reload"]));
        runcmd.push(cmd(&["systemctl", "enable", GPU_UNIT]));
        runcmd.push(cmd(&["systemctl", "start", GPU_UNIT]));
    }
    if full {
        // Before the k3s unit exists: its first start waits for the clock.
        let unit = match n.k3s_role() {
            crate::config::K3sRole::Server => "k3s",
            crate::config::K3sRole::Agent => "k3s-agent",
        };
        write_files.push(script("time-wait.sh")?);
        write_files.push(WriteFile::new(
            &format!("/etc/systemd/system/{unit}.service.d/10-nodeforge-clock.conf"),
            clock_dropin(epoch),
            "0644",
        ));
        // k3s starts only after packages, disks and drivers are in place.
        write_files.push(script("install-k3s.sh")?);
        runcmd.push(cmd(&[
            "sh",
            &format!("{SCRIPT_DIR}/install-k3s.sh"),
            n.k3s_role().as_str(),
            seed_location(family),
        ]));
        // Last step: the seed's secrets are on root now; take them off the seed.
        write_files.push(script("scrub-seed.sh")?);
        runcmd.push(cmd(&[
            "sh",
            &format!("{SCRIPT_DIR}/scrub-seed.sh"),
            seed_location(family),
            SCRUBBED_USER_DATA,
        ]));
    }

    let mut ud = CloudConfig {
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
        bootcmd,
        growpart: Growpart {
            mode: "auto".into(),
            devices: vec!["/".into()],
        },
        resize_rootfs: true,
        package_update: (!p.packages.is_empty()).then_some(true),
        packages: p.packages.clone(),
        write_files,
        runcmd,
        power_state: p.nvidia.then(|| PowerState {
            mode: "reboot".into(),
            message: "nodeforge: rebooting once into the NVIDIA driver".into(),
            condition: cmd(&["test", "-e", GPU_REBOOT_FLAG]),
        }),
    };
    if full {
        // The copy that replaces user-data after the first boot: the per-boot settings, without the
        // per-instance steps that carry the secrets (write_files) or already ran (runcmd, power_state).
        let write_files = std::mem::take(&mut ud.write_files);
        let runcmd = std::mem::take(&mut ud.runcmd);
        let power_state = ud.power_state.take();
        let scrubbed = format!(
            "#cloud-config\n# nodeforge: this node's seed after its first boot, without the cluster token and\n\
             # node password (root-only files on the node now); write_files and runcmd ran once.\n{}",
            to_yaml(&ud)?
        );
        ud.write_files = write_files;
        ud.runcmd = runcmd;
        ud.power_state = power_state;
        ud.write_files
            .push(WriteFile::new(SCRUBBED_USER_DATA, scrubbed, "0600"));
    }
    let user_data = format!("#cloud-config\n{}", to_yaml(&ud)?);
    // A generic image has no node yet and no network-config: cloud-init's fallback (DHCP on the
    // first NIC) applies, and any seed of the base was dropped when composing.
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
