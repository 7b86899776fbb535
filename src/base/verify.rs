//! Checks an unpacked base must pass before it enters the cache, and again each time a cached
//! one is reused: the size the container declared, whole 512-byte sectors, 512-byte logical
//! sectors (not 4Kn), a partition table that parses (no logical partitions) with every
//! partition inside the file, and a family nodeforge knows.

use super::{detect, Family};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per logical sector nodeforge supports.
const SECTOR: u64 = 512;
/// Logical sector size of 4Kn ("4K native") disks.
const SECTOR_4K: u64 = 4096;

/// Check the raw disk at `raw`. `declared` is the size its container stated (tar real size,
/// decoded xz/gzip length verified by their own index/trailer, or the raw file's length).
/// Errors name what was found and what is supported; `raw` may be a temporary file, so the
/// caller adds the input's name.
pub fn check_raw(raw: &Path, declared: Option<u64>, family: Option<Family>) -> Result<()> {
    let file = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", raw.display()))?
        .len();
    if let Some(d) = declared {
        if size != d {
            bail!("the unpacked disk has {size} bytes but its container declared {d}");
        }
    }
    if size % SECTOR != 0 {
        bail!(
            "the disk is {size} bytes, not a whole number of 512-byte sectors ({} bytes over); \
             a truncated or padded download?",
            size % SECTOR
        );
    }
    check_sector_size(&file)?;
    let d = detect(raw, family)?;
    for p in &d.layout.partitions {
        if p.end() > size {
            bail!(
                "partition {} ends at byte {} but the disk has {size} bytes (truncated?)",
                p.number,
                p.end()
            );
        }
    }
    Ok(())
}

/// Refuse 4Kn disks: a GPT header at LBA 1 of a 4096-byte-sector disk (byte 4096, not 512),
/// or MBR partitions whose filesystems sit at `start × 4096` rather than `start × 512`.
fn check_sector_size(file: &File) -> Result<()> {
    let mut head = vec![0u8; 2 * SECTOR_4K as usize];
    let got = read_upto(file, &mut head, 0);
    let head = &head[..got];
    let sig_at = |off: usize| head.get(off..off + 8) == Some(b"EFI PART".as_slice());
    if !sig_at(SECTOR as usize) && sig_at(SECTOR_4K as usize) {
        bail!(
            "the disk uses 4096-byte sectors (4Kn: its GPT header is at byte 4096, not 512); \
             nodeforge supports disks with 512-byte sectors only"
        );
    }
    if head.len() < 512 || head[510..512] != [0x55, 0xAA] {
        return Ok(());
    }
    for i in 0..4 {
        let e = &head[446 + 16 * i..446 + 16 * (i + 1)];
        let kind = e[4];
        if kind == 0 || kind == 0xEE {
            continue;
        }
        let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
        if start == 0 {
            continue;
        }
        let at512 = fs_sector_size(file, start * SECTOR);
        if at512 == Some(SECTOR_4K) {
            bail!(
                "partition {} holds a FAT with 4096-byte sectors (a 4Kn disk); nodeforge \
                 supports disks with 512-byte sectors only",
                i + 1
            );
        }
        if at512.is_none() && fs_sector_size(file, start * SECTOR_4K).is_some() {
            bail!(
                "the disk uses 4096-byte sectors (4Kn: partition {}'s filesystem starts at \
                 sector {start} × 4096, not × 512); nodeforge supports disks with 512-byte \
                 sectors only",
                i + 1
            );
        }
    }
    Ok(())
}

/// Read as much as is there (a short file is not an error here).
fn read_upto(file: &File, buf: &mut [u8], off: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

/// Some(bytes per sector) when a FAT boot sector or an ext2/3/4 superblock starts at `off`.
fn fs_sector_size(file: &File, off: u64) -> Option<u64> {
    let mut b = [0u8; 2048];
    if read_upto(file, &mut b, off) < b.len() {
        return None;
    }
    let fat = b[510..512] == [0x55, 0xAA]
        && (&b[0x52..0x57] == b"FAT32" || &b[0x36..0x3B] == b"FAT16" || &b[0x36..0x3B] == b"FAT12");
    if fat {
        return Some(u64::from(u16::from_le_bytes([b[11], b[12]])));
    }
    if b[1024 + 0x38..1024 + 0x3A] == [0x53, 0xEF] {
        return Some(SECTOR);
    }
    None
}
