//! Unpacking into the cache: `<cache>/raw/<key>.raw`, written once under a lock, checked
//! before it is renamed into place and again when reused.

use super::decode::unpack_into;
use super::{check_raw, Family};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Decompress `input` (already verified against its pin `key`: 64 or 128 hex digits, its
/// sha256 or sha512) into `<cache_dir>/raw/<key>.raw` once, sparse; later calls return the
/// cached file. The family is detected (see [`unpack_base`]).
pub fn unpack_to_cache(input: &Path, sha256: &str, cache_dir: &Path) -> Result<PathBuf> {
    unpack_base(input, sha256, cache_dir, None)
}

/// [`unpack_to_cache`] with a family override (`[boards.*] family`).
///
/// The cache holds only verified entries: the disk is written under `<key>.raw.partial`,
/// checked by [`check_raw`] (declared size, whole sectors, 512-byte sectors, partition table,
/// known family), then `<key>.raw.verified` (its size) is written and the disk renamed into
/// place. A cached entry is checked again on reuse; one that fails is discarded with a message
/// and unpacked again.
pub fn unpack_base(
    input: &Path,
    key: &str,
    cache_dir: &Path,
    family: Option<Family>,
) -> Result<PathBuf> {
    let final_path = cached_raw_path(input, key, cache_dir)?;
    if reuse(&final_path, family) {
        return Ok(final_path);
    }
    let total = std::fs::metadata(input)
        .with_context(|| format!("reading base image {}", input.display()))?
        .len();
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let progress = crate::progress::Progress::bytes(&format!("unpacking {name}"), total);
    let res = unpack_base_with(input, key, cache_dir, family, &mut |done| {
        progress.set(done)
    });
    if res.is_ok() {
        progress.finish();
    }
    res
}

/// [`unpack_to_cache`] with a progress callback receiving input bytes consumed so far.
pub fn unpack_to_cache_with(
    input: &Path,
    sha256: &str,
    cache_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<PathBuf> {
    unpack_base_with(input, sha256, cache_dir, None, progress)
}

/// The sidecar recording that `raw` passed [`check_raw`], with its size.
fn verified_marker(raw: &Path) -> PathBuf {
    let mut s = raw.as_os_str().to_owned();
    s.push(".verified");
    PathBuf::from(s)
}

/// True when the cached `raw` exists and passes its checks again; a failing entry is removed
/// with a message (it is then unpacked again).
fn reuse(raw: &Path, family: Option<Family>) -> bool {
    if !raw.is_file() {
        return false;
    }
    let marker = verified_marker(raw);
    let recorded = std::fs::read_to_string(&marker).ok().and_then(|t| {
        t.trim()
            .strip_prefix("size=")
            .and_then(|n| n.parse::<u64>().ok())
    });
    let problem = match recorded {
        None => "it was never verified (no .verified record)".to_string(),
        Some(n) => match check_raw(raw, Some(n), family) {
            Ok(()) => return true,
            Err(e) => format!("{e:#}"),
        },
    };
    eprintln!(
        "discarding cached base {}: {problem}; unpacking it again",
        raw.display()
    );
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(raw);
    false
}

fn unpack_base_with(
    input: &Path,
    key: &str,
    cache_dir: &Path,
    family: Option<Family>,
    progress: &mut dyn FnMut(u64),
) -> Result<PathBuf> {
    let final_path = cached_raw_path(input, key, cache_dir)?;
    let sha = key.to_ascii_lowercase();
    let dir = cache_dir.join("raw");
    if reuse(&final_path, family) {
        return Ok(final_path);
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating cache directory {}", dir.display()))?;
    let partial = dir.join(format!("{sha}.raw.partial"));
    // Another nodeforge may be unpacking the same base: an exclusive lock on the partial file
    // serialises us; the winner's result is then reused.
    let out = loop {
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(io::Error::from)
            .with_context(|| format!("locking {}", partial.display()))?;
        let ours = f
            .metadata()
            .with_context(|| format!("reading {}", partial.display()))?;
        let same = std::fs::metadata(&partial)
            .is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev());
        if reuse(&final_path, family) {
            if same {
                let _ = std::fs::remove_file(&partial);
            }
            return Ok(final_path);
        }
        if same {
            break f;
        }
        // The file we locked was renamed or removed meanwhile: start over.
    };
    out.set_len(0)
        .with_context(|| format!("truncating {}", partial.display()))?;
    // Keeps the lock until after a failed run's partial file is removed (drop order).
    let _lock = out
        .try_clone()
        .with_context(|| format!("reading {}", partial.display()))?;
    let guard = RemoveOnDrop(Some(partial.clone()));
    let declared = unpack_into(input, out, &partial, progress)?;
    check_raw(&partial, Some(declared), family).with_context(|| {
        format!(
            "base image {}: refused before caching (nothing was cached)",
            input.display()
        )
    })?;
    let marker = verified_marker(&final_path);
    crate::output::write_atomic(&marker, format!("size={declared}\n").as_bytes())
        .with_context(|| format!("writing {}", marker.display()))?;
    std::fs::rename(&partial, &final_path)
        .with_context(|| format!("renaming {} to {}", partial.display(), final_path.display()))?;
    std::mem::forget(guard);
    Ok(final_path)
}

/// `<cache_dir>/raw/<key>.raw`, after checking `key` is 64 or 128 hex digits (a sha256 or
/// sha512: it names a file).
pub fn cached_raw_path(input: &Path, sha256: &str, cache_dir: &Path) -> Result<PathBuf> {
    if !matches!(sha256.len(), 64 | 128) || !sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "unpacking base image {}: invalid sha256/sha512 {sha256:?}",
            input.display()
        );
    }
    Ok(cache_dir
        .join("raw")
        .join(format!("{}.raw", sha256.to_ascii_lowercase())))
}

/// Removes a partial output unless forgotten.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
