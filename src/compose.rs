//! Compose a node image from a base: plan the layout, rebuild the FAT volumes, copy the kept
//! partitions sparsely and write a fresh partition table.

use crate::base::{Base, Family};
use crate::fat::{FatFile, FatImage, FatOptions, FileData};
use crate::partition::{DiskLayout, PartType, Partition, TableKind, SECTOR};
use crate::progress::Progress;
use crate::sparse;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Partitions start on 4 MiB boundaries (flash erase blocks, as pi-gen and Debian do).
pub const ALIGN: u64 = 4 << 20;
pub use crate::base::CIDATA_LABEL;
/// Folder on the seed FAT that carries the k3s bundle.
pub const BUNDLE_DIR: &str = "nodeforge";
/// The files cloud-init's NoCloud datasource reads from a seed (cloud-init docs, "NoCloud":
/// `user-data` and `meta-data` required, `network-config` and `vendor-data` optional).
/// nodeforge owns all of them: a base's copies are dropped, never merged.
pub const SEED_FILES: [&str; 4] = ["user-data", "meta-data", "network-config", "vendor-data"];

/// True for a seed file at the root of a FAT (names compared case-insensitively, as FAT does).
pub fn is_seed_file(path: &str) -> bool {
    SEED_FILES.iter().any(|s| path.eq_ignore_ascii_case(s))
}

/// True for a file of an earlier build's k3s bundle (`nodeforge/...`), replaced by this build's.
fn is_bundle_file(path: &str) -> bool {
    path.split('/')
        .next()
        .is_some_and(|top| top.eq_ignore_ascii_case(BUNDLE_DIR))
        && path.contains('/')
}

/// MBR type of the CIDATA partition: FAT32 LBA.
const MBR_FAT32_LBA: u8 = 0x0c;

/// What goes into one node image besides the base.
pub struct ComposeInput<'a> {
    pub base: &'a Base,
    /// Files at the root of the seed FAT (`user-data`, `meta-data`, `network-config`).
    pub seed: Vec<FatFile>,
    /// Files placed under `nodeforge/` on the seed FAT (k3s binary, install.sh, images).
    pub bundle: Vec<FatFile>,
    /// Replacement content for files of the base's boot FAT (e.g. `cmdline.txt`), by path.
    pub boot_overrides: BTreeMap<String, Vec<u8>>,
    /// Total image size wanted (`--size`); the image is never smaller than its content.
    pub size: Option<u64>,
    /// Unix seconds for every FAT timestamp.
    pub timestamp: i64,
    /// Feeds the ids of new volumes and partitions so they are stable per node.
    pub identity: String,
}

/// Where the seed lives in a family.
pub fn seed_on_boot_fat(family: Family) -> bool {
    matches!(family, Family::Raspios | Family::UbuntuRaspi)
}

/// Where one partition's bytes come from.
enum Content {
    /// Copied from the base at this byte offset.
    Base(u64),
    /// A FAT volume built here.
    Fat(Box<FatImage>),
}

/// The planned output: a table and, per partition, its content.
pub struct Plan {
    pub layout: DiskLayout,
    pub disk_size: u64,
    contents: Vec<Content>,
    /// Bytes before the first partition copied from the base (boot code; table rewritten after).
    head: Vec<(u64, u64)>,
}

/// The BPB's hidden-sector count is the partition's start LBA.
fn hidden_sectors(start: u64) -> Result<u32> {
    u32::try_from(start / SECTOR).context("partition starts beyond 2 TiB")
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Stable 32 bytes from a node's identity and a purpose, for volume ids and GUIDs.
fn derive(identity: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(identity.as_bytes());
    h.update([0]);
    h.update(purpose.as_bytes());
    h.finalize().into()
}

/// A random-looking but deterministic version-4 GUID in on-disk byte order.
fn derive_guid(identity: &str, purpose: &str) -> [u8; 16] {
    let d = derive(identity, purpose);
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    // On disk the third field is little-endian: version nibble lives in byte 7's high half.
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// The base boot files with overrides applied; overrides must name existing files.
fn boot_files(base: &Base, overrides: &BTreeMap<String, Vec<u8>>) -> Result<Vec<FatFile>> {
    let Some(fat) = &base.boot_fat else {
        bail!("the base has no readable boot FAT to rebuild");
    };
    let mut files = fat.files.clone();
    for (path, bytes) in overrides {
        let slot = files
            .iter_mut()
            .find(|f| f.path.eq_ignore_ascii_case(path))
            .with_context(|| format!("boot file {path} not found on the base's boot partition"))?;
        slot.data = FileData::Bytes(bytes.clone());
    }
    Ok(files)
}

fn bundle_files(bundle: &[FatFile]) -> Vec<FatFile> {
    bundle
        .iter()
        .map(|f| FatFile {
            path: format!("{BUNDLE_DIR}/{}", f.path),
            data: f.data.clone(),
        })
        .collect()
}

/// Plan the output image: which partitions are rebuilt, where each one goes.
pub fn plan(input: &ComposeInput) -> Result<Plan> {
    let base = input.base;
    let family = base.family;
    let mut seed_files: Vec<FatFile> = input.seed.clone();
    seed_files.extend(bundle_files(&input.bundle));

    // The rebuilt boot FAT (Pi families) keeps its label and volume id: fstab may mount it by either.
    let boot_fat = match family {
        Family::DebianGeneric => None,
        _ => {
            let fat = base
                .boot_fat
                .as_ref()
                .context("the base's boot FAT was not read")?;
            let mut files = boot_files(base, &input.boot_overrides)?;
            // A base may carry a seed (Ubuntu's network-config, an image built by nodeforge or
            // Raspberry Pi Imager): drop every seed file and old bundle, whatever the family.
            files.retain(|b| !is_seed_file(&b.path) && !is_bundle_file(&b.path));
            if seed_on_boot_fat(family) {
                files.extend(seed_files.iter().cloned());
            }
            let opts = FatOptions {
                label: fat.label.clone(),
                volume_id: fat.volume_id,
                timestamp: input.timestamp,
                min_size: base.layout.partitions[base.boot].size,
            };
            Some(fat_filling(files, opts, "the boot FAT")?)
        }
    };
    if family == Family::DebianGeneric && !input.boot_overrides.is_empty() {
        bail!("boot file edits are not supported on a {family:?} base (its ESP is kept as is)");
    }
    let cidata = if seed_on_boot_fat(family) {
        None
    } else {
        let id = derive(&input.identity, "cidata-volume-id");
        let opts = FatOptions {
            label: CIDATA_LABEL.to_string(),
            volume_id: u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
            timestamp: input.timestamp,
            min_size: 0,
        };
        Some(fat_filling(seed_files, opts, "the CIDATA seed FAT")?)
    };

    // Walk the base partitions in physical order; grow the boot FAT in place, insert CIDATA
    // just before root (so root can still grow at the end), and shift what follows when needed.
    // A base's own CIDATA partitions are dropped: the new one takes their place.
    let mut order: Vec<usize> = (0..base.layout.partitions.len())
        .filter(|i| !base.seed_partitions.contains(i))
        .collect();
    order.sort_by_key(|&i| base.layout.partitions[i].start);
    let first_start = order
        .first()
        .map(|&i| base.layout.partitions[i].start)
        .context("the base has no partitions")?;
    let mut cursor = first_start;
    let mut parts: Vec<(Partition, Content)> = Vec::new();
    let mut boot_fat = boot_fat;
    let mut cidata = cidata;
    for &i in &order {
        let p = &base.layout.partitions[i];
        if i == base.root {
            if let Some(mut fat) = cidata.take() {
                let start = align_up(cursor.max(first_start), ALIGN);
                fat.set_hidden_sectors(hidden_sectors(start)?);
                let size = align_up(fat.size(), ALIGN);
                parts.push((
                    cidata_partition(base, &input.identity, start, size)?,
                    Content::Fat(Box::new(fat)),
                ));
                cursor = start + size;
            }
        }
        let mut np = p.clone();
        np.start = if p.start >= cursor {
            p.start
        } else {
            align_up(cursor, ALIGN)
        };
        let content = if i == base.boot && boot_fat.is_some() {
            let mut fat = boot_fat.take().context("boot FAT planned twice")?;
            fat.set_hidden_sectors(hidden_sectors(np.start)?);
            np.size = p.size.max(align_up(fat.size(), ALIGN));
            Content::Fat(Box::new(fat))
        } else {
            Content::Base(p.start)
        };
        cursor = np.start + np.size;
        parts.push((np, content));
    }
    if cidata.is_some() {
        bail!("internal: the base's root partition was not found in its layout");
    }

    // GPT needs 33 sectors at the end for the backup table.
    let tail = match base.layout.table {
        TableKind::Gpt { .. } => 33 * SECTOR,
        TableKind::Mbr { .. } => 0,
    };
    let mut disk_size = align_up(cursor + tail, 1 << 20);
    if let Some(want) = input.size {
        if want < disk_size {
            bail!(
                "--size {} is smaller than the image content ({} bytes needed)",
                want,
                disk_size
            );
        }
        disk_size = align_up(want, SECTOR);
    }
    parts.sort_by_key(|(p, _)| p.number);
    let head = match base.layout.table {
        TableKind::Mbr { .. } => vec![(0, first_start)],
        // Keep the protective MBR's boot code (BIOS boot via GRUB) and any gap after the GPT.
        TableKind::Gpt { .. } => vec![
            (0, 440),
            (34 * SECTOR, first_start.saturating_sub(34 * SECTOR)),
        ],
    };
    let (partitions, contents) = parts.into_iter().unzip();
    Ok(Plan {
        layout: DiskLayout {
            table: base.layout.table.clone(),
            partitions,
        },
        disk_size,
        contents,
        head,
    })
}

/// Build a FAT volume that fills a whole number of alignment units (no dead space at its end).
fn fat_filling(files: Vec<FatFile>, opts: FatOptions, what: &str) -> Result<FatImage> {
    let first =
        FatImage::new(files.clone(), opts.clone()).with_context(|| format!("building {what}"))?;
    let aligned = align_up(first.size(), ALIGN);
    if aligned == first.size() {
        return Ok(first);
    }
    FatImage::new(
        files,
        FatOptions {
            min_size: aligned,
            ..opts
        },
    )
    .with_context(|| format!("building {what}"))
}

/// The new seed partition: first free number, FAT type.
fn cidata_partition(base: &Base, identity: &str, start: u64, size: u64) -> Result<Partition> {
    let used: Vec<u32> = base
        .layout
        .partitions
        .iter()
        .enumerate()
        .filter(|(i, _)| !base.seed_partitions.contains(i))
        .map(|(_, p)| p.number)
        .collect();
    let limit = match base.layout.table {
        TableKind::Mbr { .. } => 4,
        TableKind::Gpt { .. } => 128,
    };
    let number = (1..=limit)
        .find(|n| !used.contains(n))
        .context("no free partition slot for the CIDATA seed partition")?;
    let (part_type, unique_guid, name) = match base.layout.table {
        TableKind::Mbr { .. } => (PartType::Mbr(MBR_FAT32_LBA), None, String::new()),
        TableKind::Gpt { .. } => (
            PartType::Gpt(crate::partition::BASIC_DATA_TYPE),
            Some(derive_guid(identity, "cidata-partition-guid")),
            CIDATA_LABEL.to_string(),
        ),
    };
    Ok(Partition {
        number,
        start,
        size,
        part_type,
        unique_guid,
        name,
        bootable: false,
        attributes: 0,
    })
}

/// Write the planned image to `out` (a new file; the caller renames it into place).
pub fn write(plan: &Plan, base_raw: &Path, out: &Path) -> Result<()> {
    let src = File::open(base_raw)
        .with_context(|| format!("opening cached base {}", base_raw.display()))?;
    let mut dst = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    dst.set_len(plan.disk_size)
        .with_context(|| format!("sizing {} to {} bytes", out.display(), plan.disk_size))?;

    for &(off, len) in &plan.head {
        if len == 0 {
            continue;
        }
        let mut buf = vec![0u8; len as usize];
        src.read_exact_at(&mut buf, off)
            .with_context(|| format!("reading the boot area of {}", base_raw.display()))?;
        dst.write_all_at(&buf, off)
            .with_context(|| format!("writing the boot area of {}", out.display()))?;
    }

    let total: u64 = plan
        .layout
        .partitions
        .iter()
        .zip(&plan.contents)
        .map(|(p, c)| match c {
            Content::Base(_) => p.size,
            Content::Fat(f) => f.size(),
        })
        .sum();
    let progress = Progress::bytes("composing image", total);
    let mut done = 0u64;
    for (p, content) in plan.layout.partitions.iter().zip(&plan.contents) {
        match content {
            Content::Base(from) => {
                sparse::copy_range(&src, *from, &dst, p.start, p.size, &mut |n| {
                    progress.set(done + n)
                })
                .with_context(|| {
                    format!(
                        "copying partition {} from {} into {}",
                        p.number,
                        base_raw.display(),
                        out.display()
                    )
                })?;
                done += p.size;
            }
            Content::Fat(fat) => {
                fat.write_at(&dst, p.start).with_context(|| {
                    format!(
                        "writing the FAT of partition {} into {}",
                        p.number,
                        out.display()
                    )
                })?;
                done += fat.size();
            }
        }
        progress.set(done);
    }
    crate::partition::write_layout(&mut dst, &plan.layout, plan.disk_size)
        .with_context(|| format!("writing the partition table of {}", out.display()))?;
    // The table writer may clear the boot code area (a protective MBR); BIOS boot needs the base's.
    let mut code = [0u8; 440];
    src.read_exact_at(&mut code, 0)
        .with_context(|| format!("reading the boot code of {}", base_raw.display()))?;
    dst.write_all_at(&code, 0)
        .with_context(|| format!("writing the boot code of {}", out.display()))?;
    dst.sync_all()
        .with_context(|| format!("flushing {}", out.display()))?;
    progress.finish();
    // The build hashes the whole image next; start now so it overlaps the block map's pass.
    crate::hash::sha256_file_background(out);
    Ok(())
}
