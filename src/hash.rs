//! Hashing whole files: sha256 and sha512 as lowercase hex, holes read as zeros without I/O,
//! and a background sha256 a later caller picks up. Below `fetch`, `output`, `lock` and
//! `release`, so every stage hashes the same way.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256, Sha512};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Check that `s` is 128 hex characters and return it in lowercase.
pub fn normalize_sha512(s: &str) -> Result<String> {
    let s = s.trim();
    if s.len() != 128 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{s:?} is not a sha512 (128 hex characters)");
    }
    Ok(s.to_ascii_lowercase())
}

/// sha512 of a whole file, lowercase hex.
pub fn sha512_file(path: &Path) -> Result<String> {
    let mut h = Sha512::new();
    for_each_chunk(path, &mut |chunk| {
        h.update(chunk);
        Ok(())
    })?;
    Ok(hex::encode(h.finalize()))
}

/// Check that `s` is 64 hex characters and return it in lowercase.
pub fn normalize_sha256(s: &str) -> Result<String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{s:?} is not a sha256 (64 hex characters)");
    }
    Ok(s.to_ascii_lowercase())
}

/// What identifies a file's content within one run: device, inode, size and mtime.
pub(crate) type FileKey = (u64, u64, u64, i64, i64);

pub(crate) fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Hashes started by [`sha256_file_background`] and not yet asked for.
type Pending = (FileKey, std::thread::JoinHandle<Option<String>>);
static PENDING: std::sync::Mutex<Vec<Pending>> = std::sync::Mutex::new(Vec::new());

/// Start hashing `path` on another thread; a later [`sha256_file`] of the unchanged file takes
/// that result. A build hashes its image while the block map is computed (two passes over
/// GiBs, in parallel on two cores).
pub fn sha256_file_background(path: &Path) {
    let Some(key) = file_key(path) else {
        return;
    };
    let owned = path.to_path_buf();
    let handle = std::thread::spawn(move || {
        let sha = hash_whole(&owned).ok()?;
        (file_key(&owned) == Some(key)).then_some(sha)
    });
    if let Ok(mut p) = PENDING.lock() {
        p.push((key, handle));
    }
}

/// sha256 of a whole file, as lowercase hex (holes hashed as zeros without reading them).
pub fn sha256_file(path: &Path) -> Result<String> {
    let before = file_key(path);
    if let Some(key) = before {
        let pending = PENDING.lock().ok().and_then(|mut p| {
            let i = p.iter().position(|(k, _)| *k == key)?;
            Some(p.swap_remove(i).1)
        });
        // A failed or outdated background hash falls through to hashing here.
        if let Some(Ok(Some(sha))) = pending.map(|h| h.join()) {
            if file_key(path) == before {
                return Ok(sha);
            }
        }
    }
    hash_whole(path)
}

fn hash_whole(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for_each_chunk(path, &mut |chunk| {
        h.update(chunk);
        Ok(())
    })?;
    Ok(hex::encode(h.finalize()))
}

/// Chunk size for reading images and feeding hashers and encoders.
const CHUNK: usize = 4 << 20;

/// Call `each` with the bytes of `src` in order, in chunks of at most [`CHUNK`].
/// Holes are passed as zeros from a shared buffer without reading them (a sparse image is
/// often 40% holes), so hashing and compressing skip that I/O.
pub(crate) fn for_each_chunk(src: &Path, each: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading size of {}", src.display()))?
        .len();
    let ranges = crate::sparse::data_ranges(&f, 0, len)
        .with_context(|| format!("finding the data of {}", src.display()))?;
    let zeros = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    let zero_run = |mut n: u64, each: &mut dyn FnMut(&[u8]) -> Result<()>| -> Result<()> {
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            each(&zeros[..k])?;
            n -= k as u64;
        }
        Ok(())
    };
    let mut pos = 0u64;
    for (start, n) in ranges {
        zero_run(start - pos, each)?;
        let end = start + n;
        let mut at = start;
        while at < end {
            let k = (end - at).min(CHUNK as u64) as usize;
            f.read_exact_at(&mut buf[..k], at)
                .with_context(|| format!("reading {} at offset {at}", src.display()))?;
            each(&buf[..k])?;
            at += k as u64;
        }
        pos = end;
    }
    zero_run(len.saturating_sub(pos), each)
}
