//! Flash-time seeding: write one node's seed into an image or device that holds a nodeforge image
//! (typically a generic one published from CI), so one image serves every node of its role.
//! The seed FAT is rebuilt exactly as a per-node build would build it.

use crate::base::{self, Base};
use crate::compose::{self, CIDATA_LABEL};
use crate::config::{Cluster, NodeSpec};
use crate::fat::{self, FatFile, FatImage, FatOptions, FileData};
use crate::partition::SECTOR;
use crate::secrets::Secrets;
use crate::seed;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Seed file names cloud-init's NoCloud reads; all are replaced together.
const SEED_NAMES: [&str; 4] = ["meta-data", "user-data", "network-config", "vendor-data"];

/// What reseeding wrote.
#[derive(Debug)]
pub struct Reseeded {
    /// Partitions rewritten (numbers).
    pub partitions: Vec<u32>,
    /// The node's instance-id (changes when its seed changes).
    pub instance_id: String,
    /// Bytes written to the target.
    pub bytes: u64,
}

/// One FAT volume to rebuild on the target.
struct Rewrite {
    number: u32,
    start: u64,
    size: u64,
    files: Vec<FatFile>,
    label: String,
    volume_id: u32,
}

fn is_seed_file(path: &str) -> bool {
    SEED_NAMES.iter().any(|s| path.eq_ignore_ascii_case(s))
}

fn with_seed(files: &[FatFile], seed: &[(String, Vec<u8>)]) -> Vec<FatFile> {
    let mut out: Vec<FatFile> = files
        .iter()
        .filter(|f| !is_seed_file(&f.path))
        .cloned()
        .collect();
    out.extend(seed.iter().map(|(n, b)| FatFile {
        path: n.clone(),
        data: FileData::Bytes(b.clone()),
    }));
    out
}

fn apply_overrides(files: &mut [FatFile], overrides: &BTreeMap<String, Vec<u8>>) {
    for f in files.iter_mut() {
        if let Some(b) = overrides.get(&f.path) {
            f.data = FileData::Bytes(b.clone());
        }
    }
}

/// Check that the image's k3s bundle was made for the node's architecture.
fn check_bundle(files: &[FatFile], node: &NodeSpec, target: &Path) -> Result<()> {
    let Some(FileData::Bytes(b)) = files
        .iter()
        .find(|f| f.path.eq_ignore_ascii_case("nodeforge/bundle.json"))
        .map(|f| &f.data)
    else {
        bail!(
            "{} holds no nodeforge k3s bundle (nodeforge/bundle.json): flash a nodeforge image",
            target.display()
        );
    };
    let info: serde_json::Value = serde_json::from_slice(b)
        .with_context(|| format!("reading nodeforge/bundle.json on {}", target.display()))?;
    let arch = info.get("arch").and_then(|a| a.as_str()).unwrap_or("");
    if arch != node.board.arch().as_str() {
        bail!(
            "the image on {} carries k3s for {arch}, but node {} is a {} board ({})",
            target.display(),
            node.hostname,
            node.board.as_str(),
            node.board.arch().as_str()
        );
    }
    Ok(())
}

/// Plan the FAT rebuilds for `node` on the opened image.
fn plan(
    b: &Base,
    node_seed: &seed::Seed,
    target: &Path,
    file: &File,
    node: &NodeSpec,
) -> Result<Vec<Rewrite>> {
    let overrides = crate::pipeline::boot_overrides(b, node_seed.pi.as_ref())?;
    let mut out = Vec::new();
    let boot = &b.layout.partitions[b.boot];
    if compose::seed_on_boot_fat(b.family) {
        let fat = b.boot_fat.as_ref().context("the boot FAT was not read")?;
        check_bundle(&fat.files, node, target)?;
        let mut files = with_seed(&fat.files, &node_seed.files);
        apply_overrides(&mut files, &overrides);
        out.push(Rewrite {
            number: boot.number,
            start: boot.start,
            size: boot.size,
            files,
            label: fat.label.clone(),
            volume_id: fat.volume_id,
        });
        return Ok(out);
    }
    // Seed on the CIDATA partition; Pi boot edits (Debian raspi) on the boot FAT.
    let cidata = b
        .layout
        .partitions
        .iter()
        .find_map(|p| {
            fat::read_fat(file, p.start, p.size)
                .ok()
                .filter(|v| v.label.eq_ignore_ascii_case(CIDATA_LABEL))
                .map(|v| (p.clone(), v))
        })
        .with_context(|| format!("no {CIDATA_LABEL} seed partition on {}", target.display()))?;
    let (p, vol) = cidata;
    check_bundle(&vol.files, node, target)?;
    out.push(Rewrite {
        number: p.number,
        start: p.start,
        size: p.size,
        files: with_seed(&vol.files, &node_seed.files),
        label: vol.label.clone(),
        volume_id: vol.volume_id,
    });
    if let (false, Some(fat)) = (overrides.is_empty(), &b.boot_fat) {
        let mut files = fat.files.clone();
        apply_overrides(&mut files, &overrides);
        out.push(Rewrite {
            number: boot.number,
            start: boot.start,
            size: boot.size,
            files,
            label: fat.label.clone(),
            volume_id: fat.volume_id,
        });
    }
    Ok(out)
}

/// Write `node`'s seed onto `target` (an image file or a block device holding a nodeforge image).
pub fn reseed(
    target: &Path,
    cluster: &Cluster,
    node: &NodeSpec,
    secrets: &Secrets,
    timestamp: i64,
) -> Result<Reseeded> {
    let b = base::open(target, None)
        .with_context(|| format!("reading the image on {}", target.display()))?;
    let node_seed = seed::render(cluster, node, Some(secrets), b.family, timestamp)
        .with_context(|| format!("rendering the seed of {}", node.hostname))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .with_context(|| format!("opening {} for writing", target.display()))?;
    let rewrites = plan(&b, &node_seed, target, &file, node)?;

    // Build every volume first: nothing is written unless all of them fit.
    let mut built = Vec::new();
    for r in rewrites {
        let opts = FatOptions {
            label: r.label.clone(),
            volume_id: r.volume_id,
            timestamp,
            min_size: r.size,
        };
        let mut img = FatImage::new(r.files, opts)
            .with_context(|| format!("building the FAT of partition {}", r.number))?;
        if img.size() > r.size {
            bail!(
                "the seed of {} does not fit partition {} of {} ({} bytes needed, {} available)",
                node.hostname,
                r.number,
                target.display(),
                img.size(),
                r.size
            );
        }
        img.set_hidden_sectors(u32::try_from(r.start / SECTOR).context("partition beyond 2 TiB")?);
        built.push((r.number, r.start, img));
    }
    let mut bytes = 0;
    let mut numbers = Vec::new();
    for (number, start, img) in &built {
        bytes += write_dense(img, &file, *start)
            .with_context(|| format!("writing partition {number} of {}", target.display()))?;
        numbers.push(*number);
    }
    Ok(Reseeded {
        partitions: numbers,
        instance_id: node_seed.instance_id,
        bytes,
    })
}

/// Write a FAT volume onto a target that may hold old data: the used prefix is written in full
/// (zeros included, since a hole would leave old bytes), the free space after it is left alone.
fn write_dense(img: &FatImage, target: &File, start: u64) -> Result<u64> {
    let tmp = tempfile::tempfile().context("creating a temporary file for the seed FAT")?;
    img.write_at(&tmp, 0)?;
    let len = img.used_len();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        tmp.read_exact_at(&mut buf[..n], done)
            .context("reading the temporary seed FAT")?;
        target
            .write_all_at(&buf[..n], start + done)
            .with_context(|| format!("writing at offset {}", start + done))?;
        done += n as u64;
    }
    // Read back what was written, past the page cache: a flaky stick is caught here, not at
    // first boot.
    target.sync_all().context("flushing the seed FAT")?;
    let _ = rustix::fs::fadvise(
        target,
        start,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
    let mut back = vec![0u8; buf.len()];
    done = 0;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        tmp.read_exact_at(&mut buf[..n], done)
            .context("reading the temporary seed FAT")?;
        target
            .read_exact_at(&mut back[..n], start + done)
            .with_context(|| format!("reading back at offset {}", start + done))?;
        if buf[..n] != back[..n] {
            bail!(
                "verification failed: the seed read back differs at offset {}",
                start + done
            );
        }
        done += n as u64;
    }
    Ok(len)
}
