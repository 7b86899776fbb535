//! Flash images to block devices or files using their bmap, verified; list removable disks.
//! OWNER: flash helper.
//!
//! Writing runs as a two-stage pipeline (a reader thread that reads or decompresses the image
//! into 4 MiB buffers, the caller writing them with positional writes), then one fsync, then a
//! read-back of every mapped range hashed on all cores against the bmap's sha256.

pub mod devices;

use crate::bmap::{self, Bmap, BLOCK_SIZE};
use anyhow::{bail, Context, Result};
use devices::DeviceInfo;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Size of each read/write buffer.
const CHUNK: usize = 4 << 20;

/// Arguments of `nodeforge flash`.
#[derive(clap::Args)]
pub struct FlashArgs {
    /// Image to write: `.img`, `.img.xz` or `.img.gz` (its `.bmap` beside it is used).
    pub image: PathBuf,
    /// Target: a whole-disk block device (e.g. /dev/sdb) or a regular file.
    pub target: PathBuf,
    /// Use this bmap instead of looking beside the image.
    #[arg(long)]
    pub bmap: Option<PathBuf>,
    /// Skip reading the target back after writing.
    #[arg(long)]
    pub no_verify: bool,
    /// Do not ask for confirmation before writing a device.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Allow a non-removable, non-USB device (never a mounted or system one).
    #[arg(long)]
    pub force: bool,
    /// Root holding sys/, proc/self/mountinfo and dev/ (tests).
    #[arg(long, hide = true, default_value = "/")]
    pub sysroot: PathBuf,
}

/// Arguments of `nodeforge devices`.
#[derive(clap::Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Root holding sys/ and proc/self/mountinfo (tests).
    #[arg(long, hide = true, default_value = "/")]
    pub sysroot: PathBuf,
}

/// Options of [`flash_image`].
#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// Read the target back and check it against the bmap's checksums.
    pub verify: bool,
    /// Skip the interactive confirmation for devices.
    pub yes: bool,
    /// Allow non-removable devices.
    pub force: bool,
    /// Root for sysfs, mountinfo and /dev lookups ("/" normally).
    pub sysroot: PathBuf,
    /// Explicit bmap path (otherwise looked up beside the image).
    pub bmap: Option<PathBuf>,
    /// Show progress bars (still hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Default for FlashOptions {
    fn default() -> Self {
        FlashOptions {
            verify: true,
            yes: false,
            force: false,
            sysroot: PathBuf::from("/"),
            bmap: None,
            progress: true,
        }
    }
}

/// What [`flash_image`] did.
#[derive(Debug, Clone)]
pub struct FlashReport {
    /// Path written (device node or file).
    pub target: PathBuf,
    /// Whether the target was a block device.
    pub device: bool,
    /// Image size in bytes.
    pub image_size: u64,
    /// Bytes actually written.
    pub bytes_written: u64,
    /// Wall time of writing + fsync.
    pub write_seconds: f64,
    /// Wall time of the read-back verification (0 when skipped).
    pub verify_seconds: f64,
    /// `Some(true)` when verified, `None` when skipped (a failed verify is an error).
    pub verified: Option<bool>,
}

impl FlashReport {
    /// One-line human summary.
    pub fn summary(&self) -> String {
        let total = self.write_seconds + self.verify_seconds;
        let rate = if total > 0.0 {
            self.bytes_written as f64 / total / 1e6
        } else {
            0.0
        };
        format!(
            "wrote {} ({} bytes) of a {} image to {} in {:.1} s ({:.0} MB/s incl. verify); verify: {}",
            devices::human(self.bytes_written),
            self.bytes_written,
            devices::human(self.image_size),
            self.target.display(),
            total,
            rate,
            match self.verified {
                Some(true) => format!("ok ({:.1} s)", self.verify_seconds),
                Some(false) => "FAILED".into(),
                None => "skipped".into(),
            }
        )
    }
}

/// Run `nodeforge flash`.
pub fn cmd_flash(a: &FlashArgs) -> Result<()> {
    let opts = FlashOptions {
        verify: !a.no_verify,
        yes: a.yes,
        force: a.force,
        sysroot: a.sysroot.clone(),
        bmap: a.bmap.clone(),
        progress: true,
    };
    let report = flash_image(&a.image, &a.target, &opts)?;
    eprintln!("{}", report.summary());
    Ok(())
}

/// Run `nodeforge devices`.
pub fn cmd_devices(a: &DevicesArgs) -> Result<()> {
    let disks = devices::list_disks(&a.sysroot)?;
    if a.json {
        let v: Vec<_> = disks
            .iter()
            .map(|d| {
                serde_json::json!({
                    "path": d.path, "model": d.model, "vendor": d.vendor, "serial": d.serial,
                    "size": d.size, "removable": d.removable, "usb": d.usb,
                    "mounted": !d.mounted.is_empty(), "mountpoints": d.mounted,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if disks.is_empty() {
        eprintln!("no removable or USB disks found");
        return Ok(());
    }
    println!(
        "{:<12} {:>10}  {:<9} {:<28} MOUNTED",
        "PATH", "SIZE", "REMOVABLE", "MODEL"
    );
    for d in &disks {
        let model = format!("{} {}", d.vendor, d.model);
        println!(
            "{:<12} {:>10}  {:<9} {:<28} {}",
            d.path.display(),
            devices::human(d.size),
            if d.removable { "yes" } else { "no (usb)" },
            model.trim(),
            if d.mounted.is_empty() {
                "-".to_string()
            } else {
                d.mounted.join(",")
            }
        );
    }
    Ok(())
}

/// How the image bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Gz,
}

fn compression_of(image: &Path) -> Compression {
    match image.extension().and_then(|e| e.to_str()) {
        Some("xz") => Compression::Xz,
        Some("gz") => Compression::Gz,
        _ => Compression::None,
    }
}

/// Bmap files that may sit beside `image`, most specific first.
fn bmap_candidates(image: &Path, comp: Compression) -> Vec<PathBuf> {
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

/// The resolved target.
enum Target {
    File(PathBuf),
    Device {
        /// Path opened for writing (under the sysroot for fake trees).
        open_path: PathBuf,
        info: Box<DeviceInfo>,
        /// A real block device (not a fake-tree stand-in).
        real: bool,
    },
}

fn resolve_target(target: &Path, sysroot: &Path) -> Result<Target> {
    let in_dev = target.starts_with("/dev");
    let mapped = if in_dev && sysroot != Path::new("/") {
        devices::under(sysroot, &target.to_string_lossy())
    } else {
        target.to_path_buf()
    };
    let meta = std::fs::metadata(&mapped);
    if let Ok(m) = &meta {
        if m.file_type().is_block_device() {
            let rdev = m.rdev();
            let mm = format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev));
            let link = devices::under(sysroot, "/sys/dev/block").join(&mm);
            let real = std::fs::canonicalize(&link).with_context(|| {
                format!("find {} ({mm}) in {}", target.display(), link.display())
            })?;
            let name = real
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("sysfs block path has no name")?;
            let info = devices::read_device(sysroot, &name)?;
            return Ok(Target::Device {
                open_path: mapped,
                info: Box::new(info),
                real: true,
            });
        }
    }
    if in_dev {
        // Never treat anything under /dev as a plain file; a fake tree names its disks here.
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if sysroot == Path::new("/") || meta.is_err() {
            bail!("{} is not a block device", target.display());
        }
        let info = devices::read_device(sysroot, &name)
            .with_context(|| format!("{} is not a block device", target.display()))?;
        return Ok(Target::Device {
            open_path: mapped,
            info: Box::new(info),
            real: false,
        });
    }
    match meta {
        Ok(m) if !m.file_type().is_file() => {
            bail!(
                "{} is neither a block device nor a regular file",
                target.display()
            )
        }
        _ => Ok(Target::File(mapped)),
    }
}

/// A region to check after writing: `(offset, len, sha256 hex)`.
#[derive(Debug, Clone)]
struct Check {
    off: u64,
    len: u64,
    sha256: String,
}

/// What to write and how to check it.
struct Plan {
    comp: Compression,
    /// Bmap (given, found or computed); `None` for a compressed image without one.
    bmap: Option<Bmap>,
    /// Known image size.
    image_size: Option<u64>,
}

fn plan(image: &Path, opts: &FlashOptions) -> Result<Plan> {
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
    Ok(Plan {
        comp,
        bmap,
        image_size,
    })
}

/// Write `image` to `target` (block device or regular file) and verify it; the library entry
/// point behind `nodeforge flash`. Devices go through the safety rules and the confirmation.
pub fn flash_image(image: &Path, target: &Path, opts: &FlashOptions) -> Result<FlashReport> {
    let plan = plan(image, opts)?;
    let tgt = resolve_target(target, &opts.sysroot)?;
    let (out, is_device, real_dev) = match &tgt {
        Target::File(p) => {
            if std::fs::canonicalize(p).ok() == std::fs::canonicalize(image).ok() {
                bail!("target {} is the image itself", p.display());
            }
            let f = OpenOptions::new()
                .write(true)
                .read(true)
                .create(true)
                .truncate(true)
                .open(p)
                .with_context(|| format!("create target file {}", p.display()))?;
            (f, false, false)
        }
        Target::Device {
            open_path,
            info,
            real,
        } => {
            devices::check_device(info, plan.image_size, opts.force)?;
            confirm(info, opts.yes)?;
            let mut o = OpenOptions::new();
            o.write(true).read(true);
            if *real {
                // O_EXCL on a block device fails if anything (a mount, dm) holds it.
                o.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
            }
            let f = o
                .open(open_path)
                .with_context(|| format!("open device {} for writing", info.path.display()))?;
            (f, true, *real)
        }
    };
    let target_name = match &tgt {
        Target::File(p) => p.clone(),
        Target::Device { info, .. } => info.path.clone(),
    };
    let dev_limit = match &tgt {
        Target::Device { info, .. } => Some(info.size),
        Target::File(_) => None,
    };
    if let Some(sz) = plan.image_size {
        if !is_device {
            out.set_len(sz)
                .with_context(|| format!("size target file {}", target_name.display()))?;
        }
    }

    let t0 = Instant::now();
    let skip_zero = !is_device;
    let (written, size, checks) =
        write_all(image, &plan, &out, &target_name, dev_limit, skip_zero, opts)?;
    if !is_device && plan.image_size.is_none() {
        out.set_len(size)
            .with_context(|| format!("size target file {}", target_name.display()))?;
    }
    out.sync_all()
        .with_context(|| format!("fsync {}", target_name.display()))?;
    let write_seconds = t0.elapsed().as_secs_f64();

    let mut verified = None;
    let mut verify_seconds = 0.0;
    if opts.verify {
        let t1 = Instant::now();
        if real_dev {
            // Read the medium, not the page cache.
            let _ = rustix::fs::fadvise(&out, 0, None, rustix::fs::Advice::DontNeed);
        }
        verify_checks(&out, &target_name, &checks, opts.progress)?;
        verified = Some(true);
        verify_seconds = t1.elapsed().as_secs_f64();
    }
    Ok(FlashReport {
        target: target_name,
        device: is_device,
        image_size: size,
        bytes_written: written,
        write_seconds,
        verify_seconds,
        verified,
    })
}

/// Show the device and ask for `yes` on the terminal unless `yes` was given.
fn confirm(info: &DeviceInfo, yes: bool) -> Result<()> {
    let dev = info.path.display();
    let desc = format!(
        "{dev}: {} {} ({}){}{}",
        info.vendor,
        info.model,
        devices::human(info.size),
        if info.serial.is_empty() {
            String::new()
        } else {
            format!(", serial {}", info.serial)
        },
        if info.usb { ", USB" } else { "" }
    );
    if yes {
        eprintln!("writing {desc}");
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to write {dev} without confirmation: no terminal to ask on (pass --yes)");
    }
    eprintln!("About to overwrite {desc}. Everything on it will be lost.");
    eprint!("Type yes to write {dev}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("read confirmation")?;
    if line.trim() != "yes" {
        bail!("not confirmed; {dev} left untouched");
    }
    Ok(())
}

fn bar(total: Option<u64>, msg: &'static str, show: bool) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let style = if total.is_some() {
        "{msg:7} [{bar:32}] {bytes}/{total_bytes} {decimal_bytes_per_sec} eta {eta}"
    } else {
        "{msg:7} {bytes} {decimal_bytes_per_sec}"
    };
    if let Ok(s) = ProgressStyle::with_template(style) {
        pb.set_style(s.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

fn open_stream(image: &Path, comp: Compression) -> Result<Box<dyn Read + Send>> {
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
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
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

/// Run the reader thread and write its buffers. Returns (bytes written, image size, checks).
fn write_all(
    image: &Path,
    plan: &Plan,
    out: &File,
    target: &Path,
    dev_limit: Option<u64>,
    skip_zero: bool,
    opts: &FlashOptions,
) -> Result<(u64, u64, Vec<Check>)> {
    let total = plan.bmap.as_ref().map(|b| b.mapped_bytes());
    let pb = bar(total, "write", opts.progress);
    let (tx, rx) = mpsc::sync_channel::<Job>(3);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..4 {
        let _ = free_tx.send(vec![0u8; CHUNK]);
    }
    let mut written = 0u64;
    let result = std::thread::scope(|s| {
        let reader = s.spawn(move || produce(image, plan, skip_zero, tx, free_rx));
        let mut werr: Option<anyhow::Error> = None;
        for job in rx.iter() {
            for &(a, e) in &job.segs {
                let at = job.off + a as u64;
                if let Some(lim) = dev_limit {
                    if job.off + e as u64 > lim {
                        werr = Some(anyhow::anyhow!(
                            "image is larger than {} ({} bytes)",
                            target.display(),
                            lim
                        ));
                        break;
                    }
                }
                if let Err(err) = out.write_all_at(&job.buf[a..e], at) {
                    werr = Some(
                        anyhow::Error::new(err)
                            .context(format!("write {} at offset {at}", target.display())),
                    );
                    break;
                }
                written += (e - a) as u64;
                pb.inc((e - a) as u64);
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
            .map_err(|_| anyhow::anyhow!("image reader thread panicked"))?;
        if let Some(e) = werr {
            return Err(e);
        }
        produced
    });
    pb.finish_and_clear();
    let (size, checks) = result.with_context(|| format!("flash {}", image.display()))?;
    Ok((written, size, checks))
}

/// Reader side: send buffers to write; return (image size, checks).
fn produce(
    image: &Path,
    plan: &Plan,
    skip_zero: bool,
    tx: mpsc::SyncSender<Job>,
    free: mpsc::Receiver<Vec<u8>>,
) -> Result<(u64, Vec<Check>)> {
    let get = || free.recv().map_err(|_| anyhow::anyhow!("writer stopped"));
    let send = |j: Job| tx.send(j).map_err(|_| anyhow::anyhow!("writer stopped"));
    match &plan.bmap {
        Some(b) => {
            let mut checks = Vec::with_capacity(b.ranges.len());
            let raw = if plan.comp == Compression::None {
                Some(File::open(image).with_context(|| format!("open image {}", image.display()))?)
            } else {
                None
            };
            let mut stream = match plan.comp {
                Compression::None => None,
                c => Some(open_stream(image, c)?),
            };
            let mut pos = 0u64; // stream position
            let mut skip = vec![0u8; 1 << 20];
            for r in &b.ranges {
                let (off, len) = r.byte_span(b.block_size, b.image_size);
                let mut h = r.sha256.is_empty().then(Sha256::new);
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
                    if let Some(f) = &raw {
                        f.read_exact_at(&mut buf[..n], at)
                            .with_context(|| format!("read {} at {at}", image.display()))?;
                    } else if let Some(st) = stream.as_mut() {
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
                    }
                    if let Some(h) = h.as_mut() {
                        h.update(&buf[..n]);
                    }
                    send(Job {
                        off: at,
                        buf,
                        segs: vec![(0, n)],
                    })?;
                    done += n as u64;
                }
                checks.push(Check {
                    off,
                    len,
                    sha256: match h {
                        Some(h) => hex::encode(h.finalize()),
                        None => r.sha256.clone(),
                    },
                });
            }
            Ok((b.image_size, checks))
        }
        None => {
            // Compressed without a bmap: stream everything, dropping all-zero blocks for files.
            let mut st = open_stream(image, plan.comp)?;
            let mut checks = Vec::new();
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
                        sha256: hex::encode(Sha256::digest(&buf[a..e])),
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
    }
}

/// Read `checks` back from `f` on all cores and compare their sha256.
fn verify_checks(f: &File, name: &Path, checks: &[Check], progress: bool) -> Result<()> {
    let total: u64 = checks.iter().map(|c| c.len).sum();
    let pb = bar(Some(total), "verify", progress);
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let res: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(c) = checks.get(i) else {
                            return Ok(());
                        };
                        let mut h = Sha256::new();
                        let mut d = 0u64;
                        while d < c.len {
                            let n = ((c.len - d) as usize).min(CHUNK);
                            f.read_exact_at(&mut buf[..n], c.off + d).with_context(|| {
                                format!("read back {} at {}", name.display(), c.off + d)
                            })?;
                            h.update(&buf[..n]);
                            d += n as u64;
                            let t = done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                            pb.set_position(t);
                        }
                        let got = hex::encode(h.finalize());
                        if got != c.sha256 {
                            // Signal the other workers to stop.
                            next.store(checks.len(), Ordering::Relaxed);
                            bail!(
                                "verify failed: {} bytes {}..{} read back with sha256 {got}, expected {}",
                                name.display(),
                                c.off,
                                c.off + c.len,
                                c.sha256
                            );
                        }
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("verify thread panicked")))
            })
            .collect()
    });
    pb.finish_and_clear();
    for r in res {
        r?;
    }
    Ok(())
}

/// Check `target` (file or device) against every mapped range of `bmap` (sha256 per range).
pub fn verify(target: &Path, bmap: &Bmap) -> Result<()> {
    let f = File::open(target).with_context(|| format!("open {}", target.display()))?;
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
            sha256: r.sha256.clone(),
        });
    }
    verify_checks(&f, target, &checks, false)
}
