//! Family detection: which partition is the boot FAT, which the root, and which base family
//! the image is.

use super::probe::{
    boot_files, os_release_field, probe_fs, read_ext4_file, read_os_release, FsKind,
};
use super::{Family, CIDATA_LABEL};
use crate::partition::{self, DiskLayout, PartType, TableKind};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;

/// The result of detection, without the boot FAT's content.
#[derive(Clone, Debug)]
pub struct Detected {
    pub layout: DiskLayout,
    pub size: u64,
    pub family: Family,
    pub boot: usize,
    pub root: usize,
    /// Filesystem probe of every partition, parallel to `layout.partitions`.
    pub fs: Vec<FsKind>,
    pub os_release: Option<String>,
    /// FAT partitions labelled `CIDATA` (see [`super::Base::seed_partitions`]).
    pub seed_partitions: Vec<usize>,
}

/// True for a FAT volume labelled `CIDATA` (cloud-init NoCloud matches the label case-insensitively).
fn is_cidata(k: &FsKind) -> bool {
    matches!(k, FsKind::Fat { label, .. } if label.eq_ignore_ascii_case(CIDATA_LABEL))
}

fn is_fat(k: &FsKind) -> bool {
    matches!(k, FsKind::Fat { .. })
}

/// Open a raw base image and detect its family and partitions, without reading the FAT's files.
pub fn detect(raw: &Path, family: Option<Family>) -> Result<Detected> {
    let mut file =
        File::open(raw).with_context(|| format!("opening base image {}", raw.display()))?;
    let size = crate::disk::size_of(&file)
        .with_context(|| format!("reading the size of base image {}", raw.display()))?;
    let layout = partition::read_layout(&mut file, raw)?;
    let fs: Vec<FsKind> = layout
        .partitions
        .iter()
        .map(|p| probe_fs(&file, p))
        .collect();

    let gpt = matches!(layout.table, TableKind::Gpt { .. });
    // Boot FAT: the ESP on GPT, else the lowest-numbered FAT partition.
    // A CIDATA volume is a seed, never the boot FAT.
    let boot = layout.partitions.iter().enumerate().position(|(i, p)| {
        is_fat(&fs[i])
            && !is_cidata(&fs[i])
            && (!gpt || p.part_type == PartType::Gpt(partition::ESP_TYPE))
    });
    let seed_partitions: Vec<usize> = (0..fs.len())
        .filter(|&i| is_cidata(&fs[i]) && Some(i) != boot)
        .collect();
    // Root: the largest ext4 partition (with a Linux type on GPT).
    let root = layout
        .partitions
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            matches!(fs[*i], FsKind::Ext4 { .. })
                && (!gpt
                    || matches!(p.part_type, PartType::Gpt(t) if t == partition::LINUX_FS_TYPE
                        || t == partition::ROOT_X86_64_TYPE || t == partition::ROOT_ARM64_TYPE))
        })
        .max_by_key(|(_, p)| p.size)
        .map(|(i, _)| i);
    let os_release = root.and_then(|r| read_os_release(raw, &layout.partitions[r]));

    let detected = match (family, boot, root) {
        (Some(f), Some(b), Some(r)) => Some((f, b, r)),
        (None, Some(b), Some(r)) => {
            detect_family(&file, &layout, &fs, b, r, os_release.as_deref(), raw)?.map(|f| (f, b, r))
        }
        _ => None,
    };
    let Some((family, boot, root)) = detected else {
        bail!(
            "{}",
            unknown_layout_message(raw, &layout, &fs, family, boot, root)
        );
    };
    for i in [boot, root] {
        let p = &layout.partitions[i];
        if p.end() > size {
            bail!(
                "base image {}: partition {} ends at byte {} but the image has {size} bytes (truncated?)",
                raw.display(),
                p.number,
                p.end()
            );
        }
    }
    Ok(Detected {
        layout,
        size,
        family,
        boot,
        root,
        fs,
        os_release,
        seed_partitions,
    })
}

fn detect_family(
    file: &File,
    layout: &DiskLayout,
    fs: &[FsKind],
    boot: usize,
    root: usize,
    os_release: Option<&str>,
    raw: &Path,
) -> Result<Option<Family>> {
    let bp = &layout.partitions[boot];
    if matches!(layout.table, TableKind::Gpt { .. }) {
        // ESP + Linux root on GPT: the Debian generic (cloud) shape.
        return Ok(Some(Family::DebianGeneric));
    }
    let files = boot_files(file, bp).with_context(|| format!("base image {}", raw.display()))?;
    let label = fs[boot].label().unwrap_or("").to_ascii_lowercase();
    let by_label = match label.as_str() {
        "bootfs" if files.cmdline_txt => Some(Family::Raspios),
        "system-boot" => Some(Family::UbuntuRaspi),
        "raspifirm" => Some(Family::DebianRaspi),
        _ => None,
    };
    if by_label.is_some() {
        return Ok(by_label);
    }
    // Labels differ from the known ones: a Pi firmware FAT + what the root says it is.
    if !(files.config_txt || files.cmdline_txt) {
        return Ok(None);
    }
    let id = os_release.and_then(|t| os_release_field(t, "ID"));
    let rpi = os_release.is_some_and(|t| t.contains("Raspberry Pi") || t.contains("raspbian"))
        || read_ext4_file(raw, &layout.partitions[root], "/etc/rpi-issue").is_ok();
    Ok(match id.as_deref() {
        Some("ubuntu") => Some(Family::UbuntuRaspi),
        Some("raspbian") => Some(Family::Raspios),
        Some("debian") if rpi => Some(Family::Raspios),
        Some("debian") => Some(Family::DebianRaspi),
        _ => None,
    })
}

fn unknown_layout_message(
    raw: &Path,
    layout: &DiskLayout,
    fs: &[FsKind],
    family: Option<Family>,
    boot: Option<usize>,
    root: Option<usize>,
) -> String {
    let mut m = format!("base image {}: unknown layout: ", raw.display());
    match &layout.table {
        TableKind::Mbr { disk_signature } => {
            let _ = write!(m, "MBR (disk signature 0x{disk_signature:08x})");
        }
        TableKind::Gpt { disk_guid } => {
            let _ = write!(m, "GPT (disk GUID {})", partition::guid_string(disk_guid));
        }
    }
    if layout.partitions.is_empty() {
        m.push_str(" with no partitions");
    }
    for (p, k) in layout.partitions.iter().zip(fs) {
        let ty = match &p.part_type {
            PartType::Mbr(t) => format!("type 0x{t:02x}"),
            PartType::Gpt(g) => format!("type {}", partition::guid_string(g)),
        };
        let f = match k {
            FsKind::Fat { bits, label } => format!("FAT{bits} label {label:?}"),
            FsKind::Ext4 { label, .. } => format!("ext4 label {label:?}"),
            FsKind::Unknown => "unknown filesystem".to_string(),
        };
        let _ = write!(
            m,
            "; p{} {ty} {f} at {} MiB, {} MiB",
            p.number,
            p.start >> 20,
            p.size >> 20
        );
    }
    if boot.is_none() {
        m.push_str("; no boot FAT partition found");
    }
    if root.is_none() {
        m.push_str("; no ext4 root partition found");
    }
    if let (Some(f), true) = (family, boot.is_none() || root.is_none()) {
        let _ = write!(m, " (family {f} was requested)");
    } else {
        m.push_str(
            ". Known: raspios (MBR, FAT `bootfs` + cmdline.txt), ubuntu-raspi (MBR, FAT \
             `system-boot`), debian-raspi (MBR, FAT `RASPIFIRM`), debian-generic (GPT, ESP + ext4 \
             root); set the base's family in cluster.toml to override",
        );
    }
    m
}
