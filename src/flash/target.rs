//! The target: a file or a block device, resolved (fake sysfs trees too), checked against the
//! safety rules, confirmed and opened for writing.

use super::devices::{self, DeviceInfo};
use super::engine::{self, Compression};
use super::plan::Plan;
use super::FlashOptions;
use crate::disk::Disk;
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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

/// A target opened for writing.
pub(super) struct Opened {
    /// The open file or device (`O_EXCL` on a real device, held until this is dropped).
    pub(super) disk: Disk,
    /// Name for messages (the device node, or the file).
    pub(super) name: PathBuf,
    /// A block device or its fake-tree stand-in: device rules, batched sync and cache drop.
    pub(super) device: bool,
    /// A real block device node.
    pub(super) real_device: bool,
    /// The target file did not exist before: removed again if writing fails.
    pub(super) created: bool,
    /// Writes past this offset fail (a device's size).
    pub(super) limit: Option<u64>,
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
pub(super) fn open_target(
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
