//! `flash --node`: the node's cluster file, secrets and seed, loaded and checked against the
//! image before the first byte of the target is written.

use super::engine::{self, Compression};
use super::FlashArgs;
use crate::bmap;
use crate::disk::Disk;
use anyhow::{Context, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Everything `flash --node` needs, loaded before the device is touched.
pub(super) struct Seeding {
    cluster: crate::config::Cluster,
    secrets: crate::secrets::Secrets,
    /// The node's hostname.
    pub(super) node: String,
    epoch: i64,
}

impl Seeding {
    /// Load the cluster file, check the node exists, load the secrets.
    pub(super) fn load(a: &FlashArgs, name: &str) -> Result<Seeding> {
        let path = crate::config::cluster_path(a.cluster.as_deref())
            .context("--node needs a cluster file (-c cluster.toml)")?;
        let cluster = crate::config::load_cluster(Some(&path))?;
        cluster.node(name)?;
        let spath = a
            .secrets
            .clone()
            .unwrap_or_else(|| cluster.default_secrets_path());
        let secrets = crate::secrets::Secrets::load(&spath)?;
        let epoch = crate::pipeline::source_date_epoch()?;
        Ok(Seeding {
            cluster,
            secrets,
            node: name.to_string(),
            epoch,
        })
    }

    /// Build the node's seed against the image on `disk` (nothing is written).
    pub(super) fn prepare(&self, disk: &Disk) -> Result<crate::reseed::Prepared> {
        let node = self.cluster.node(&self.node)?;
        crate::reseed::prepare(disk, &self.cluster, node, &self.secrets, self.epoch)
    }
}

/// Check before writing that `--node`'s seed can be built for the image: on the raw image
/// itself, or for a compressed one on a sparse copy of its first partitions (everything up to
/// the start of the largest partition, the root, plus its first MiBs for the filesystem probe).
pub(super) fn precheck_seed(
    image: &Path,
    comp: Compression,
    size_hint: &mut Option<u64>,
    s: &Seeding,
) -> Result<()> {
    if comp == Compression::None {
        let disk = Disk::open(image)?;
        s.prepare(&disk)?;
        return Ok(());
    }
    let (staged, size) = stage_prefix(image, comp, *size_hint)?;
    size_hint.get_or_insert(size);
    let disk = Disk::open(staged.path())?;
    s.prepare(&disk)?;
    Ok(())
}

/// Decompress `image` into a sparse temporary file holding (at least) the bytes before the
/// largest partition plus its first [`ROOT_HEAD`] bytes, sized like the whole image. Reads the
/// whole stream when `size` is unknown, to learn it. Returns the file and the image size.
fn stage_prefix(
    image: &Path,
    comp: Compression,
    size: Option<u64>,
) -> Result<(tempfile::NamedTempFile, u64)> {
    const ROOT_HEAD: u64 = 8 << 20;
    const HEAD: u64 = 1 << 20;
    let tmp = tempfile::Builder::new()
        .prefix("nodeforge-stage-")
        .suffix(".img")
        .tempfile()
        .context("creating a temporary file to check the image's seed partition")?;
    let f = tmp.as_file();
    let mut st = engine::open_stream(image, comp)?;
    let mut buf = vec![0u8; 4 << 20];
    let bs = bmap::BLOCK_SIZE as usize;
    let mut pos = 0u64;
    let mut prefix_end: Option<u64> = None;
    loop {
        let k = engine::read_full(st.as_mut(), &mut buf)
            .with_context(|| format!("decompressing {}", image.display()))?;
        if prefix_end.is_none_or(|e| pos < e) {
            let mut i = 0;
            while i < k {
                let e = (i + bs).min(k);
                if buf[i..e].iter().any(|&b| b != 0) {
                    f.write_all_at(&buf[i..e], pos + i as u64)
                        .with_context(|| format!("writing {}", tmp.path().display()))?;
                }
                i = e;
            }
        }
        pos += k as u64;
        if prefix_end.is_none() && (pos >= HEAD || k < buf.len()) {
            f.set_len(pos.max(size.unwrap_or(0)))
                .with_context(|| format!("sizing {}", tmp.path().display()))?;
            let mut g = f
                .try_clone()
                .with_context(|| format!("opening {}", tmp.path().display()))?;
            let layout = crate::partition::read_layout(&mut g, image)?;
            let root = layout.partitions.iter().max_by_key(|p| p.size);
            let mut end = root.map_or(0, |r| r.start.saturating_add(ROOT_HEAD));
            for p in &layout.partitions {
                if Some(p) != root {
                    end = end.max(p.end());
                }
            }
            prefix_end = Some(end);
        }
        if k < buf.len() || (size.is_some() && prefix_end.is_some_and(|e| pos >= e)) {
            break;
        }
    }
    let size = size.unwrap_or(pos);
    f.set_len(size)
        .with_context(|| format!("sizing {}", tmp.path().display()))?;
    Ok((tmp, size))
}
