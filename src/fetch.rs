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

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hash::{normalize_sha256, normalize_sha512, sha256_file, sha512_file};
use crate::lock::{Lock, LockEntry};

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

/// Outcome of one HTTP attempt.
enum Attempt {
    Done,
    /// Transient failure: try again (after a backoff unless bytes arrived).
    Retry(anyhow::Error),
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
                let sha_ok = want256.map_or(true, |w| w == sha);
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

    fn client(&self) -> Result<reqwest::blocking::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        // reqwest 0.13 blocking applies `timeout` to the wait for response headers and to
        // each single body read (blocking/response.rs `Read`), so it bounds stalls, not the
        // total download time. The per-client "total" 30 s default is replaced by it.
        let c = reqwest::blocking::Client::builder()
            .user_agent(concat!("nodeforge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.tuning.connect_timeout)
            .timeout(self.tuning.idle_timeout)
            .build()
            .context("creating the HTTP client")?;
        Ok(self.client.get_or_init(|| c).clone())
    }

    /// Download `url` into `dest`, resuming from what `dest` already holds.
    /// Returns the sha256 and size of the complete file.
    fn download(&self, url: &Url, dest: &Path, what: &str) -> Result<(String, u64)> {
        let client = self.client()?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dest)
            .with_context(|| format!("opening {}", dest.display()))?;
        // Re-hash what an earlier run left behind, so a resumed file is verified whole.
        let mut hasher = Sha256::new();
        let mut have = io::copy(&mut file, &mut hasher)
            .with_context(|| format!("reading partial download {}", dest.display()))?;

        let progress = Progress::start(what, url.as_str(), have);
        let mut failures = 0u32;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let before = have;
            match self.attempt(
                &client,
                url,
                &mut file,
                dest,
                &mut hasher,
                &mut have,
                &progress,
            ) {
                Ok(Attempt::Done) => break,
                Ok(Attempt::Retry(err)) => {
                    let progressed = have > before;
                    if !progressed {
                        failures += 1;
                    }
                    if failures > self.tuning.retries || attempts > 50 {
                        progress.abandon();
                        drop_if_empty(dest, have);
                        return Err(err.context(format!(
                            "fetching {what} from {url} failed after {attempts} attempts"
                        )));
                    }
                    let delay = if progressed {
                        Duration::ZERO
                    } else {
                        self.tuning.backoff * 2u32.saturating_pow(failures.saturating_sub(1))
                    };
                    progress.note(&format!("{what}: {err:#}; retrying in {delay:?}"));
                    std::thread::sleep(delay);
                }
                Err(e) => {
                    progress.abandon();
                    drop_if_empty(dest, have);
                    return Err(e);
                }
            }
        }
        file.sync_all()
            .with_context(|| format!("syncing {}", dest.display()))?;
        let sha = hex::encode(hasher.finalize());
        progress.finish(have);
        Ok((sha, have))
    }

    /// One GET; `Err` for permanent failures, `Retry` for transient ones.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        client: &reqwest::blocking::Client,
        url: &Url,
        file: &mut File,
        dest: &Path,
        hasher: &mut Sha256,
        have: &mut u64,
        progress: &Progress,
    ) -> Result<Attempt> {
        use reqwest::header::{CONTENT_RANGE, RANGE};
        use reqwest::StatusCode;
        let mut req = client.get(url.clone());
        if *have > 0 {
            req = req.header(RANGE, format!("bytes={}-", *have));
        }
        let mut resp = match req.send() {
            Ok(r) => r,
            Err(e) if is_transient(&e) => return Ok(Attempt::Retry(anyhow!(e))),
            Err(e) => return Err(anyhow!(e).context(format!("requesting {url}"))),
        };
        let status = resp.status();
        let restart_from_zero = |file: &mut File, hasher: &mut Sha256, have: &mut u64| {
            *hasher = Sha256::new();
            *have = 0;
            file.set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
                .with_context(|| format!("truncating {}", dest.display()))
        };
        match status {
            StatusCode::PARTIAL_CONTENT if *have > 0 => {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(*have) {
                    // The server resumed somewhere else: start over rather than guess.
                    restart_from_zero(file, hasher, have)?;
                    return Ok(Attempt::Retry(anyhow!(
                        "server answered a range request for byte {} with a different range",
                        *have
                    )));
                }
            }
            StatusCode::OK => {
                // A full body: either a first request or a server without Range support.
                restart_from_zero(file, hasher, have)?;
            }
            StatusCode::RANGE_NOT_SATISFIABLE if *have > 0 => {
                // The partial file is as long as (or longer than) the resource: start over.
                restart_from_zero(file, hasher, have)?;
                return Ok(Attempt::Retry(anyhow!("HTTP 416 for a resumed download")));
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Ok(Attempt::Retry(anyhow!("HTTP {s} from {url}")));
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return Err(anyhow::Error::new(NotFound {
                    location: url.to_string(),
                    status: status.to_string(),
                }))
            }
            s => bail!("HTTP {s} fetching {url}"),
        }
        if let Some(len) = resp.content_length() {
            progress.set_total(*have + len);
        }
        file.seek(SeekFrom::Start(*have))
            .with_context(|| format!("seeking in {}", dest.display()))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Ok(Attempt::Retry(
                        anyhow!(e).context(format!("reading the body of {url}")),
                    ))
                }
            };
            file.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dest.display()))?;
            hasher.update(&buf[..n]);
            *have += n as u64;
            progress.set(*have);
        }
        Ok(Attempt::Done)
    }
}

/// A failed download that got no bytes leaves no file behind (a non-empty one is kept to resume).
fn drop_if_empty(dest: &Path, have: u64) {
    if have == 0 {
        let _ = fs::remove_file(dest);
    }
}

/// `bytes START-END/TOTAL` → START.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

fn is_transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
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

/// A progress bar on a terminal; plain start/end lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    started: Instant,
    resumed_at: u64,
}

impl Progress {
    fn start(what: &str, url: &str, have: u64) -> Progress {
        let bar = if io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_string());
            bar.set_position(have);
            Some(bar)
        } else {
            if have > 0 {
                eprintln!("fetching {what} from {url} (resuming at byte {have})");
            } else {
                eprintln!("fetching {what} from {url}");
            }
            None
        };
        Progress {
            bar,
            what: what.to_string(),
            started: Instant::now(),
            resumed_at: have,
        }
    }

    fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    fn set(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    fn note(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn abandon(&self) {
        if let Some(b) = &self.bar {
            b.abandon();
        }
    }

    fn finish(&self, total: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        let got = total.saturating_sub(self.resumed_at);
        let rate = if secs > 0.0 {
            got as f64 / secs / (1024.0 * 1024.0)
        } else {
            0.0
        };
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        eprintln!(
            "fetched {}: {total} bytes in {secs:.1} s ({rate:.1} MiB/s)",
            self.what
        );
    }
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

/// Default `k3s.mirror`: GitHub releases of k3s-io/k3s.
pub const DEFAULT_K3S_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";

/// Everything needed to install k3s offline on a node of one architecture.
#[derive(Clone, Debug)]
pub struct K3sBundle {
    pub version: String,
    pub arch: Arch,
    pub binary: Fetched,
    pub install_sh: Fetched,
    pub airgap: Option<Fetched>,
    /// The release's `sha256sum-<arch>.txt`: the trust root for `binary` and `airgap`.
    pub sums: Fetched,
}

impl K3sBundle {
    /// Lock entries for every file of the bundle (names from [`k3s_lock_name`]).
    pub fn lock_entries(&self) -> Vec<LockEntry> {
        let a = self.arch.as_str();
        let v = &self.version;
        let mut e = vec![
            self.sums
                .lock_entry(&k3s_lock_name(v, &format!("sha256sum-{a}.txt"))),
            self.binary
                .lock_entry(&k3s_lock_name(v, k3s_binary_asset(self.arch))),
            self.install_sh.lock_entry(&k3s_lock_name(v, "install.sh")),
        ];
        if let Some(ag) = &self.airgap {
            e.push(ag.lock_entry(&k3s_lock_name(v, &format!("k3s-airgap-images-{a}.tar.zst"))));
        }
        e
    }
}

/// Lock entry name of a k3s release file: `k3s/<version>/<asset>`.
pub fn k3s_lock_name(version: &str, asset: &str) -> String {
    format!("k3s/{version}/{asset}")
}

/// Release asset name of the k3s binary: `k3s` (amd64) or `k3s-arm64`.
pub fn k3s_binary_asset(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "k3s",
        Arch::Arm64 => "k3s-arm64",
    }
}

/// A k3s mirror: a release-download URL prefix or a local folder.
enum Mirror {
    GitHub,
    Http(String),
    Dir(PathBuf),
}

/// Where a mirror keeps a release's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MirrorLayout {
    /// Like GitHub's release downloads: `<mirror>/<version>/<asset>`.
    Versioned,
    /// One release's files directly in the mirror: `<mirror>/<asset>`.
    Flat,
}

/// The layouts a mirror may use, described for error messages.
const LAYOUT_HELP: &str = "a k3s mirror is laid out like GitHub's release downloads \
    (<mirror>/<version>/k3s, .../k3s-arm64, .../sha256sum-amd64.txt, .../sha256sum-arm64.txt, \
    .../install.sh) or holds one release's files directly (<mirror>/k3s-arm64, \
    <mirror>/sha256sum-arm64.txt, <mirror>/install.sh; <version> with `+` written as `%2B` in URLs)";

impl Mirror {
    fn parse(mirror: &str) -> Result<Mirror> {
        let m = mirror.trim().trim_end_matches('/');
        if m.is_empty() || m == DEFAULT_K3S_MIRROR {
            return Ok(Mirror::GitHub);
        }
        match parse_location(m).with_context(|| format!("k3s mirror {mirror:?}"))? {
            Location::Http(_) => Ok(Mirror::Http(m.to_string())),
            Location::File(p) => Ok(Mirror::Dir(p)),
        }
    }

    /// The layouts to try, in order.
    fn layouts(&self) -> &'static [MirrorLayout] {
        match self {
            Mirror::GitHub => &[MirrorLayout::Versioned],
            _ => &[MirrorLayout::Versioned, MirrorLayout::Flat],
        }
    }

    /// URL of a release asset in `layout`.
    fn asset(&self, layout: MirrorLayout, version: &str, asset: &str) -> String {
        let v = version.replace('+', "%2B");
        match (self, layout) {
            (Mirror::GitHub, _) => format!("{DEFAULT_K3S_MIRROR}/{v}/{asset}"),
            (Mirror::Http(m), MirrorLayout::Versioned) => format!("{m}/{v}/{asset}"),
            (Mirror::Http(m), MirrorLayout::Flat) => format!("{m}/{asset}"),
            (Mirror::Dir(d), MirrorLayout::Versioned) => file_url(&d.join(version).join(asset)),
            (Mirror::Dir(d), MirrorLayout::Flat) => file_url(&d.join(asset)),
        }
    }

    /// URL of install.sh: pinned to the k3s repository at `version` for GitHub, else the
    /// mirror's copy.
    fn install_sh(&self, layout: MirrorLayout, version: &str) -> String {
        match self {
            Mirror::GitHub => format!(
                "https://raw.githubusercontent.com/k3s-io/k3s/{}/install.sh",
                version.replace('+', "%2B")
            ),
            _ => self.asset(layout, version, "install.sh"),
        }
    }
}

fn file_url(path: &Path) -> String {
    Url::from_file_path(path)
        .map(|u| u.to_string())
        .unwrap_or_else(|()| path.display().to_string())
}

/// Find the sha256 of `asset` in a `sha256sum` listing (`<hex>  <name>` lines).
pub fn find_in_sha256sums(text: &str, asset: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let hash = parts.next()?;
        let name = parts.next()?.trim_start_matches('*');
        let name = name.strip_prefix("./").unwrap_or(name);
        if name == asset && parts.next().is_none() {
            normalize_sha256(hash).ok()
        } else {
            None
        }
    })
}

/// Fetch k3s `version` for `arch` from `mirror` (empty = GitHub releases), verified against
/// the release's `sha256sum-<arch>.txt`. `pins` supplies hashes recorded earlier (the sums file
/// and install.sh are otherwise trusted on first use); the caller records
/// [`K3sBundle::lock_entries`].
pub fn k3s_bundle(
    f: &Fetcher,
    mirror: &str,
    version: &str,
    arch: Arch,
    airgap: bool,
    pins: &Lock,
) -> Result<K3sBundle> {
    if version.is_empty() || version.contains('/') || version.contains(char::is_whitespace) {
        bail!("invalid k3s version {version:?}");
    }
    let m = Mirror::parse(mirror)?;
    let a = arch.as_str();

    let fetch_maybe_pinned = |url: String, asset: &str, what: &str| -> Result<Fetched> {
        let name = k3s_lock_name(version, asset);
        match pins.get(&name) {
            Some(pin) => fetch_source(f, &Source::new(&url, &pin.sha256)?, what)
                .with_context(|| format!("{name} is pinned in the lock to sha256 {}", pin.sha256)),
            None => {
                let (path, sha) = f.fetch_unpinned(&url, what)?;
                Fetched::new(
                    Source {
                        url,
                        sha256: sha,
                        sha512: None,
                    },
                    path,
                )
            }
        }
    };

    // The sums file decides the layout: the one the lock recorded, else the first that has it.
    let sums_asset = format!("sha256sum-{a}.txt");
    let sums_what = format!("k3s {version} {sums_asset}");
    let locked_layout = pins
        .get(&k3s_lock_name(version, &sums_asset))
        .and_then(|pin| {
            m.layouts()
                .iter()
                .copied()
                .find(|l| m.asset(*l, version, &sums_asset) == pin.url)
        });
    let mut tried = Vec::new();
    let mut found = None;
    for &layout in m.layouts() {
        if locked_layout.is_some_and(|l| l != layout) {
            continue;
        }
        let url = m.asset(layout, version, &sums_asset);
        tried.push(url.clone());
        match fetch_maybe_pinned(url, &sums_asset, &sums_what) {
            Ok(s) => {
                found = Some((layout, s));
                break;
            }
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    let Some((layout, sums)) = found else {
        bail!(
            "k3s {version}: {sums_asset} is not on the mirror {mirror:?} (tried {}); {LAYOUT_HELP}",
            tried.join(", ")
        );
    };
    let missing = |e: anyhow::Error, url: &str| -> anyhow::Error {
        if is_not_found(&e) {
            e.context(format!(
                "k3s {version}: {url} is missing although {} is there; {LAYOUT_HELP}",
                sums.source.url
            ))
        } else {
            e
        }
    };
    let text = fs::read_to_string(&sums.path)
        .with_context(|| format!("reading {} ({})", sums.path.display(), sums.source.url))?;

    let from_sums = |asset: &str| -> Result<Fetched> {
        let sha = find_in_sha256sums(&text, asset)
            .ok_or_else(|| anyhow!("{sums_asset} ({}) has no line for {asset}", sums.source.url))?;
        let url = m.asset(layout, version, asset);
        let src = Source::new(&url, &sha)?;
        fetch_source(f, &src, &format!("k3s {version} {asset}")).map_err(|e| missing(e, &url))
    };

    let binary = from_sums(k3s_binary_asset(arch))?;
    let install_url = m.install_sh(layout, version);
    let install_sh = fetch_maybe_pinned(
        install_url.clone(),
        "install.sh",
        &format!("k3s {version} install.sh"),
    )
    .map_err(|e| missing(e, &install_url))?;
    let airgap = if airgap {
        Some(from_sums(&format!("k3s-airgap-images-{a}.tar.zst"))?)
    } else {
        None
    };
    Ok(K3sBundle {
        version: version.to_string(),
        arch,
        binary,
        install_sh,
        airgap,
        sums,
    })
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

    #[test]
    fn sums_lookup_exact() {
        let h1 = "1".repeat(64);
        let h2 = "2".repeat(64);
        let text = format!("{h1}  k3s-arm64\n{h2}  k3s-arm64.sig\n{h2} *k3s\n");
        assert_eq!(find_in_sha256sums(&text, "k3s-arm64"), Some(h1));
        assert_eq!(find_in_sha256sums(&text, "k3s"), Some(h2));
        assert_eq!(find_in_sha256sums(&text, "k3s-arm"), None);
    }

    #[test]
    fn removable_places_might_move() {
        assert!(might_move(Path::new("/media/usb/base.img.xz")));
        assert!(might_move(Path::new("/run/media/me/disk/base.img")));
        assert!(might_move(Path::new("/mnt/nas/base.img")));
        assert!(!might_move(Path::new("/home/me/images/base.img")));
        assert!(!might_move(Path::new("/mediax/base.img")));
    }

    #[test]
    fn content_range() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
    }

    #[test]
    fn mirror_urls() {
        let v = MirrorLayout::Versioned;
        let m = Mirror::parse("").unwrap();
        assert_eq!(
            m.asset(v, "v1.31.4+k3s1", "k3s"),
            "https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s"
        );
        assert_eq!(
            m.install_sh(v, "v1.31.4+k3s1"),
            "https://raw.githubusercontent.com/k3s-io/k3s/v1.31.4%2Bk3s1/install.sh"
        );
        let m = Mirror::parse("http://mirror.lan/k3s/").unwrap();
        assert_eq!(
            m.install_sh(v, "v1.2.3+k3s1"),
            "http://mirror.lan/k3s/v1.2.3%2Bk3s1/install.sh"
        );
        assert_eq!(
            m.asset(MirrorLayout::Flat, "v1.2.3+k3s1", "k3s-arm64"),
            "http://mirror.lan/k3s/k3s-arm64"
        );
    }
}
