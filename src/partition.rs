//! Partition tables: read and write MBR (mbrman) and GPT (gptman) layouts.
//! OWNER: disk helper. Interface below is the contract with `compose`/`inspect`.

use anyhow::Result;
use serde::Serialize;
use std::fs::File;
use std::path::Path;

/// Logical sector size; every supported base uses 512-byte sectors.
pub const SECTOR: u64 = 512;

/// Which table a disk has, with the identity that must survive a rebuild.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TableKind {
    /// MBR with its 32-bit disk signature (PARTUUID prefix on Raspberry Pi OS).
    Mbr { disk_signature: u32 },
    /// GPT with its disk GUID (bytes as stored on disk).
    Gpt { disk_guid: [u8; 16] },
}

/// A partition type: an MBR type byte or a GPT type GUID (bytes as on disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PartType {
    Mbr(u8),
    Gpt([u8; 16]),
}

/// One partition; offsets in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based partition number (MBR slot or GPT entry index).
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub part_type: PartType,
    /// GPT unique partition GUID (bytes as on disk).
    pub unique_guid: Option<[u8; 16]>,
    /// GPT partition name (empty on MBR).
    pub name: String,
    /// MBR boot flag.
    pub bootable: bool,
    /// GPT attribute bits.
    pub attributes: u64,
}

/// A whole disk layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskLayout {
    pub table: TableKind,
    /// Sorted by partition number.
    pub partitions: Vec<Partition>,
}

/// Read the partition table of `file` (`path` only names it in errors).
pub fn read_layout(_file: &mut File, _path: &Path) -> Result<DiskLayout> {
    anyhow::bail!("not implemented")
}

/// Write `layout` to `file` for a disk of `disk_size` bytes (GPT: primary, backup and protective MBR).
pub fn write_layout(_file: &mut File, _layout: &DiskLayout, _disk_size: u64) -> Result<()> {
    anyhow::bail!("not implemented")
}
