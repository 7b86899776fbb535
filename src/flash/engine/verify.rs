//! Read-back verification: workers that follow the writer through the gate and check every
//! mapped range against its sha256 or the raw image.

use super::{Check, Expect, Gate, Sink, CHUNK};
use crate::bmap::Bmap;
use crate::disk::Disk;
use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Join every worker (all of them, not stopping at the first error); first error wins.
pub(super) fn join_all(hs: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    let mut res = Ok(());
    for h in hs {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(anyhow!("verify thread panicked")));
        if res.is_ok() {
            res = r;
        }
    }
    res
}

/// Start read-back workers over `checks` (in order), each waiting on `gate` before reading.
pub(super) fn spawn_verifiers<'s, 'e: 's>(
    s: &'s std::thread::Scope<'s, 'e>,
    sink: &'e Sink<'e>,
    raw: Option<&'e File>,
    checks: &'e [Check],
    next: &'e AtomicUsize,
    gate: &'e Gate,
    pb: &'e ProgressBar,
) -> Vec<std::thread::ScopedJoinHandle<'s, Result<()>>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    (0..threads)
        .map(|_| {
            s.spawn(move || {
                let r = verify_worker(sink, raw, checks, next, gate, pb);
                if r.is_err() {
                    gate.abort();
                }
                r
            })
        })
        .collect()
}

fn verify_worker(
    sink: &Sink,
    raw: Option<&File>,
    checks: &[Check],
    next: &AtomicUsize,
    gate: &Gate,
    pb: &ProgressBar,
) -> Result<()> {
    let name = sink.name;
    let mut buf = vec![0u8; CHUNK];
    let mut src_buf = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(c) = checks.get(i) else {
            return Ok(());
        };
        let mut h = Sha256::new();
        let mut d = 0u64;
        while d < c.len {
            let n = ((c.len - d) as usize).min(CHUNK);
            let at = c.off + d;
            if !gate.wait(at + n as u64) {
                return Ok(()); // the writer failed and reports it
            }
            sink.disk
                .file()
                .read_exact_at(&mut buf[..n], at)
                .with_context(|| format!("read back {} at {at}", name.display()))?;
            match &c.expect {
                Expect::Sha(_) => h.update(&buf[..n]),
                Expect::Source => {
                    let img = raw.context("no image to compare with")?;
                    src_buf.resize(n, 0);
                    img.read_exact_at(&mut src_buf[..n], at)
                        .with_context(|| format!("read image at {at}"))?;
                    if src_buf[..n] != buf[..n] {
                        let k = (0..n).find(|&k| src_buf[k] != buf[k]).unwrap_or(0);
                        bail!(
                            "verify failed: {} differs from the image at byte {}",
                            name.display(),
                            at + k as u64
                        );
                    }
                }
            }
            d += n as u64;
            pb.inc(n as u64);
        }
        if let Expect::Sha(want) = &c.expect {
            let got = hex::encode(h.finalize());
            if &got != want {
                bail!(
                    "verify failed: {} bytes {}..{} read back with sha256 {got}, expected {want} \
                     (a bad medium, or a bmap that does not belong to this image)",
                    name.display(),
                    c.off,
                    c.off + c.len
                );
            }
        }
    }
}

/// Check `target` against every mapped range of `bmap` (sha256 per range).
pub fn verify_file(target: &Path, bmap: &Bmap) -> Result<()> {
    let disk = Disk::open(target)?;
    // Read the medium, not pages cached from an earlier write.
    disk.drop_cache(0, disk.size());
    let mut checks = Vec::with_capacity(bmap.ranges.len());
    for r in &bmap.ranges {
        if r.sha256.is_empty() {
            bail!(
                "bmap has no checksum for blocks {}-{}: cannot verify",
                r.first,
                r.last
            );
        }
        let (off, len) = r.byte_span(bmap.block_size, bmap.image_size);
        checks.push(Check {
            off,
            len,
            expect: Expect::Sha(r.sha256.clone()),
        });
    }
    let sink = Sink {
        disk: &disk,
        name: target,
        device: false,
        limit: None,
    };
    let gate = Gate::new(u64::MAX);
    let next = AtomicUsize::new(0);
    let pb = ProgressBar::hidden();
    std::thread::scope(|s| join_all(spawn_verifiers(s, &sink, None, &checks, &next, &gate, &pb)))
}
