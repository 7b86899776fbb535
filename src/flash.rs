//! Flash images to block devices or files using their bmap, verified; list removable disks.
//!
//! Writing runs as a two-stage pipeline (a reader thread that reads or decompresses the image
//! into 4 MiB buffers, the caller writing them with positional writes), then one fsync, then a
//! read-back of every mapped range hashed on all cores against the bmap's sha256.
//!
//! Files: `plan.rs` (compression, bmap lookup, image size), `target.rs` (resolving, checking,
//! confirming and opening the target), `engine.rs` (the write and read-back pipeline),
//! `devices.rs` (sysfs and mountinfo), `node.rs` (`flash --node`).

pub mod devices;
pub mod engine;
mod node;
mod plan;
mod target;

pub use plan::xz_uncompressed_size;

use crate::bmap::{self, Bmap};
use anyhow::{bail, Context, Result};
use plan::{bmap_candidates, compression_of, plan, Plan};
use std::path::{Path, PathBuf};
use target::{open_target, Opened};

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

/// Check `target` (file or device) against every mapped range of `bmap` (sha256 per range).
pub fn verify(target: &Path, bmap: &Bmap) -> Result<()> {
    engine::verify_file(target, bmap)
}
