//! `nodeforge inspect`: describe an image (table, partitions, family, seed, k3s bundle).

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
                    report.seed_files = seeds;
                    report.seed_partition = Some(p.number);
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
    if let Some(b) = &r.bundle {
        let v = b.get("k3s_version").and_then(|v| v.as_str()).unwrap_or("?");
        let arch = b.get("arch").and_then(|v| v.as_str()).unwrap_or("?");
        println!("k3s:     {v} ({arch})");
    } else {
        println!("k3s:     no bundle");
    }
    Ok(())
}
