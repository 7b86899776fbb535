//! `nodeforge inspect`: describe an image (table, partitions, family, seed, k3s bundle).

use crate::ca::TokenKind;
use crate::fat::{self, FileData};
use crate::partition::{self, PartType, TableKind};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Arguments of `nodeforge inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// A raw image (`.img`) or a block device.
    pub image: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One partition as shown by inspect.
#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub part_type: String,
    pub unique_guid: Option<String>,
    pub name: String,
    /// Filesystem found in the partition (`vfat`, `ext4`), when recognised.
    pub filesystem: Option<String>,
    /// Filesystem label (FAT or ext4).
    pub label: Option<String>,
}

/// What inspect found in an image.
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub size: u64,
    pub table: String,
    pub disk_id: String,
    pub family: Option<String>,
    pub family_error: Option<String>,
    pub partitions: Vec<PartitionReport>,
    /// Seed files found at the root of a FAT (`user-data`, `meta-data`, `network-config`).
    pub seed_files: Vec<String>,
    /// Partition number of the FAT holding the seed.
    pub seed_partition: Option<u32>,
    /// `nodeforge/bundle.json` of the seed FAT, when present.
    pub bundle: Option<serde_json::Value>,
    /// Which join tokens and CA files the seed carries (never a value); `None` without a node seed.
    pub trust: Option<Trust>,
    /// The kinds of secret the seed's `user-data` carries (`cluster token`, `node password`,
    /// `datastore password`); empty for a generic image or a seed scrubbed after first boot.
    /// Never the values.
    pub secrets: Vec<String>,
}

/// The k3s trust material a node seed carries: token kinds and CA file names, never values.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Trust {
    /// k3s role the seed installs (`server` or `agent`), from its install step.
    pub role: Option<String>,
    /// Kind of `token` in the node's `/etc/rancher/k3s/config.yaml`.
    pub token: Option<TokenKind>,
    /// Kind of `agent-token` (servers only).
    pub agent_token: Option<TokenKind>,
    /// CA files written into the k3s `server/tls` directory: `path mode`.
    pub ca_files: Vec<String>,
}

/// Read the trust material from a seed's `user-data` (cloud-config YAML); `None` when it holds no
/// k3s config (a generic seed).
pub fn trust_of(user_data: &[u8]) -> Option<Trust> {
    let text = std::str::from_utf8(user_data).ok()?;
    let ud: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    let mut t = Trust::default();
    let mut found = false;
    for f in ud.get("write_files")?.as_array()? {
        let path = f.get("path").and_then(|v| v.as_str()).unwrap_or("");
        let content = f.get("content").and_then(|v| v.as_str()).unwrap_or("");
        let mode = f.get("permissions").and_then(|v| v.as_str()).unwrap_or("?");
        if path == "/etc/rancher/k3s/config.yaml" {
            found = true;
            let cfg: serde_json::Value = serde_saphyr::from_str(content).ok()?;
            let kind = |k: &str| {
                cfg.get(k)
                    .and_then(|v| v.as_str())
                    .map(crate::ca::token_kind)
            };
            t.token = kind("token");
            t.agent_token = kind("agent-token");
        } else if let Some(rel) = path.strip_prefix(&format!("{}/", crate::ca::TLS_DIR)) {
            t.ca_files.push(format!("{rel} {mode}"));
        }
    }
    for c in ud
        .get("runcmd")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let args: Vec<&str> = c
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if args.len() >= 3 && args[1].ends_with("/install-k3s.sh") {
            t.role = Some(args[2].to_string());
        }
    }
    found.then_some(t)
}

/// One line describing a token kind, for the table output.
fn describe(k: &TokenKind) -> String {
    match k {
        TokenKind::Secure { ca_sha256, user } => {
            let who = match user.as_str() {
                "node" => "agent token",
                "server" => "server token",
                _ => "token",
            };
            format!(
                "{who}, secure K10 (pins CA sha256 {}…)",
                &ca_sha256[..ca_sha256.len().min(16)]
            )
        }
        TokenKind::Short => "short (does not pin the CA)".into(),
        TokenKind::Invalid => "not a valid k3s token".into(),
    }
}

/// The kinds of secret a nodeforge `user-data` carries: the k3s `config.yaml` and node password
/// it writes. Text that is not YAML is searched for the same keys. Never returns values.
pub fn secrets_in_user_data(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !out.iter().any(|x| x == s) {
            out.push(s.to_string());
        }
    };
    let Ok(v) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        if text.contains("token:") {
            add("cluster token (user-data is not valid YAML)");
        }
        return out;
    };
    let files = v
        .get("write_files")
        .and_then(|w| w.as_array())
        .cloned()
        .unwrap_or_default();
    for f in &files {
        let path = f.get("path").and_then(|p| p.as_str()).unwrap_or("");
        let content = f.get("content").and_then(|c| c.as_str()).unwrap_or("");
        match path {
            "/etc/rancher/node/password" if !content.trim().is_empty() => add("node password"),
            p if p.starts_with("/etc/rancher/k3s/config.yaml") => {
                let k: serde_json::Value = serde_saphyr::from_str(content).unwrap_or_default();
                if k.get("token").is_some() || k.get("agent-token").is_some() {
                    add("cluster token");
                }
                let ep = k.get("datastore-endpoint").and_then(|e| e.as_str());
                if ep.is_some_and(|e| {
                    e.split("://")
                        .nth(1)
                        .is_some_and(|r| r.contains(':') && r.contains('@'))
                }) {
                    add("datastore password");
                }
            }
            _ => {}
        }
    }
    out
}

const SEED_NAMES: [&str; 3] = ["meta-data", "user-data", "network-config"];

fn type_string(t: &PartType) -> String {
    match t {
        PartType::Mbr(b) => format!("0x{b:02x}"),
        PartType::Gpt(g) => partition::guid_string(g),
    }
}

/// Inspect the image at `path`.
pub fn inspect(path: &Path) -> Result<Report> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = crate::disk::size_of(&file)
        .with_context(|| format!("reading the size of {}", path.display()))?;
    let layout = partition::read_layout(&mut file, path)
        .with_context(|| format!("reading the partition table of {}", path.display()))?;
    let (table, disk_id) = match &layout.table {
        TableKind::Mbr { disk_signature } => ("mbr".to_string(), format!("0x{disk_signature:08x}")),
        TableKind::Gpt { disk_guid } => ("gpt".to_string(), partition::guid_string(disk_guid)),
    };
    let mut report = Report {
        image: path.display().to_string(),
        size,
        table,
        disk_id,
        family: None,
        family_error: None,
        partitions: Vec::new(),
        seed_files: Vec::new(),
        seed_partition: None,
        bundle: None,
        trust: None,
        secrets: Vec::new(),
    };
    for p in &layout.partitions {
        let probed = crate::base::probe_fs(&file, p);
        let filesystem = match &probed {
            crate::base::FsKind::Fat { .. } => Some("vfat".to_string()),
            crate::base::FsKind::Ext4 { .. } => Some("ext4".to_string()),
            _ => None,
        };
        let label = probed.label().map(str::to_string);
        if matches!(probed, crate::base::FsKind::Fat { .. }) {
            if let Ok(vol) = fat::read_fat(&file, p.start, p.size) {
                let seeds: Vec<String> = vol
                    .files
                    .iter()
                    .filter(|f| SEED_NAMES.iter().any(|s| f.path.eq_ignore_ascii_case(s)))
                    .map(|f| f.path.clone())
                    .collect();
                if !seeds.is_empty() && report.seed_partition.is_none() {
                    report.secrets = vol
                        .files
                        .iter()
                        .find(|f| f.path.eq_ignore_ascii_case("user-data"))
                        .and_then(|f| match &f.data {
                            FileData::Bytes(b) => {
                                Some(secrets_in_user_data(&String::from_utf8_lossy(b)))
                            }
                            FileData::Path(_) => None,
                        })
                        .unwrap_or_default();
                    report.seed_files = seeds;
                    report.seed_partition = Some(p.number);
                    report.trust = vol
                        .files
                        .iter()
                        .find(|f| f.path.eq_ignore_ascii_case("user-data"))
                        .and_then(|f| match &f.data {
                            FileData::Bytes(b) => trust_of(b),
                            FileData::Path(_) => None,
                        });
                    report.bundle = vol
                        .files
                        .iter()
                        .find(|f| f.path.eq_ignore_ascii_case("nodeforge/bundle.json"))
                        .and_then(|f| match &f.data {
                            FileData::Bytes(b) => serde_json::from_slice(b).ok(),
                            FileData::Path(_) => None,
                        });
                }
            }
        }
        report.partitions.push(PartitionReport {
            number: p.number,
            start: p.start,
            size: p.size,
            part_type: type_string(&p.part_type),
            unique_guid: p.unique_guid.as_ref().map(partition::guid_string),
            name: p.name.clone(),
            filesystem,
            label,
        });
    }
    match crate::base::open(path, None) {
        Ok(b) => report.family = Some(format!("{:?}", b.family)),
        Err(e) => report.family_error = Some(format!("{e:#}")),
    }
    Ok(report)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// Run `nodeforge inspect`.
pub fn cmd_inspect(a: &InspectArgs) -> Result<()> {
    let r = inspect(&a.image)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).context("serialising the report")?
        );
        return Ok(());
    }
    println!("image:   {} ({})", r.image, mib(r.size));
    println!("table:   {} (disk id {})", r.table, r.disk_id);
    match (&r.family, &r.family_error) {
        (Some(f), _) => println!("family:  {f}"),
        (None, Some(e)) => println!("family:  not detected ({e})"),
        _ => {}
    }
    println!(
        "{:>3}  {:>12}  {:>12}  {:<38} {:<12} label",
        "#", "start", "size", "type", "name"
    );
    for p in &r.partitions {
        println!(
            "{:>3}  {:>12}  {:>12}  {:<38} {:<10} {:<6} {}",
            p.number,
            p.start,
            mib(p.size),
            p.part_type,
            p.name,
            p.filesystem.as_deref().unwrap_or("-"),
            p.label.as_deref().unwrap_or("-")
        );
        if let Some(g) = &p.unique_guid {
            println!("{:>3}  guid {g}", "");
        }
    }
    match r.seed_partition {
        Some(n) => println!("seed:    partition {n}: {}", r.seed_files.join(", ")),
        None => println!("seed:    none"),
    }
    if r.secrets.is_empty() {
        println!("secrets: none");
    } else {
        println!(
            "secrets: {} (keep this image private; values not shown)",
            r.secrets.join(", ")
        );
    }
    if let Some(b) = &r.bundle {
        let v = b.get("k3s_version").and_then(|v| v.as_str()).unwrap_or("?");
        let arch = b.get("arch").and_then(|v| v.as_str()).unwrap_or("?");
        println!("k3s:     {v} ({arch})");
    } else {
        println!("k3s:     no bundle");
    }
    match &r.trust {
        Some(t) => {
            let role = t.role.as_deref().unwrap_or("?");
            let token = t.token.as_ref().map(describe).unwrap_or("none".into());
            println!("token:   {role} node; token: {token}");
            if let Some(a) = &t.agent_token {
                println!("         agent-token: {}", describe(a));
            }
            if t.ca_files.is_empty() {
                println!("ca:      no CA files (k3s makes its own CA, or the node is an agent)");
            } else {
                println!(
                    "ca:      {} files in {}: {}",
                    t.ca_files.len(),
                    crate::ca::TLS_DIR,
                    t.ca_files.join(", ")
                );
            }
        }
        None => println!("token:   none (generic or foreign seed)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kinds_are_described_without_values() {
        let h = "ab".repeat(32);
        let server = crate::ca::token_kind(&format!("K10{h}::server:s3cret"));
        let d = describe(&server);
        assert_eq!(
            d,
            format!("server token, secure K10 (pins CA sha256 {}…)", &h[..16])
        );
        let agent = crate::ca::token_kind(&format!("K10{h}::node:s3cret"));
        assert!(describe(&agent).starts_with("agent token, secure K10"));
        assert_eq!(
            describe(&crate::ca::token_kind("s3cret")),
            "short (does not pin the CA)"
        );
        for k in [server, agent] {
            assert!(!describe(&k).contains("s3cret"));
        }
    }
}
