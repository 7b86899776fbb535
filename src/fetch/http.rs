//! HTTP downloads: resumable GETs with retries and backoff, and their progress display.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Url;
use sha2::{Digest, Sha256};

use super::{Fetcher, NotFound};

/// Outcome of one HTTP attempt.
enum Attempt {
    Done,
    /// Transient failure: try again (after a backoff unless bytes arrived).
    Retry(anyhow::Error),
}

impl Fetcher {
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
    pub(super) fn download(&self, url: &Url, dest: &Path, what: &str) -> Result<(String, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
    }
}
