//! Pinned, cached, resumable fetching of every input; the k3s bundle.
//!
//! Cache layout (`Fetcher::cache_dir`):
//! - `blobs/<sha256>`: verified content, written only by renaming a fully hashed file;
//! - `blobs/<sha256>.partial`: an interrupted download, resumed with `Range` on the next try;
//! - `locks/<sha256>.lock`: `flock` that serialises fetches of the same blob across processes;
//! - `tmp/`: downloads whose hash is not known in advance (k3s `sha256sum-*.txt`, a
//!   trust-on-first-use `install.sh`), renamed to `blobs/<their sha256>` when complete.
//!
//! Pinned `file://` sources (and plain absolute paths) are verified in place and used from
//! where they are: `local/<pin>` records the file's device, inode, size and mtime with its
//! sha256, so an unchanged file is not hashed again. A file that might move — under `/media`,
//! `/run/media` or `/mnt`, or on a network or FUSE filesystem — is instead hashed while being
//! copied into `blobs/`, so a later `--offline` build works when that disk is detached.
//!
//! Files: `cache.rs` (pinned fetches, in-place verification, blob locks), `http.rs` (resumable
//! downloads, retries, progress), `k3s.rs` (the k3s bundle and its mirror layouts).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::hash::{normalize_sha256, normalize_sha512};
use crate::lock::LockEntry;

mod cache;
mod http;
mod k3s;

pub use cache::might_move;
pub use k3s::{
    find_in_sha256sums, k3s_binary_asset, k3s_bundle, k3s_lock_name, K3sBundle, DEFAULT_K3S_MIRROR,
};

/// CPU architecture of a node image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The name k3s release assets use (`amd64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// An input pinned by its content: where to get it and the sha256 and/or sha512 it must have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `https://`, `http://`, `file:///abs/path` or a plain absolute path.
    pub url: String,
    /// Lowercase hex sha256 (64 characters); empty when only `sha512` pins the source (it is
    /// filled in from the content once fetched, see [`fetch_source`]).
    pub sha256: String,
    /// Lowercase hex sha512 (128 characters), for inputs whose publisher gives only SHA512SUMS
    /// (Debian cloud images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

impl Source {
    /// A source with a validated (and lowercased) sha256 and a supported URL.
    pub fn new(url: &str, sha256: &str) -> Result<Source> {
        Source::pinned(url, Some(sha256), None)
    }

    /// A source pinned by a sha256, a sha512 or both (at least one).
    pub fn pinned(url: &str, sha256: Option<&str>, sha512: Option<&str>) -> Result<Source> {
        let sha256 = sha256
            .map(normalize_sha256)
            .transpose()
            .with_context(|| format!("invalid sha256 for {url}"))?;
        let sha512 = sha512
            .map(normalize_sha512)
            .transpose()
            .with_context(|| format!("invalid sha512 for {url}"))?;
        if sha256.is_none() && sha512.is_none() {
            bail!("{url} has neither a sha256 nor a sha512 pin");
        }
        parse_location(url)?;
        Ok(Source {
            url: url.to_string(),
            sha256: sha256.unwrap_or_default(),
            sha512,
        })
    }

    /// The pin that names this source in the caches: its sha256, else `sha512-<hex>`.
    pub fn cache_key(&self) -> String {
        match (&self.sha512, self.sha256.is_empty()) {
            (Some(h), true) => h.clone(),
            _ => self.sha256.clone(),
        }
    }
}

/// Where a URL points: the network or a local file.
#[derive(Debug)]
enum Location {
    Http(Url),
    File(PathBuf),
}

fn parse_location(url: &str) -> Result<Location> {
    if url.starts_with('/') {
        return Ok(Location::File(PathBuf::from(url)));
    }
    let parsed = Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(Location::Http(parsed)),
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|()| anyhow!("file URL {url:?} is not an absolute local path"))?;
            Ok(Location::File(path))
        }
        other => bail!("unsupported URL scheme {other:?} in {url:?} (use https, http or file)"),
    }
}

/// Tuning knobs; tests shorten the backoff with `NODEFORGE_FETCH_BACKOFF_MS`.
#[derive(Clone, Debug)]
struct Tuning {
    /// Attempts that made no progress before giving up.
    retries: u32,
    /// First backoff delay; doubled on each retry.
    backoff: Duration,
    connect_timeout: Duration,
    /// Longest wait for response headers or for any single read of the body.
    idle_timeout: Duration,
}

impl Tuning {
    fn from_env() -> Tuning {
        let ms = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_millis(default))
        };
        Tuning {
            retries: std::env::var("NODEFORGE_FETCH_RETRIES")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(4),
            backoff: ms("NODEFORGE_FETCH_BACKOFF_MS", 1000),
            connect_timeout: ms("NODEFORGE_FETCH_CONNECT_TIMEOUT_MS", 20_000),
            idle_timeout: ms("NODEFORGE_FETCH_IDLE_TIMEOUT_MS", 60_000),
        }
    }
}

/// Downloads and caches pinned inputs.
pub struct Fetcher {
    cache_dir: PathBuf,
    offline: bool,
    tuning: Tuning,
    /// Built on first use, so setters can still change the timeouts.
    client: std::sync::OnceLock<reqwest::blocking::Client>,
}

impl Fetcher {
    /// A fetcher using `cache_dir` (created if missing); `offline` forbids network access.
    pub fn new(cache_dir: PathBuf, offline: bool) -> Result<Self> {
        for sub in ["blobs", "locks", "tmp", "local"] {
            let d = cache_dir.join(sub);
            fs::create_dir_all(&d)
                .with_context(|| format!("creating cache directory {}", d.display()))?;
        }
        Ok(Fetcher {
            cache_dir,
            offline,
            tuning: Tuning::from_env(),
            client: std::sync::OnceLock::new(),
        })
    }

    /// `$XDG_CACHE_HOME/nodeforge`, else `~/.cache/nodeforge`.
    pub fn default_cache_dir() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            let p = PathBuf::from(x);
            if p.is_absolute() {
                return p.join("nodeforge");
            }
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".cache").join("nodeforge")
    }

    /// Retry policy: `retries` failed attempts without progress, backoff `first`, doubled each time.
    /// Defaults: 4 and 1 s (env `NODEFORGE_FETCH_RETRIES`, `NODEFORGE_FETCH_BACKOFF_MS`).
    pub fn set_retry_policy(&mut self, retries: u32, first: Duration) {
        self.tuning.retries = retries;
        self.tuning.backoff = first;
    }

    /// Longest wait for response headers or for any single body read (default 60 s, env
    /// `NODEFORGE_FETCH_IDLE_TIMEOUT_MS`); the whole download has no time limit.
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.tuning.idle_timeout = idle;
        self.client = std::sync::OnceLock::new();
    }

    /// The cache directory this fetcher uses.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Whether network access is forbidden.
    pub fn offline(&self) -> bool {
        self.offline
    }

    /// Path a blob with this sha256 has in the cache (it may not exist).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join("blobs").join(sha256)
    }

    /// Make `src` available in the cache and return `<cache>/blobs/<sha256>`.
    /// `what` names the input in messages (e.g. `base image raspios-lite-arm64`).
    pub fn fetch(&self, src: &Source, what: &str) -> Result<PathBuf> {
        Ok(self.fetch_pinned(src, what)?.0)
    }
}

/// A source that does not exist: HTTP 404/410, or a missing local file. Callers that try
/// several places (k3s mirror layouts) look for it with `downcast_ref`.
#[derive(Debug)]
pub struct NotFound {
    /// URL or path.
    pub location: String,
    /// `404 Not Found`, or `no such file`.
    pub status: String,
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.location, self.status)
    }
}

impl std::error::Error for NotFound {}

/// True when `e` (or its cause) is a [`NotFound`].
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<NotFound>().is_some())
}

/// A fetched input: its source, cached path and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub source: Source,
    pub path: PathBuf,
    pub size: u64,
}

impl Fetched {
    fn new(source: Source, path: PathBuf) -> Result<Fetched> {
        let size = fs::metadata(&path)
            .with_context(|| format!("reading metadata of {}", path.display()))?
            .len();
        Ok(Fetched { source, path, size })
    }

    /// The lock entry recording this input under `name`.
    pub fn lock_entry(&self, name: &str) -> LockEntry {
        LockEntry {
            name: name.to_string(),
            url: self.source.url.clone(),
            sha256: self.source.sha256.clone(),
            sha512: self.source.sha512.clone(),
            size: self.size,
        }
    }
}

/// Fetch `src` and describe the result (its sha256 filled in when only a sha512 pinned it).
pub fn fetch_source(f: &Fetcher, src: &Source, what: &str) -> Result<Fetched> {
    let (path, sha256) = f.fetch_pinned(src, what)?;
    let mut source = src.clone();
    source.sha256 = sha256;
    Fetched::new(source, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_validation() {
        assert!(normalize_sha256("ab").is_err());
        assert!(normalize_sha256(&"g".repeat(64)).is_err());
        assert_eq!(normalize_sha256(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
    }

    #[test]
    fn locations() {
        assert!(matches!(parse_location("/x/y").unwrap(), Location::File(_)));
        assert!(matches!(
            parse_location("file:///x/y").unwrap(),
            Location::File(p) if p == Path::new("/x/y")
        ));
        assert!(matches!(
            parse_location("https://a/b").unwrap(),
            Location::Http(_)
        ));
        assert!(parse_location("ftp://a/b").is_err());
        assert!(parse_location("relative/path").is_err());
    }
}
