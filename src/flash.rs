//! Flash images to block devices or files using their bmap, verified; list removable disks.
//!
//! Writing runs as a two-stage pipeline (a reader thread that reads or decompresses the image
//! into 4 MiB buffers, the caller writing them with positional writes), then one fsync, then a
//! read-back of every mapped range hashed on all cores against the bmap's sha256.

pub mod devices;
pub mod engine;
mod node;

use crate::bmap::{self, Bmap};
use crate::disk::Disk;
use anyhow::{bail, Context, Result};
use devices::DeviceInfo;
use engine::Compression;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Arguments of `nodeforge flash`.
#[derive(clap::Args)]
pub struct FlashArgs {
    /// Image to write: `.img`, `.img.xz` or `.img.gz` (its `.bmap` beside it is used).
    pub image: PathBuf,
    /// Target: a whole-disk block device (e.g. /dev/sdb) or a regular file.
    #[arg(required_unless_present = "emit_bmap")]
    pub target: Option<PathBuf>,
    /// Only write IMAGE's bmap (bmaptool 2.0) to this path and exit.
    #[arg(long, hide = true, value_name = "BMAP")]
    pub emit_bmap: Option<PathBuf>,
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
    /// After writing, seed the image for this node (hostname, token, node password, network):
    /// one generic image serves every node of its role.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Cluster file for `--node` (default `./cluster.toml`).
    #[arg(short, long)]
    pub cluster: Option<PathBuf>,
    /// Secrets file for `--node` (default `nodeforge-secrets.toml` beside the cluster file).
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    #[command(flatten)]
    pub trust: crate::provenance::TrustArgs,
}

/// Arguments of `nodeforge devices`.
#[derive(clap::Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List every whole disk with a medium (internal disks and loop devices too), not only
    /// removable and USB ones.
    #[arg(long)]
    pub all: bool,
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
    if let Some(out) = &a.emit_bmap {
        let b = bmap::generate(&a.image)?;
        return bmap::write(&b, out);
    }
    let Some(target) = &a.target else {
        bail!("no TARGET given");
    };
    let opts = FlashOptions {
        verify: !a.no_verify,
        yes: a.yes,
        force: a.force,
        sysroot: a.sysroot.clone(),
        bmap: a.bmap.clone(),
        progress: true,
    };
    // Everything --node needs is loaded and checked first: the cluster file, the node, its
    // secrets, and the node's seed built against the image itself. A problem there fails before
    // the first byte of the stick is written.
    let seeding = match &a.node {
        Some(name) => Some(node::Seeding::load(a, name)?),
        None => None,
    };
    // Signature and checksum of the image and the bmap flash will follow, before any write.
    let bmap_used = a.bmap.clone().or_else(|| {
        bmap_candidates(&a.image, compression_of(&a.image))
            .into_iter()
            .find(|p| p.is_file())
    });
    crate::provenance::check_before_flash(&a.image, bmap_used.as_deref(), &a.trust)?;
    let mut plan = plan(&a.image, &opts)?;
    if let Some(s) = &seeding {
        node::precheck_seed(&a.image, plan.comp, &mut plan.size_hint, s).with_context(|| {
            format!(
                "checking that {} can carry node {}'s seed (nothing was written to {})",
                a.image.display(),
                s.node,
                target.display()
            )
        })?;
    }
    let t = open_target(&a.image, target, &mut plan, &opts)?;
    let report = write_image(&a.image, &plan, &t, &opts)?;
    eprintln!("{}", report.summary());
    if let Some(s) = &seeding {
        let name = &s.node;
        let tn = t.name.display();
        let how = if report.verified.is_some() {
            "written and verified"
        } else {
            "written, not verified"
        };
        let prepared = s.prepare(&t.disk).with_context(|| {
            format!(
                "{tn} now holds the image {} ({how}) but NOT node {name}'s seed \
                 (no hostname, token or node password: it would not join). Nothing of the seed \
                 was written. Re-run the same command to finish",
                a.image.display()
            )
        })?;
        let r = crate::reseed::write(&t.disk, &prepared).with_context(|| {
            format!(
                "{tn} holds the image {} but writing node {name}'s seed failed part way: its seed \
                 partition may be half written and the stick must not be booted. Re-run the same \
                 command to finish (it writes the image again, then the seed)",
                a.image.display()
            )
        })?;
        eprintln!(
            "seeded {tn} for node {name}: partition(s) {:?} rewritten and verified, instance-id {}",
            r.partitions, r.instance_id
        );
    }
    finish(&t);
    Ok(())
}

/// After writing a device: have the kernel re-read its partition table (best effort).
fn finish(t: &Opened) {
    if let Err(e) = t.disk.reread_partitions() {
        if t.real_device {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Run `nodeforge devices`.
pub fn cmd_devices(a: &DevicesArgs) -> Result<()> {
    let disks = devices::list_disks(&a.sysroot, a.all)?;
    if a.json {
        let v: Vec<_> = disks
            .iter()
            .map(|d| {
                serde_json::json!({
                    "path": d.path, "model": d.model, "vendor": d.vendor, "serial": d.serial,
                    "size": d.size, "transport": d.transport, "removable": d.removable,
                    "usb": d.usb, "read_only": d.read_only,
                    "mounted": !d.mounted.is_empty(), "mountpoints": d.mounted,
                    "mounted_partitions": d.mounts,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if disks.is_empty() {
        eprintln!(
            "no {}disks found",
            if a.all { "" } else { "removable or USB " }
        );
        return Ok(());
    }
    println!(
        "{:<14} {:>10}  {:<6} {:<9} {:<28} MOUNTED",
        "PATH", "SIZE", "TRAN", "REMOVABLE", "MODEL"
    );
    for d in &disks {
        let model = format!("{} {}", d.vendor, d.model);
        println!(
            "{:<14} {:>10}  {:<6} {:<9} {:<28} {}",
            d.path.display(),
            devices::human(d.size),
            if d.transport.is_empty() {
                "-"
            } else {
                &d.transport
            },
            if d.removable { "yes" } else { "no" },
            if model.trim().is_empty() {
                "-"
            } else {
                model.trim()
            },
            if d.mounts.is_empty() {
                "-".to_string()
            } else {
                d.mounts
                    .iter()
                    .map(|m| format!("{} on {}", m.device, m.mountpoint))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    Ok(())
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

/// What to write and how to check it.
struct Plan {
    comp: Compression,
    /// Bmap (given, found or computed); `None` for a compressed image without one.
    bmap: Option<Bmap>,
    /// Known image size.
    image_size: Option<u64>,
    /// Image size known before writing (bmap, or an xz index), for the device size rule.
    size_hint: Option<u64>,
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
    let size_hint = match (&bmap, comp) {
        (Some(b), _) => Some(b.image_size),
        (None, Compression::Xz) => xz_uncompressed_size(image).unwrap_or(None),
        _ => None,
    };
    Ok(Plan {
        size_hint,
        comp,
        bmap,
        image_size,
    })
}

/// Uncompressed size recorded in an `.xz` file's indexes (all streams), or `None` if the file
/// does not end like an xz stream.
pub fn xz_uncompressed_size(path: &Path) -> Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut end = f
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let read = |off: u64, len: u64| -> Result<Vec<u8>> {
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, off)
            .with_context(|| format!("read {} at {off}", path.display()))?;
        Ok(b)
    };
    let mut total = 0u64;
    while end > 0 {
        // Stream padding: zero bytes in multiples of four.
        if end >= 4 && read(end - 4, 4)? == [0, 0, 0, 0] {
            end -= 4;
            continue;
        }
        if end < 24 {
            return Ok(None);
        }
        let footer = read(end - 12, 12)?;
        if &footer[10..12] != b"YZ" {
            return Ok(None);
        }
        let backward =
            (u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]) as u64 + 1) * 4;
        if backward + 24 > end {
            return Ok(None);
        }
        let index_start = end - 12 - backward;
        let index = read(index_start, backward)?;
        if index.first() != Some(&0) {
            return Ok(None);
        }
        let mut i = 1usize;
        let mut varint = || -> Option<u64> {
            let mut v = 0u64;
            for k in 0..9 {
                let b = *index.get(i)?;
                i += 1;
                v |= ((b & 0x7f) as u64) << (7 * k);
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        let Some(records) = varint() else {
            return Ok(None);
        };
        let mut blocks = 0u64;
        for _ in 0..records {
            let (Some(unpadded), Some(size)) = (varint(), varint()) else {
                return Ok(None);
            };
            blocks = blocks.saturating_add(unpadded.div_ceil(4) * 4);
            total = total.saturating_add(size);
        }
        match index_start.checked_sub(blocks + 12) {
            Some(start) => end = start,
            None => return Ok(None),
        }
    }
    Ok(Some(total))
}

/// A target opened for writing.
struct Opened {
    /// The open file or device (`O_EXCL` on a real device, held until this is dropped).
    disk: Disk,
    /// Name for messages (the device node, or the file).
    name: PathBuf,
    /// A block device or its fake-tree stand-in: device rules, batched sync and cache drop.
    device: bool,
    /// A real block device node.
    real_device: bool,
    /// The target file did not exist before: removed again if writing fails.
    created: bool,
    /// Writes past this offset fail (a device's size).
    limit: Option<u64>,
}

/// Write `image` to `target` (block device or regular file) and verify it; the library entry
/// point behind `nodeforge flash`. Devices go through the safety rules and the confirmation, and
/// are refused before the first write when the image is larger (its size comes from the bmap,
/// the file, the xz index, or a counting pass over a `.gz`).
pub fn flash_image(image: &Path, target: &Path, opts: &FlashOptions) -> Result<FlashReport> {
    let mut plan = plan(image, opts)?;
    let t = open_target(image, target, &mut plan, opts)?;
    let r = write_image(image, &plan, &t, opts)?;
    finish(&t);
    Ok(r)
}

/// Size of the uncompressed image of a `.gz` without a bmap, learned before writing a device:
/// the gzip trailer's ISIZE (RFC 1952: size mod 2^32 of the last member) is a lower bound that
/// refuses a too-small device at once; the exact size takes a counting pass.
fn learn_gz_size(image: &Path, info: &DeviceInfo, force: bool) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = File::open(image).with_context(|| format!("open image {}", image.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("stat image {}", image.display()))?
        .len();
    if len >= 18 {
        let mut t = [0u8; 4];
        f.read_exact_at(&mut t, len - 4)
            .with_context(|| format!("read the gzip trailer of {}", image.display()))?;
        devices::check_device(info, Some(u64::from(u32::from_le_bytes(t))), force)?;
    }
    eprintln!(
        "{} has no bmap: decompressing it once to learn its size before writing",
        image.display()
    );
    let mut st = engine::open_stream(image, Compression::Gz)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut n = 0u64;
    loop {
        let k = engine::read_full(st.as_mut(), &mut buf)
            .with_context(|| format!("decompress {}", image.display()))?;
        n += k as u64;
        if k < buf.len() {
            return Ok(n);
        }
    }
}

/// Resolve and open the target: files are created or truncated; devices are checked against
/// every safety rule (size included) and confirmed, then opened with `O_EXCL`.
fn open_target(
    image: &Path,
    target: &Path,
    plan: &mut Plan,
    opts: &FlashOptions,
) -> Result<Opened> {
    let tgt = resolve_target(target, &opts.sysroot)?;
    match tgt {
        Target::File(p) => {
            // A file we create and then fail to fill is removed: no partial output.
            let created = std::fs::symlink_metadata(&p).is_err();
            let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
                a.dev() == b.dev() && a.ino() == b.ino()
            };
            if let (Ok(a), Ok(b)) = (std::fs::metadata(&p), std::fs::metadata(image)) {
                if same(&a, &b) {
                    bail!("target {} is the image itself", p.display());
                }
            }
            let f = OpenOptions::new()
                .write(true)
                .read(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .with_context(|| format!("create target file {}", p.display()))?;
            let disk = Disk::from_file(f, &p)?;
            if let Some(sz) = plan.image_size {
                disk.file()
                    .set_len(sz)
                    .with_context(|| format!("size target file {}", p.display()))?;
            }
            Ok(Opened {
                disk,
                name: p,
                device: false,
                real_device: false,
                created,
                limit: None,
            })
        }
        Target::Device {
            open_path,
            info,
            real,
        } => {
            if info.is_partition || plan.size_hint.is_some() || plan.comp != Compression::Gz {
                devices::check_device(&info, plan.size_hint, opts.force)?;
            } else {
                // Rules that need no size first, so a mounted stick is not decompressed for.
                devices::check_device(&info, None, opts.force)?;
                plan.size_hint = Some(learn_gz_size(image, &info, opts.force)?);
                devices::check_device(&info, plan.size_hint, opts.force)?;
            }
            confirm(&info, opts.yes)?;
            // O_EXCL on a block device fails if anything (a mount, dm) holds it, and keeps
            // mounts out until the image and the seed are written and checked.
            let disk = Disk::open_rw(&open_path, real)
                .with_context(|| format!("open device {} for writing", info.path.display()))?;
            let size = if real { disk.size() } else { info.size };
            if let Some(need) = plan.size_hint {
                if size < need {
                    bail!(
                        "refusing to write {}: it is smaller than the image ({size} < {need} bytes)",
                        info.path.display()
                    );
                }
            }
            Ok(Opened {
                disk,
                name: info.path.clone(),
                device: true,
                real_device: real,
                created: false,
                limit: Some(size),
            })
        }
    }
}

/// Write and verify the image onto an opened target.
fn write_image(image: &Path, plan: &Plan, t: &Opened, opts: &FlashOptions) -> Result<FlashReport> {
    let src = engine::Source {
        image,
        comp: plan.comp,
        bmap: plan.bmap.as_ref(),
    };
    let sink = engine::Sink {
        disk: &t.disk,
        name: &t.name,
        device: t.device,
        limit: t.limit,
    };
    let res = engine::run(&src, &sink, opts.verify, opts.progress).and_then(|o| {
        if !t.device && plan.image_size.is_none() {
            t.disk
                .file()
                .set_len(o.size)
                .with_context(|| format!("size target file {}", t.name.display()))?;
            t.disk
                .file()
                .sync_all()
                .with_context(|| format!("fsync {}", t.name.display()))?;
        }
        Ok(o)
    });
    let o = match res {
        Ok(o) => o,
        Err(e) if t.created => {
            let _ = std::fs::remove_file(&t.name);
            return Err(e);
        }
        Err(e) if t.device => {
            return Err(e.context(format!(
                "writing {} to {} failed: the device holds a partly written or unverified image \
                 and must not be booted. Run the same command again (another stick if it fails \
                 the same way)",
                image.display(),
                t.name.display()
            )))
        }
        Err(e) => return Err(e),
    };
    Ok(FlashReport {
        target: t.name.clone(),
        device: t.device,
        image_size: o.size,
        bytes_written: o.written,
        write_seconds: o.write_seconds,
        verify_seconds: o.verify_seconds,
        verified: opts.verify.then_some(true),
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

/// Check `target` (file or device) against every mapped range of `bmap` (sha256 per range).
pub fn verify(target: &Path, bmap: &Bmap) -> Result<()> {
    engine::verify_file(target, bmap)
}
