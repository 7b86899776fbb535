//! FAT32 volumes: read a base's boot FAT (fatfs) and write a fresh, deterministic one.
//!
//! The writer is our own: fatfs 0.3.6 writes long-name entries for `.`/`..`, which fsck.vfat
//! rejects (rust-fatfs #117). Layout: 32 reserved sectors (boot sector, FSInfo at 1, backup boot
//! sector at 6, backup FSInfo at 7), two FATs, then the data region; the root directory starts at
//! cluster 2, then the other directories, then the files, each contiguous, all in sorted order.

mod names;
mod plan;
mod read;
mod stamp;
mod tree;
mod write;

pub use read::read_fat;

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
pub enum FileData {
    Bytes(Vec<u8>),
    /// Large files (the k3s binary, airgap images) are streamed from disk.
    Path(PathBuf),
}

/// One file for a new FAT volume; `path` is relative, `/`-separated (e.g. `overlays/x.dtbo`).
#[derive(Clone, Debug)]
pub struct FatFile {
    pub path: String,
    pub data: FileData,
}

/// Volume parameters for a new FAT32 volume.
#[derive(Clone, Debug)]
pub struct FatOptions {
    /// Up to 11 characters.
    pub label: String,
    pub volume_id: u32,
    /// Unix seconds used for every timestamp (SOURCE_DATE_EPOCH or derived from inputs).
    pub timestamp: i64,
    /// The volume is never smaller than this many bytes.
    pub min_size: u64,
}

/// The contents of an existing FAT volume.
pub struct BaseFat {
    pub label: String,
    pub volume_id: u32,
    pub files: Vec<FatFile>,
}

const SECTOR: u64 = 512;
const RESERVED_SECTORS: u64 = 32;
const NUM_FATS: u64 = 2;
const MIB: u64 = 1 << 20;
/// FAT32 needs at least 65525 clusters; keep a margin so no driver guesses FAT16.
const MIN_CLUSTERS: u64 = 66_000;
/// Largest valid FAT32 cluster count.
const MAX_CLUSTERS: u64 = 0x0FFF_FFF4;
/// Chunk size for streaming file data.
const CHUNK: usize = 4 << 20;
/// Granularity at which all-zero data is left as a hole.
const ZERO_BLOCK: usize = 64 << 10;
static ZEROS: [u8; ZERO_BLOCK] = [0; ZERO_BLOCK];
/// FAT limits a directory to 65536 entries of 32 bytes.
const MAX_DIR_ENTRIES: usize = 65536;
const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME: u8 = 0x08;
const EOC: u32 = 0x0FFF_FFFF;

/// A file placed in the volume.
struct PlacedFile {
    path: String,
    data: FileData,
    size: u64,
    cluster: u32,
}

/// A directory placed in the volume, with its encoded entries.
struct PlacedDir {
    cluster: u32,
    clusters: u32,
    entries: Vec<u8>,
}

/// A planned FAT32 volume, ready to be written.
pub struct FatImage {
    total_sectors: u32,
    sectors_per_cluster: u32,
    fat_sectors: u32,
    hidden_sectors: u32,
    label: [u8; 11],
    volume_id: u32,
    dirs: Vec<PlacedDir>,
    files: Vec<PlacedFile>,
    /// Clusters used by directories and files (from cluster 2 on, contiguous).
    used_clusters: u32,
    cluster_count: u32,
}

impl FatImage {
    /// Size of the volume in bytes (a multiple of 512).
    pub fn size(&self) -> u64 {
        u64::from(self.total_sectors) * SECTOR
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * SECTOR
    }

    /// Number of data clusters of the volume.
    pub fn cluster_count(&self) -> u32 {
        self.cluster_count
    }

    /// Bytes from the volume start to the end of the last used cluster: everything past it is
    /// free space (files and directories are laid out contiguously from the first cluster), so a
    /// writer onto a used device must write exactly this prefix, holes included.
    pub fn used_len(&self) -> u64 {
        (RESERVED_SECTORS + NUM_FATS * u64::from(self.fat_sectors)) * SECTOR
            + u64::from(self.used_clusters) * self.cluster_size()
    }

    /// Record the partition's start sector in the BPB "hidden sectors" field (0 by default).
    pub fn set_hidden_sectors(&mut self, start_lba: u32) {
        self.hidden_sectors = start_lba;
    }
}
