//! Base images: unpack (raw, .xz, .gz, .tar.xz/.tar.gz with disk.raw) into the cache as sparse raw,
//! read the layout and the boot FAT, and detect the family.
//!
//! Files: `unpack.rs` (the verified raw cache), `decode.rs` (formats and decoders into a sparse
//! file), `tar_sparse.rs` (GNU/pax sparse tar members), `verify.rs` (checks before caching),
//! `probe.rs` (filesystems, boot files, ext4 reads), `detect.rs` (partitions and family).

mod decode;
mod detect;
mod probe;
mod tar_sparse;
mod unpack;
mod verify;

pub use decode::{detect_format, InputFormat};
pub use detect::{detect, Detected};
pub use probe::{
    boot_files, os_release_field, probe_fs, read_ext4_file, read_ext4_file_if_exists, BootFiles,
    FsKind,
};
pub use unpack::{cached_raw_path, unpack_base, unpack_to_cache, unpack_to_cache_with};
pub use verify::check_raw;

use crate::fat::BaseFat;
use crate::partition::DiskLayout;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Label of the seed partition added to families whose cloud-init finds its seed by label.
pub const CIDATA_LABEL: &str = "CIDATA";

/// The base families nodeforge knows (README "How an image is made"; docs/cloud-init.md#where-each-family-looks-for-its-seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Raspberry Pi OS: MBR, p1 `bootfs`, seed on the boot FAT.
    Raspios,
    /// Ubuntu Server raspi: MBR, p1 `system-boot`, seed on the boot FAT.
    UbuntuRaspi,
    /// Debian raspi: MBR, p1 `RASPIFIRM`, p2 `RASPIROOT`, seed on a new `CIDATA` FAT.
    DebianRaspi,
    /// Debian generic amd64: GPT, p15 ESP, p1 root last, seed on a new `CIDATA` FAT before root.
    DebianGeneric,
}

impl Family {
    /// The kebab-case name used in `cluster.toml` and `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Raspios => "raspios",
            Family::UbuntuRaspi => "ubuntu-raspi",
            Family::DebianRaspi => "debian-raspi",
            Family::DebianGeneric => "debian-generic",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An opened base image.
pub struct Base {
    /// Sparse raw image in the cache.
    pub raw: PathBuf,
    pub size: u64,
    pub layout: DiskLayout,
    pub family: Family,
    /// Index into `layout.partitions` of the boot FAT (Pi firmware FAT, or the ESP).
    pub boot: usize,
    /// Index into `layout.partitions` of the root filesystem.
    pub root: usize,
    /// The boot FAT's content (Pi families; `None` where the boot partition is kept byte for byte).
    pub boot_fat: Option<BaseFat>,
    /// `/etc/os-release` from the root filesystem, when readable.
    pub os_release: Option<String>,
    /// Indices into `layout.partitions` of FAT partitions labelled `CIDATA` (a seed left by an
    /// earlier build or another tool). nodeforge owns the seed: these are dropped when composing.
    pub seed_partitions: Vec<usize>,
}

/// Open a raw base image and detect its family (`family` overrides detection).
pub fn open(raw: &Path, family: Option<Family>) -> Result<Base> {
    let d = detect(raw, family)?;
    let boot_fat = match d.family {
        Family::DebianGeneric => None,
        Family::Raspios | Family::UbuntuRaspi | Family::DebianRaspi => {
            let file =
                File::open(raw).with_context(|| format!("opening base image {}", raw.display()))?;
            let p = &d.layout.partitions[d.boot];
            Some(
                crate::fat::read_fat(&file, p.start, p.size).with_context(|| {
                    format!(
                        "reading the boot FAT (partition {}) of base image {}",
                        p.number,
                        raw.display()
                    )
                })?,
            )
        }
    };
    Ok(Base {
        raw: raw.to_path_buf(),
        size: d.size,
        layout: d.layout,
        family: d.family,
        boot: d.boot,
        root: d.root,
        boot_fat,
        os_release: d.os_release,
        seed_partitions: d.seed_partitions,
    })
}
