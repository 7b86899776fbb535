//! The write + verify engine: a reader feeding 4 MiB buffers (or in-kernel `copy_file_range`
//! for raw images onto files), positional writes, and read-back verifiers that run behind the
//! writer as soon as data is written (files) or synced and dropped from the cache (devices).
//!
//! Files: `writer.rs` (positional writes, writeback, `copy_file_range`), `reader.rs` (reading
//! or decompressing the image into buffers), `verify.rs` (the read-back workers).

mod reader;
mod verify;
mod writer;

pub(crate) use reader::{open_stream, read_full};
pub use verify::verify_file;

use crate::bmap::Bmap;
use crate::disk::Disk;
use anyhow::{anyhow, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;
use verify::{join_all, spawn_verifiers};
use writer::write_phase;

/// Size of each read/write buffer.
const CHUNK: usize = 4 << 20;
/// Devices: sync and drop the cache every this many bytes so verifiers read the medium.
const DEVICE_BATCH: u64 = 64 << 20;
/// Files: start writeback every this many bytes.
const FILE_KICK: u64 = 32 << 20;

/// How the image bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw image.
    None,
    /// xz (decoded multithreaded).
    Xz,
    /// gzip.
    Gz,
}

/// What a read-back region must match.
#[derive(Debug, Clone)]
pub enum Expect {
    /// This sha256 (hex).
    Sha(String),
    /// The same bytes of the raw image (bmap without checksums, or computed extents).
    Source,
}

/// A region to check after writing.
#[derive(Debug, Clone)]
pub struct Check {
    /// Byte offset.
    pub off: u64,
    /// Length in bytes.
    pub len: u64,
    /// Expected content.
    pub expect: Expect,
}

/// The image side.
pub struct Source<'a> {
    /// Image path.
    pub image: &'a Path,
    /// Its compression.
    pub comp: Compression,
    /// Its bmap, if any (compressed images may have none).
    pub bmap: Option<&'a Bmap>,
}

/// The target side.
pub struct Sink<'a> {
    /// Opened target.
    pub disk: &'a Disk,
    /// Name for messages.
    pub name: &'a Path,
    /// A block device (or its fake-tree stand-in): sync in batches, drop cache before reading.
    pub device: bool,
    /// Writes past this offset fail (device size).
    pub limit: Option<u64>,
}

/// What [`run`] did.
pub struct Outcome {
    /// Bytes written.
    pub written: u64,
    /// Image size.
    pub size: u64,
    /// Seconds until the final fsync returned.
    pub write_seconds: f64,
    /// Extra seconds the verification needed after that.
    pub verify_seconds: f64,
}

/// How far the target is ready to be read back; also carries the abort flag.
struct Gate {
    upto: Mutex<u64>,
    cv: Condvar,
    failed: AtomicBool,
}

impl Gate {
    fn new(start: u64) -> Gate {
        Gate {
            upto: Mutex::new(start),
            cv: Condvar::new(),
            failed: AtomicBool::new(false),
        }
    }
    fn publish(&self, x: u64) {
        if let Ok(mut g) = self.upto.lock() {
            if x > *g {
                *g = x;
            }
        }
        self.cv.notify_all();
    }
    fn abort(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.publish(u64::MAX);
    }
    /// Wait until `end` is readable; false when aborted.
    fn wait(&self, end: u64) -> bool {
        let Ok(mut g) = self.upto.lock() else {
            return false;
        };
        while *g < end && !self.failed.load(Ordering::SeqCst) {
            g = match self.cv.wait(g) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
        !self.failed.load(Ordering::SeqCst)
    }
}

fn bar(mp: &MultiProgress, total: Option<u64>, msg: &'static str) -> ProgressBar {
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let style = if total.is_some() {
        "{msg:6} [{bar:32}] {bytes}/{total_bytes} {decimal_bytes_per_sec} eta {eta}"
    } else {
        "{msg:6} {bytes} {decimal_bytes_per_sec}"
    };
    if let Ok(s) = ProgressStyle::with_template(style) {
        pb.set_style(s.progress_chars("=> "));
    }
    pb.set_message(msg);
    mp.add(pb)
}

/// Checks known before writing (bmap ranges with sums, or raw-image comparisons).
fn upfront_checks(src: &Source) -> Option<Vec<Check>> {
    let b = src.bmap?;
    let mut v = Vec::with_capacity(b.ranges.len());
    for r in &b.ranges {
        let (off, len) = r.byte_span(b.block_size, b.image_size);
        let expect = if !r.sha256.is_empty() {
            Expect::Sha(r.sha256.clone())
        } else if src.comp == Compression::None {
            Expect::Source
        } else {
            return None;
        };
        v.push(Check { off, len, expect });
    }
    Some(v)
}

/// Write the image to the sink, fsync, and (with `verify`) read every mapped range back.
pub fn run(src: &Source, sink: &Sink, verify: bool, progress: bool) -> Result<Outcome> {
    let mp = if progress && std::io::stderr().is_terminal() {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    };
    let total = src.bmap.map(|b| b.mapped_bytes());
    let wbar = bar(&mp, total, "write");
    let raw = match src.comp {
        Compression::None => Some(
            File::open(src.image).with_context(|| format!("open image {}", src.image.display()))?,
        ),
        _ => None,
    };
    let early = if verify { upfront_checks(src) } else { None };
    let gate = Gate::new(0);
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    let vbar = early
        .as_ref()
        .map(|c| bar(&mp, Some(c.iter().map(|c| c.len).sum()), "verify"));

    let (written, size, late, write_seconds) = std::thread::scope(|s| {
        // Verifiers start now and follow the writer.
        let handles = match (&early, &vbar) {
            (Some(checks), Some(vb)) => {
                spawn_verifiers(s, sink, raw.as_ref(), checks, &next, &gate, vb)
            }
            _ => Vec::new(),
        };
        let w = write_phase(src, sink, raw.as_ref(), &gate, &wbar).and_then(|(wr, size, late)| {
            sink.disk
                .file()
                .sync_all()
                .with_context(|| format!("fsync {}", sink.name.display()))?;
            Ok((wr, size, late))
        });
        let write_seconds = t0.elapsed().as_secs_f64();
        let w = w.and_then(|(wr, size, late)| {
            if sink.device {
                // Everything not yet released to the verifiers: from the last batch to the end.
                let from = *gate
                    .upto
                    .lock()
                    .map_err(|_| anyhow!("verify gate poisoned"))?;
                let from = from.min(size);
                sink.disk.corrupt_for_test("image", from, size)?;
                sink.disk.drop_cache(from, size - from);
            }
            Ok((wr, size, late))
        });
        match &w {
            Ok(_) => gate.publish(u64::MAX),
            Err(_) => gate.abort(),
        }
        let vr = join_all(handles);
        // A verify failure stops the writer too: report the verify error, it names the bytes.
        vr.and(w)
            .map(|(wr, size, late)| (wr, size, late, write_seconds))
    })?;
    wbar.finish_and_clear();
    if let Some(vb) = &vbar {
        vb.finish_and_clear();
    }
    // Compressed images without checksums were hashed while reading: check them now.
    if verify && early.is_none() {
        let vb = bar(&mp, Some(late.iter().map(|c| c.len).sum()), "verify");
        let g = Gate::new(u64::MAX);
        let next2 = AtomicUsize::new(0);
        std::thread::scope(|s| join_all(spawn_verifiers(s, sink, None, &late, &next2, &g, &vb)))?;
        vb.finish_and_clear();
    }
    let verify_seconds = if verify {
        t0.elapsed().as_secs_f64() - write_seconds
    } else {
        0.0
    };
    Ok(Outcome {
        written,
        size,
        write_seconds,
        verify_seconds,
    })
}
