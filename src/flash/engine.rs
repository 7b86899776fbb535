//! The write + verify engine: a reader feeding 4 MiB buffers (or in-kernel `copy_file_range`
//! for raw images onto files), positional writes, and read-back verifiers that run behind the
//! writer as soon as data is written (files) or synced and dropped from the cache (devices).

use crate::bmap::{Bmap, BLOCK_SIZE};
use crate::disk::Disk;
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Instant;

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

/// Start (not wait for) writeback of a span, so the disk works while we copy and the final
/// fsync has little left to do. Best effort.
fn start_writeback(f: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open descriptor with integer arguments; no memory involved.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Tracks what was written and publishes it to the verifiers.
struct Progress<'a> {
    sink: &'a Sink<'a>,
    gate: &'a Gate,
    bar: &'a ProgressBar,
    written: u64,
    end: u64,
    synced: u64,
}

impl Progress<'_> {
    fn wrote(&mut self, off: u64, len: u64) -> Result<()> {
        self.written += len;
        self.end = self.end.max(off + len);
        self.bar.inc(len);
        if self.gate.failed.load(Ordering::SeqCst) {
            bail!(
                "verification failed while writing {}",
                self.sink.name.display()
            );
        }
        if !self.sink.device {
            self.gate.publish(self.end);
            if self.end - self.synced >= FILE_KICK {
                start_writeback(self.sink.disk.file(), self.synced, self.end - self.synced);
                self.synced = self.end;
            }
        } else if self.end - self.synced >= DEVICE_BATCH {
            // Synced and dropped from the cache before the verifiers may read it: they read
            // what the medium holds, not the pages we wrote from.
            self.sink.disk.sync()?;
            self.sink
                .disk
                .corrupt_for_test("image", self.synced, self.end)?;
            self.sink
                .disk
                .drop_cache(self.synced, self.end - self.synced);
            self.synced = self.end;
            self.gate.publish(self.end);
        }
        Ok(())
    }
    fn check_limit(&self, end: u64) -> Result<()> {
        match self.sink.limit {
            Some(l) if end > l => bail!(
                "image is larger than {} ({} bytes)",
                self.sink.name.display(),
                l
            ),
            _ => Ok(()),
        }
    }
}

/// Returns (bytes written, image size, checks gathered while reading).
fn write_phase(
    src: &Source,
    sink: &Sink,
    raw: Option<&File>,
    gate: &Gate,
    wbar: &ProgressBar,
) -> Result<(u64, u64, Vec<Check>)> {
    let mut p = Progress {
        sink,
        gate,
        bar: wbar,
        written: 0,
        end: 0,
        synced: 0,
    };
    if let (Some(b), Some(img), false) = (src.bmap, raw, sink.device) {
        // Raw image onto a file: in-kernel copies, no user-space buffers.
        if copy_ranges(src.image, img, b, &mut p)? {
            return Ok((p.written, b.image_size, Vec::new()));
        }
    }
    let (tx, rx) = mpsc::sync_channel::<Job>(3);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..4 {
        let _ = free_tx.send(vec![0u8; CHUNK]);
    }
    let skip_zero = !sink.device;
    std::thread::scope(|s| {
        let reader = s.spawn(move || produce(src, raw, skip_zero, tx, free_rx));
        let mut werr: Option<anyhow::Error> = None;
        for job in rx.iter() {
            for &(a, e) in &job.segs {
                let at = job.off + a as u64;
                let r = p.check_limit(job.off + e as u64).and_then(|_| {
                    sink.disk
                        .file()
                        .write_all_at(&job.buf[a..e], at)
                        .with_context(|| format!("write {} at offset {at}", sink.name.display()))?;
                    p.wrote(at, (e - a) as u64)
                });
                if let Err(err) = r {
                    werr = Some(err);
                    break;
                }
            }
            let _ = free_tx.send(job.buf);
            if werr.is_some() {
                break;
            }
        }
        drop(rx);
        drop(free_tx);
        let produced = reader
            .join()
            .map_err(|_| anyhow!("image reader thread panicked"))?;
        if let Some(e) = werr {
            return Err(e);
        }
        let (size, checks) = produced.with_context(|| format!("read {}", src.image.display()))?;
        Ok((p.written, size, checks))
    })
}

/// Copy the bmap's ranges with `copy_file_range`; false if the kernel cannot (nothing copied).
fn copy_ranges(name: &Path, img: &File, b: &Bmap, p: &mut Progress) -> Result<bool> {
    use rustix::io::Errno;
    let mut first = true;
    for r in &b.ranges {
        let (off, len) = r.byte_span(b.block_size, b.image_size);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(16 << 20) as usize;
            let mut a = off + done;
            let mut o = off + done;
            match rustix::fs::copy_file_range(
                img,
                Some(&mut a),
                p.sink.disk.file(),
                Some(&mut o),
                n,
            ) {
                Ok(0) => bail!("{} is shorter than its bmap says", name.display()),
                Ok(k) => {
                    p.wrote(off + done, k as u64)?;
                    done += k as u64;
                }
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if first => {
                    return Ok(false)
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("copy {} to {}", name.display(), p.sink.name.display())
                    })
                }
            }
            first = false;
        }
    }
    Ok(true)
}

pub(crate) fn open_stream(image: &Path, comp: Compression) -> Result<Box<dyn Read + Send>> {
    let f = File::open(image).with_context(|| format!("open image {}", image.display()))?;
    let r = std::io::BufReader::with_capacity(1 << 20, f);
    Ok(match comp {
        Compression::None => Box::new(r),
        Compression::Gz => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Xz => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads)
                .memlimit_stop(u64::MAX)
                .decoder()
                .context("set up the xz decoder")?;
            Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
        }
    })
}

/// Fill `buf` from `r`; returns bytes read (less than `buf.len()` only at end of stream).
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A filled buffer for image offset `off`; `segs` are the `[start, end)` parts to write.
struct Job {
    off: u64,
    buf: Vec<u8>,
    segs: Vec<(usize, usize)>,
}

/// Reader side: send buffers to write; return (image size, checks hashed while reading).
fn produce(
    src: &Source,
    raw: Option<&File>,
    skip_zero: bool,
    tx: mpsc::SyncSender<Job>,
    free: mpsc::Receiver<Vec<u8>>,
) -> Result<(u64, Vec<Check>)> {
    let image = src.image;
    let get = || free.recv().map_err(|_| anyhow!("writer stopped"));
    let send = |j: Job| tx.send(j).map_err(|_| anyhow!("writer stopped"));
    let mut checks = Vec::new();
    if let Some(b) = src.bmap {
        let mut stream = match src.comp {
            Compression::None => None,
            c => Some(open_stream(image, c)?),
        };
        let mut pos = 0u64; // stream position
        let mut skip = vec![0u8; 1 << 20];
        for r in &b.ranges {
            let (off, len) = r.byte_span(b.block_size, b.image_size);
            let mut h = Sha256::new();
            if let Some(st) = stream.as_mut() {
                while pos < off {
                    let n = ((off - pos) as usize).min(skip.len());
                    let k = read_full(st.as_mut(), &mut skip[..n])
                        .with_context(|| format!("decompress {}", image.display()))?;
                    if k == 0 {
                        bail!(
                            "{} ends at {pos} bytes, before its bmap's data",
                            image.display()
                        );
                    }
                    pos += k as u64;
                }
            }
            let mut done = 0u64;
            while done < len {
                let mut buf = get()?;
                let n = ((len - done) as usize).min(CHUNK);
                let at = off + done;
                if let Some(st) = stream.as_mut() {
                    let k = read_full(st.as_mut(), &mut buf[..n])
                        .with_context(|| format!("decompress {}", image.display()))?;
                    if k < n {
                        bail!(
                            "{} ends at {} bytes, before its bmap's data",
                            image.display(),
                            at + k as u64
                        );
                    }
                    pos += n as u64;
                } else if let Some(f) = raw {
                    f.read_exact_at(&mut buf[..n], at)
                        .with_context(|| format!("read {} at {at}", image.display()))?;
                }
                if r.sha256.is_empty() {
                    h.update(&buf[..n]);
                }
                send(Job {
                    off: at,
                    buf,
                    segs: vec![(0, n)],
                })?;
                done += n as u64;
            }
            let expect = if r.sha256.is_empty() {
                Expect::Sha(hex::encode(h.finalize()))
            } else {
                Expect::Sha(r.sha256.clone())
            };
            checks.push(Check { off, len, expect });
        }
        return Ok((b.image_size, checks));
    }
    // No bmap (compressed): stream everything, dropping all-zero blocks for files.
    let mut st = open_stream(image, src.comp)?;
    let mut pos = 0u64;
    loop {
        let mut buf = get()?;
        let k = read_full(st.as_mut(), &mut buf[..CHUNK])
            .with_context(|| format!("decompress {}", image.display()))?;
        if k == 0 {
            break;
        }
        let mut segs: Vec<(usize, usize)> = Vec::new();
        if skip_zero {
            let bs = BLOCK_SIZE as usize;
            let mut i = 0;
            while i < k {
                let e = (i + bs).min(k);
                if buf[i..e].iter().any(|&b| b != 0) {
                    match segs.last_mut() {
                        Some(s) if s.1 == i => s.1 = e,
                        _ => segs.push((i, e)),
                    }
                }
                i = e;
            }
        } else {
            segs.push((0, k));
        }
        for &(a, e) in &segs {
            checks.push(Check {
                off: pos + a as u64,
                len: (e - a) as u64,
                expect: Expect::Sha(hex::encode(Sha256::digest(&buf[a..e]))),
            });
        }
        send(Job {
            off: pos,
            buf,
            segs,
        })?;
        pos += k as u64;
        if k < CHUNK {
            break;
        }
    }
    Ok((pos, checks))
}

/// Join every worker (all of them, not stopping at the first error); first error wins.
fn join_all(hs: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
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
fn spawn_verifiers<'s, 'e: 's>(
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
