//! What to write and how to check it: the image's compression, its bmap (given, found beside it
//! or computed) and its size.

use super::engine::Compression;
use super::FlashOptions;
use crate::bmap::{self, Bmap};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

pub(super) fn compression_of(image: &Path) -> Compression {
    match image.extension().and_then(|e| e.to_str()) {
        Some("xz") => Compression::Xz,
        Some("gz") => Compression::Gz,
        _ => Compression::None,
    }
}

/// Bmap files that may sit beside `image`, most specific first.
pub(super) fn bmap_candidates(image: &Path, comp: Compression) -> Vec<PathBuf> {
    let s = image.as_os_str().to_string_lossy().into_owned();
    let base = match comp {
        Compression::None => s.clone(),
        _ => s
            .rsplit_once('.')
            .map(|(b, _)| b.to_string())
            .unwrap_or(s.clone()),
    };
    let mut v = vec![PathBuf::from(format!("{base}.bmap"))];
    if let Some(stem) = base.strip_suffix(".img") {
        v.push(PathBuf::from(format!("{stem}.bmap")));
    }
    v
}

/// What to write and how to check it.
pub(super) struct Plan {
    pub(super) comp: Compression,
    /// Bmap (given, found or computed); `None` for a compressed image without one.
    pub(super) bmap: Option<Bmap>,
    /// Known image size.
    pub(super) image_size: Option<u64>,
    /// Image size known before writing (bmap, or an xz index), for the device size rule.
    pub(super) size_hint: Option<u64>,
}

pub(super) fn plan(image: &Path, opts: &FlashOptions) -> Result<Plan> {
    let comp = compression_of(image);
    let meta =
        std::fs::metadata(image).with_context(|| format!("open image {}", image.display()))?;
    if !meta.is_file() {
        bail!("image {} is not a regular file", image.display());
    }
    let found = match &opts.bmap {
        Some(p) => Some(p.clone()),
        None => bmap_candidates(image, comp)
            .into_iter()
            .find(|p| p.is_file()),
    };
    let bmap = match found {
        Some(p) => Some(bmap::read(&p)?),
        None if comp == Compression::None => {
            // No bmap: map the data extents now and hash them while writing.
            let f = File::open(image).with_context(|| format!("open image {}", image.display()))?;
            let size = meta.len();
            if size == 0 {
                bail!("image {} is empty", image.display());
            }
            let ext = bmap::data_extents(&f, size)
                .with_context(|| format!("find data in {}", image.display()))?;
            Some(Bmap::from_extents(size, &ext, |_, _| Ok(String::new()))?)
        }
        None => None,
    };
    if let (Some(b), Compression::None) = (&bmap, comp) {
        if b.image_size != meta.len() {
            bail!(
                "image {} is {} bytes but its bmap says {}",
                image.display(),
                meta.len(),
                b.image_size
            );
        }
    }
    let image_size = bmap.as_ref().map(|b| b.image_size);
    let size_hint = match (&bmap, comp) {
        (Some(b), _) => Some(b.image_size),
        (None, Compression::Xz) => xz_uncompressed_size(image).unwrap_or(None),
        _ => None,
    };
    Ok(Plan {
        size_hint,
        comp,
        bmap,
        image_size,
    })
}

/// Uncompressed size recorded in an `.xz` file's indexes (all streams), or `None` if the file
/// does not end like an xz stream.
pub fn xz_uncompressed_size(path: &Path) -> Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut end = f
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let read = |off: u64, len: u64| -> Result<Vec<u8>> {
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, off)
            .with_context(|| format!("read {} at {off}", path.display()))?;
        Ok(b)
    };
    let mut total = 0u64;
    while end > 0 {
        // Stream padding: zero bytes in multiples of four.
        if end >= 4 && read(end - 4, 4)? == [0, 0, 0, 0] {
            end -= 4;
            continue;
        }
        if end < 24 {
            return Ok(None);
        }
        let footer = read(end - 12, 12)?;
        if &footer[10..12] != b"YZ" {
            return Ok(None);
        }
        let backward =
            (u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as u64 + 1) * 4;
        if backward + 24 > end {
            return Ok(None);
        }
        let index_start = end - 12 - backward;
        let index = read(index_start, backward)?;
        if index.first() != Some(&0) {
            return Ok(None);
        }
        let mut i = 1usize;
        let mut varint = || -> Option<u64> {
            let mut v = 0u64;
            for k in 0..9 {
                let b = *index.get(i)?;
                i += 1;
                v |= ((b & 0x7f) as u64) << (7 * k);
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        let Some(records) = varint() else {
            return Ok(None);
        };
        let mut blocks = 0u64;
        for _ in 0..records {
            let (Some(unpadded), Some(size)) = (varint(), varint()) else {
                return Ok(None);
            };
            blocks = blocks.saturating_add(unpadded.div_ceil(4) * 4);
            total = total.saturating_add(size);
        }
        match index_start.checked_sub(blocks + 12) {
            Some(start) => end = start,
            None => return Ok(None),
        }
    }
    Ok(Some(total))
}
