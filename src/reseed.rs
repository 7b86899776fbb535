//! Flash-time seeding: write one node's seed into an image or device that holds a nodeforge image
//! (typically a generic one published from CI), so one image serves every node of its role.
//! The seed FAT is rebuilt exactly as a per-node build would build it.

use crate::base::CIDATA_LABEL;
use crate::base::{self, Base};
use crate::compose;
use crate::config::{Cluster, NodeSpec};
use crate::disk::Disk;
use crate::fat::{self, FatFile, FatImage, FatOptions, FileData};
use crate::partition::SECTOR;
use crate::secrets::Secrets;
use crate::seed;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
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

/// Seed volumes built and checked against a target, ready to be written by [`write()`].
pub struct Prepared {
    /// (partition number, byte offset, the FAT volume), in write order.
    volumes: Vec<(u32, u64, FatImage)>,
    /// The node's instance-id.
    instance_id: String,
}

/// Build `node`'s seed for the nodeforge image on `disk` without writing anything: reads the
/// image's partitions and family, checks that the image suits the node's board (family and k3s
/// bundle architecture) and has a seed partition, renders the seed (fails when a secret is
/// missing) and builds every FAT volume to rewrite, checking that each fits its partition.
/// `disk` may be a copy of the image's first partitions (see `flash`), the stick, or the image.
pub fn prepare(
    disk: &Disk,
    cluster: &Cluster,
    node: &NodeSpec,
    secrets: &Secrets,
    timestamp: i64,
) -> Result<Prepared> {
    let target = disk.path();
    let b = base::open(target, None)
        .with_context(|| format!("reading the image on {}", target.display()))?;
    let node_seed = seed::render(cluster, node, Some(secrets), b.family, timestamp)
        .with_context(|| format!("rendering the seed of {}", node.hostname))?;
    let rewrites = plan(&b, &node_seed, target, disk.file(), node)?;
    let allowed = crate::pipeline::board_arch_families(node.board);
    if !allowed.contains(&b.family) {
        bail!(
            "the image on {} is a {} image, but node {} is a {} board (it needs one of: {})",
            target.display(),
            b.family,
            node.hostname,
            node.board.as_str(),
            allowed
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // Build every volume first: nothing is written unless all of them fit.
    let mut volumes = Vec::new();
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
        if r.start + r.size > disk.size() {
            bail!(
                "partition {} of {} ends at byte {}, beyond its end ({} bytes)",
                r.number,
                target.display(),
                r.start + r.size,
                disk.size()
            );
        }
        img.set_hidden_sectors(u32::try_from(r.start / SECTOR).context("partition beyond 2 TiB")?);
        volumes.push((r.number, r.start, img));
    }
    Ok(Prepared {
        volumes,
        instance_id: node_seed.instance_id,
    })
}

/// Write prepared seed volumes to `disk` and read each back from the medium.
pub fn write(disk: &Disk, p: &Prepared) -> Result<Reseeded> {
    let mut bytes = 0;
    let mut numbers = Vec::new();
    for (number, start, img) in &p.volumes {
        bytes += write_dense(img, disk, *start)
            .with_context(|| format!("writing partition {number} of {}", disk.path().display()))?;
        numbers.push(*number);
    }
    Ok(Reseeded {
        partitions: numbers,
        instance_id: p.instance_id.clone(),
        bytes,
    })
}

/// Write `node`'s seed onto the nodeforge image on `disk` (an image file or a block device):
/// [`prepare`] then [`write()`]. Running it again, or over another node's seed, gives the same
/// result as running it once on the generic image.
pub fn reseed_disk(
    disk: &Disk,
    cluster: &Cluster,
    node: &NodeSpec,
    secrets: &Secrets,
    timestamp: i64,
) -> Result<Reseeded> {
    let p = prepare(disk, cluster, node, secrets, timestamp)?;
    write(disk, &p)
}

/// Write `node`'s seed onto `target` (an image file or a block device holding a nodeforge image).
pub fn reseed(
    target: &Path,
    cluster: &Cluster,
    node: &NodeSpec,
    secrets: &Secrets,
    timestamp: i64,
) -> Result<Reseeded> {
    let disk = Disk::open_rw(target, false)?;
    reseed_disk(&disk, cluster, node, secrets, timestamp)
}

/// Write a FAT volume onto a target that may hold old data: the used prefix is written in full
/// (zeros included, since a hole would leave old bytes), the free space after it is left alone.
fn write_dense(img: &FatImage, target: &Disk, start: u64) -> Result<u64> {
    let tmp = tempfile::tempfile().context("creating a temporary file for the seed FAT")?;
    img.write_at(&tmp, 0)?;
    let len = img.used_len();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        tmp.read_exact_at(&mut buf[..n], done)
            .context("reading the temporary seed FAT")?;
        target.write_at(&buf[..n], start + done)?;
        done += n as u64;
    }
    // Read back what was written, past the page cache: a flaky stick is caught here, not at
    // first boot.
    target.sync()?;
    target.corrupt_for_test("seed", start, start + len)?;
    target.drop_cache(start, len);
    let mut back = vec![0u8; buf.len()];
    done = 0;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        tmp.read_exact_at(&mut buf[..n], done)
            .context("reading the temporary seed FAT")?;
        target.read_at(&mut back[..n], start + done)?;
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
