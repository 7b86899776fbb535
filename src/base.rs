//! Base images: unpack (raw, .xz, .gz, .tar.xz/.tar.gz with disk.raw) into the cache as sparse raw,
//! read the layout and the boot FAT, and detect the family.
//! OWNER: disk helper.

use crate::fat::BaseFat;
use crate::partition::DiskLayout;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The base families nodeforge knows (DESIGN.md).
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
}

/// Decompress `input` (already sha256-verified as `sha256`) into `<cache_dir>/raw/<sha256>.raw`
/// once, sparse; later calls return the cached file.
pub fn unpack_to_cache(_input: &Path, _sha256: &str, _cache_dir: &Path) -> Result<PathBuf> {
    anyhow::bail!("not implemented")
}

/// Open a raw base image and detect its family (`family` overrides detection).
pub fn open(_raw: &Path, _family: Option<Family>) -> Result<Base> {
    anyhow::bail!("not implemented")
}
