//! The blob cache: pinned fetches verified into `blobs/`, local files verified in place,
//! and the lock that serialises fetches of one blob (layout in [`crate::fetch`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::{parse_location, Fetcher, Location, NotFound, Source};
use crate::hash::{normalize_sha256, normalize_sha512, sha256_file, sha512_file};

impl Fetcher {
    /// [`Fetcher::fetch`], also returning the content's sha256 (known only after fetching when
    /// `src` is pinned by sha512 alone). A sha512-pinned blob is stored as `blobs/<sha256>`
    /// with an index file `blobs/sha512-<hex>` holding that sha256.
    pub fn fetch_pinned(&self, src: &Source, what: &str) -> Result<(PathBuf, String)> {
        let want512 = src
            .sha512
            .as_deref()
            .map(normalize_sha512)
            .transpose()
            .with_context(|| format!("invalid sha512 for {what} ({})", src.url))?;
        let by512 = src.sha256.trim().is_empty();
        let index = want512
            .as_ref()
            .map(|h| self.cache_dir.join("blobs").join(format!("sha512-{h}")));
        let known256 = if by512 {
            let Some(index) = &index else {
                bail!("{what} ({}) has neither a sha256 nor a sha512 pin", src.url);
            };
            fs::read_to_string(index)
                .ok()
                .and_then(|t| normalize_sha256(&t).ok())
        } else {
            Some(
                normalize_sha256(&src.sha256)
                    .with_context(|| format!("invalid sha256 for {what} ({})", src.url))?,
            )
        };
        // Verified sha512 pins are recorded in the index; a sha256 pin alone is its own proof.
        let indexed = |sha: &str| match &index {
            Some(i) => fs::read_to_string(i).is_ok_and(|t| t.trim() == sha),
            None => true,
        };
        if let Some(sha) = &known256 {
            let blob = self.blob_path(sha);
            if blob.is_file() && indexed(sha) {
                return Ok((blob, sha.clone()));
            }
            // Cached under its sha256 before the sha512 pin was known: check it in place.
            if let (true, Some(h), Some(index)) = (blob.is_file(), &want512, &index) {
                if &sha512_file(&blob)? == h {
                    crate::output::write_atomic(index, format!("{sha}\n").as_bytes())
                        .with_context(|| format!("writing {}", index.display()))?;
                    return Ok((blob, sha.clone()));
                }
            }
        }
        let key = match (&known256, &want512) {
            (Some(sha), _) if !by512 => sha.clone(),
            (_, Some(h)) => format!("sha512-{h}"),
            _ => bail!("{what} ({}) has no usable pin", src.url),
        };
        let loc = parse_location(&src.url).with_context(|| format!("source of {what}"))?;
        if self.offline {
            if let Location::Http(_) = loc {
                bail!(
                    "offline: {what} is not in the cache {} (url {}, {}); \
                     run `nodeforge fetch` while online first",
                    self.cache_dir.display(),
                    src.url,
                    if by512 {
                        "pinned by sha512"
                    } else {
                        "pinned by sha256"
                    }
                );
            }
        }
        if let Location::File(path) = &loc {
            if !might_move(path) {
                let want256 = known256.as_deref().filter(|_| !by512);
                return self.verify_in_place(path, &key, want256, want512.as_deref(), what);
            }
        }
        let _guard = self.lock_blob(&key, what)?;
        // Another process may have finished it while we waited for the lock.
        if let Some(sha) = known256.as_ref().filter(|_| !by512) {
            let blob = self.blob_path(sha);
            if blob.is_file() && indexed(sha) {
                return Ok((blob, sha.clone()));
            }
        }
        let partial = self.cache_dir.join("blobs").join(format!("{key}.partial"));
        let actual = match &loc {
            Location::File(path) => copy_local(path, &partial, what)?,
            Location::Http(url) => self.download(url, &partial, what)?.0,
        };
        if let Some(sha) = known256.as_ref().filter(|_| !by512) {
            if &actual != sha {
                let _ = fs::remove_file(&partial);
                bail!(
                    "sha256 mismatch for {what} from {}: expected {sha}, got {actual} \
                     (the download was discarded)",
                    src.url
                );
            }
        }
        if let (Some(h), Some(index)) = (&want512, &index) {
            let got = sha512_file(&partial)?;
            if &got != h {
                let _ = fs::remove_file(&partial);
                bail!(
                    "sha512 mismatch for {what} from {}: expected {h}, got {got} \
                     (the download was discarded)",
                    src.url
                );
            }
            let blob = self.blob_path(&actual);
            finish_blob(&partial, &blob)?;
            crate::output::write_atomic(index, format!("{actual}\n").as_bytes())
                .with_context(|| format!("writing {}", index.display()))?;
            return Ok((blob, actual));
        }
        let blob = self.blob_path(&actual);
        finish_blob(&partial, &blob)?;
        Ok((blob, actual))
    }

    /// Verify a local file where it is against its pins; `local/<key>` remembers a verified
    /// file's identity (device, inode, size, mtime) and sha256 so it is hashed once.
    fn verify_in_place(
        &self,
        path: &Path,
        key: &str,
        want256: Option<&str>,
        want512: Option<&str>,
        what: &str,
    ) -> Result<(PathBuf, String)> {
        use std::os::unix::fs::MetadataExt;
        let m = match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(anyhow::Error::new(NotFound {
                    location: path.display().to_string(),
                    status: "no such file".into(),
                })
                .context(format!("opening {what}")))
            }
            r => r.with_context(|| format!("reading {what} at {}", path.display()))?,
        };
        if !m.is_file() {
            bail!("{what} at {} is not a regular file", path.display());
        }
        let stamp = format!(
            "{} {} {} {} {}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        );
        let record = self.cache_dir.join("local").join(key);
        if let Ok(text) = fs::read_to_string(&record) {
            let mut lines = text.lines();
            if let (Some(st), Some(sha), Some(p)) = (lines.next(), lines.next(), lines.next()) {
                let sha_ok = want256.is_none_or(|w| w == sha);
                if st == stamp && p == path.display().to_string() && sha_ok {
                    return Ok((path.to_path_buf(), sha.to_string()));
                }
            }
        }
        let sha = sha256_file(path).with_context(|| format!("hashing {what}"))?;
        if let Some(w) = want256 {
            if sha != w {
                bail!(
                    "sha256 mismatch for {what} at {}: expected {w}, got {sha} (nothing was cached)",
                    path.display()
                );
            }
        }
        if let Some(w) = want512 {
            let got = sha512_file(path).with_context(|| format!("hashing {what}"))?;
            if got != w {
                bail!(
                    "sha512 mismatch for {what} at {}: expected {w}, got {got} (nothing was cached)",
                    path.display()
                );
            }
        }
        crate::output::write_atomic(
            &record,
            format!("{stamp}\n{sha}\n{}\n", path.display()).as_bytes(),
        )
        .with_context(|| format!("writing {}", record.display()))?;
        Ok((path.to_path_buf(), sha))
    }

    /// Fetch a URL whose hash is not known in advance; returns the cached blob and its sha256.
    /// Offline this fails: without a pin the cache cannot be searched.
    pub fn fetch_unpinned(&self, url: &str, what: &str) -> Result<(PathBuf, String)> {
        let loc = parse_location(url).with_context(|| format!("source of {what}"))?;
        let tmp_dir = self.cache_dir.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("unpinned-")
            .suffix(".partial")
            .tempfile_in(&tmp_dir)
            .with_context(|| format!("creating a temporary file in {}", tmp_dir.display()))?
            .into_temp_path();
        let sha = match &loc {
            Location::File(path) => copy_local(path, &tmp, what)?,
            Location::Http(url) => {
                if self.offline {
                    bail!(
                        "offline: {what} ({url}) has no pinned sha256 in nodeforge.lock, \
                         so the cache cannot be used; run `nodeforge fetch` while online first"
                    );
                }
                self.download(url, &tmp, what)?.0
            }
        };
        let blob = self.blob_path(&sha);
        if blob.is_file() {
            return Ok((blob, sha));
        }
        let tmp = tmp
            .keep()
            .with_context(|| format!("keeping downloaded {what}"))?;
        finish_blob(&tmp, &blob)?;
        Ok((blob, sha))
    }

    fn lock_blob(&self, sha: &str, what: &str) -> Result<File> {
        let path = self.cache_dir.join("locks").join(format!("{sha}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening cache lock {}", path.display()))?;
        use rustix::fs::{flock, FlockOperation};
        match flock(f.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                eprintln!("waiting for another nodeforge fetching {what} into the cache");
                flock(f.as_fd(), FlockOperation::LockExclusive)
                    .with_context(|| format!("locking {}", path.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        // The lock is released when the file is closed (dropped).
        Ok(f)
    }
}

/// True when a local file may not be there at the next build: it is under `/media`,
/// `/run/media` or `/mnt` (where removable disks are mounted), or on a network or FUSE
/// filesystem (NFS, SMB/CIFS, FUSE, autofs; `statfs` magic numbers from linux/magic.h).
pub fn might_move(path: &Path) -> bool {
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if ["/media", "/run/media", "/mnt"]
        .iter()
        .any(|m| real.starts_with(m))
    {
        return true;
    }
    const MOVABLE: [u64; 6] = [
        0x6969,      // NFS
        0x517B,      // SMB
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2
        0x6573_5546, // FUSE
        0x0187,      // autofs
    ];
    rustix::fs::statfs(&real).is_ok_and(|st| MOVABLE.contains(&(st.f_type as u64)))
}

/// Copy a local file into `dest` while hashing it; all-zero blocks become holes.
fn copy_local(src: &Path, dest: &Path, what: &str) -> Result<String> {
    let mut input = match File::open(src) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(anyhow::Error::new(NotFound {
                location: src.display().to_string(),
                status: "no such file".into(),
            })
            .context(format!("opening {what}")))
        }
        r => r.with_context(|| format!("opening {what} at {}", src.display()))?,
    };
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut len = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
        };
        hasher.update(&buf[..n]);
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64))
                .with_context(|| format!("seeking in {}", dest.display()))?;
        } else {
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dest.display()))?;
        }
        len += n as u64;
    }
    out.set_len(len)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("finishing {}", dest.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Rename a verified file to its blob name and make the rename durable.
fn finish_blob(from: &Path, blob: &Path) -> Result<()> {
    fs::rename(from, blob)
        .with_context(|| format!("renaming {} to {}", from.display(), blob.display()))?;
    if let Some(dir) = blob.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removable_places_might_move() {
        assert!(might_move(Path::new("/media/usb/base.img.xz")));
        assert!(might_move(Path::new("/run/media/me/disk/base.img")));
        assert!(might_move(Path::new("/mnt/nas/base.img")));
        assert!(!might_move(Path::new("/home/me/images/base.img")));
        assert!(!might_move(Path::new("/mediax/base.img")));
    }
}
