//! FAT32 volumes: read a base's boot FAT (fatfs) and write a fresh, deterministic one.
//! OWNER: fat helper. Interface below is the contract with `compose`.

use anyhow::Result;
use std::fs::File;
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

/// A planned FAT32 volume, ready to be written.
pub struct FatImage {}

impl FatImage {
    /// Plan a volume holding `files` (content + headroom, at least `opts.min_size`).
    pub fn new(_files: Vec<FatFile>, _opts: FatOptions) -> Result<Self> {
        anyhow::bail!("not implemented")
    }
    /// Size of the volume in bytes (a multiple of 512).
    pub fn size(&self) -> u64 {
        0
    }
    /// Write the volume at `offset` in `out`; all-zero regions are left as holes.
    pub fn write_at(&self, _out: &File, _offset: u64) -> Result<()> {
        anyhow::bail!("not implemented")
    }
}

/// The contents of an existing FAT volume.
pub struct BaseFat {
    pub label: String,
    pub volume_id: u32,
    pub files: Vec<FatFile>,
}

/// Read every file of the FAT volume at `offset..offset+len` in `file`.
pub fn read_fat(_file: &File, _offset: u64, _len: u64) -> Result<BaseFat> {
    anyhow::bail!("not implemented")
}
