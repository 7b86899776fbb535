//! Filesystem-aware block maps: which bytes of a disk image must be written to a target.
//!
//! Images are sparse: all-zero blocks are holes. A flasher that writes only the data extents
//! leaves a reused stick's old bytes in every hole, which is only safe where the filesystem
//! considers the block free. [`free_ranges`] asks the partition table, ext2/3/4 block bitmaps
//! and FAT tables which bytes are free; everything else (including holes inside files,
//! inode tables, journals, FATs and directories) is needed and must be written, as zeros
//! where it is a hole. Any doubt (unknown filesystem, unsupported feature, inconsistent
//! metadata) makes the whole partition needed: a wrong "free" corrupts, a wrong "needed" only
//! costs write time.

use crate::partition::{self, TableKind, GPT_BACKUP_SECTORS, GPT_FIRST_USABLE_LBA, SECTOR};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Unpartitioned space before this offset stays mapped (boot code, tables, firmware blobs).
const HEAD_KEEP: u64 = 1 << 20;

/// Byte ranges `(start, len)` of the image (size `image_size`) whose content does not matter:
/// free blocks of ext2/3/4 and FAT partitions and the unpartitioned space after the last
/// partition. Sorted, non-overlapping, merged, within `0..image_size`. Ranges are exact bytes:
/// a consumer working in larger blocks must treat a block as free only if it lies entirely
/// inside free ranges. An unreadable partition table gives no free ranges (all needed).
pub fn free_ranges(file: &File, image_size: u64) -> Result<Vec<(u64, u64)>> {
    let mut handle = file
        .try_clone()
        .context("fsmap: duplicating the image file handle")?;
    let layout = match partition::read_layout(&mut handle, Path::new("image")) {
        Ok(l) => l,
        Err(_) => return Ok(Vec::new()),
    };
    // No partitions, or a boot sector that is itself a FAT (a "superfloppy"): the table is
    // not what describes this disk, so nothing counts as unpartitioned.
    let mut sector0 = [0u8; 512];
    file.read_exact_at(&mut sector0, 0)
        .context("fsmap: reading sector 0")?;
    if layout.partitions.is_empty() || Fat::parse(&sector0, image_size).is_ok() {
        return Ok(Vec::new());
    }
    let gpt = matches!(layout.table, TableKind::Gpt { .. });
    // Partition tables (MBR + primary GPT) at the start, backup GPT at the end never free.
    let lo = GPT_FIRST_USABLE_LBA * SECTOR;
    let hi = if gpt {
        image_size.saturating_sub(GPT_BACKUP_SECTORS * SECTOR)
    } else {
        image_size
    };
    let mut free = Vec::new();
    let last_end = layout
        .partitions
        .iter()
        .map(|p| p.end())
        .max()
        .unwrap_or(0)
        .max(HEAD_KEEP);
    if last_end < hi {
        free.push((last_end, hi - last_end));
    }
    let parts: Vec<(u64, u64)> = layout
        .partitions
        .iter()
        .filter(|p| p.start < image_size && p.size > 0)
        .map(|p| (p.start, p.size.min(image_size - p.start)))
        .collect();
    for (i, &(start, size)) in parts.iter().enumerate() {
        // Overlapping partitions: a block free in one may be used by the other.
        let overlaps = parts
            .iter()
            .enumerate()
            .any(|(j, &(s, l))| j != i && s < start + size && start < s + l);
        if overlaps {
            continue;
        }
        // Any error inside a filesystem means "all needed" for that partition.
        if let Ok(ranges) = partition_free(file, start, size) {
            free.extend(ranges.into_iter().map(|(s, l)| (start + s, l)));
        }
    }
    let free = normalize(free, lo, hi);
    if gpt {
        // The backup GPT sits where the header says, which is not the end of the image when
        // the image grew after the table was written: keep its array and header too.
        let mut header = [0u8; 92];
        file.read_exact_at(&mut header, SECTOR)
            .context("fsmap: reading the GPT header")?;
        if &header[..8] == b"EFI PART" {
            let mut alt = [0u8; 8];
            alt.copy_from_slice(&header[32..40]);
            let alt = u64::from_le_bytes(alt);
            let start = alt
                .saturating_sub(GPT_BACKUP_SECTORS - 1)
                .saturating_mul(SECTOR);
            let end = alt.saturating_add(1).saturating_mul(SECTOR);
            return Ok(subtract(&free, &[(start, end - start)]));
        }
    }
    Ok(free)
}

/// Byte ranges `(start, len)` that must be written: the complement of [`free_ranges`] within
/// `0..image_size`. Sorted, non-overlapping, merged.
pub fn needed_ranges(file: &File, image_size: u64) -> Result<Vec<(u64, u64)>> {
    let free = free_ranges(file, image_size)?;
    Ok(complement(&free, image_size))
}

/// The complement of sorted, non-overlapping `ranges` within `0..size`.
pub fn complement(ranges: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for &(s, l) in ranges {
        let s = s.min(size);
        if s > pos {
            out.push((pos, s - pos));
        }
        pos = pos.max(s.saturating_add(l).min(size));
    }
    if pos < size {
        out.push((pos, size - pos));
    }
    out
}

/// Sort, clip to `lo..hi`, drop empties and merge touching ranges.
fn normalize(mut v: Vec<(u64, u64)>, lo: u64, hi: u64) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, l) in v {
        let start = s.max(lo);
        let end = s.saturating_add(l).min(hi);
        if end <= start {
            continue;
        }
        match out.last_mut() {
            Some((ps, pl)) if *ps + *pl >= start => *pl = (*pl).max(end - *ps),
            _ => out.push((start, end - start)),
        }
    }
    out
}

/// Free byte ranges of one partition (relative to its start), or an error when in doubt.
fn partition_free(file: &File, start: u64, size: u64) -> Result<Vec<(u64, u64)>> {
    let mut head = [0u8; 2048];
    if size < head.len() as u64 {
        bail!("partition too small to hold a filesystem");
    }
    file.read_exact_at(&mut head, start)
        .context("reading the partition's first sectors")?;
    let ext = le16(&head, 1024 + 0x38) == EXT_MAGIC;
    let fat = Fat::parse(&head[..512], size).ok();
    match (ext, fat) {
        // Both signatures (e.g. a stale boot sector): ambiguous, keep everything.
        (true, Some(_)) => bail!("both ext and FAT signatures"),
        (true, None) => Ext::parse(&head[1024..2048], size)?.free(file, start),
        (false, Some(f)) => f.free(file, start),
        (false, None) => bail!("no supported filesystem"),
    }
}

fn le16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Runs of zero bits among the first `nbits` bits of `bitmap` (LSB first), as `(first, count)`.
fn zero_runs(bitmap: &[u8], nbits: u64, mut emit: impl FnMut(u64, u64)) {
    let nbits = nbits.min(bitmap.len() as u64 * 8);
    let mut run_start: Option<u64> = None;
    let mut i = 0u64;
    while i < nbits {
        // Whole zero / whole one words in one step: bitmaps are mostly uniform.
        if i % 64 == 0 && i + 64 <= nbits {
            let at = (i / 8) as usize;
            let mut w = [0u8; 8];
            w.copy_from_slice(&bitmap[at..at + 8]);
            let w = u64::from_le_bytes(w);
            if w == 0 {
                run_start.get_or_insert(i);
                i += 64;
                continue;
            }
            if w == u64::MAX {
                if let Some(s) = run_start.take() {
                    emit(s, i - s);
                }
                i += 64;
                continue;
            }
        }
        let used = bitmap[(i / 8) as usize] >> (i % 8) & 1 == 1;
        if used {
            if let Some(s) = run_start.take() {
                emit(s, i - s);
            }
        } else {
            run_start.get_or_insert(i);
        }
        i += 1;
    }
    if let Some(s) = run_start {
        emit(s, nbits - s);
    }
}

// ---------------------------------------------------------------------------------------------
// ext2/3/4

const EXT_MAGIC: u16 = 0xEF53;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// Incompat features that do not change where metadata lives or how bitmaps read.
/// Left out on purpose: COMPRESSION, JOURNAL_DEV, META_BG (descriptor placement differs).
const INCOMPAT_OK: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_DIRDATA
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const RO_SPARSE_SUPER: u32 = 0x1;
const RO_GDT_CSUM: u32 = 0x10;
const RO_METADATA_CSUM: u32 = 0x400;
/// Read-only-compat features we understand; BIGALLOC (cluster bitmaps) and HAS_SNAPSHOT are
/// left out on purpose.
const RO_OK: u32 = RO_SPARSE_SUPER
    | 0x2 // LARGE_FILE
    | 0x4 // BTREE_DIR
    | 0x8 // HUGE_FILE
    | RO_GDT_CSUM
    | 0x20 // DIR_NLINK
    | 0x40 // EXTRA_ISIZE
    | 0x100 // QUOTA
    | RO_METADATA_CSUM
    | 0x800 // REPLICA
    | 0x1000 // READONLY
    | 0x2000 // PROJECT
    | 0x4000 // SHARED_BLOCKS
    | 0x8000 // VERITY
    | 0x10000; // ORPHAN_PRESENT
const BG_BLOCK_UNINIT: u16 = 0x2;

/// The ext2/3/4 superblock fields that locate block groups and their bitmaps.
#[derive(Debug)]
struct Ext {
    block: u64,
    blocks: u64,
    first_data: u64,
    per_group: u64,
    groups: u64,
    desc_size: u64,
    gdt_blocks: u64,
    reserved_gdt: u64,
    itable_blocks: u64,
    /// bg_flags are meaningful only with group descriptor checksums.
    csum: bool,
    /// Which groups carry superblock backups (ext4_bg_has_super).
    backups: Backups,
    /// How descriptors (and, with metadata_csum, bitmaps) are checksummed.
    sum: ExtSum,
}

/// Where an ext filesystem keeps superblock + GDT backups.
#[derive(Debug)]
enum Backups {
    /// No sparse_super: every group.
    All,
    /// sparse_super: groups 0, 1 and powers of 3, 5 and 7.
    Sparse,
    /// sparse_super2: group 0 and the (up to) two groups named in the superblock.
    Two([u32; 2]),
}

/// Group descriptor checksum flavour of an ext filesystem.
#[derive(Debug)]
enum ExtSum {
    None,
    /// GDT_CSUM: crc16 over uuid, group number and descriptor.
    Crc16 {
        uuid: [u8; 16],
    },
    /// METADATA_CSUM: crc32c seeded from the uuid (or s_checksum_seed).
    Crc32c {
        seed: u32,
    },
}

impl Ext {
    /// Parse and sanity-check the 1024-byte superblock for a partition of `part_size` bytes.
    fn parse(sb: &[u8], part_size: u64) -> Result<Ext> {
        if le16(sb, 0x38) != EXT_MAGIC {
            bail!("no ext superblock magic");
        }
        let state = le16(sb, 0x3A);
        let incompat = le32(sb, 0x60);
        let ro = le32(sb, 0x64);
        // Not cleanly unmounted or a journal to replay: on-disk bitmaps may be stale.
        if state & 1 == 0 || state & 2 != 0 || incompat & INCOMPAT_RECOVER != 0 {
            bail!("ext filesystem not clean");
        }
        if incompat & !INCOMPAT_OK != 0 || ro & !RO_OK != 0 {
            bail!("unsupported ext features");
        }
        let log = le32(sb, 0x18);
        if log > 6 || le32(sb, 0x1C) != log {
            bail!("bad ext block size");
        }
        let block = 1024u64 << log;
        let blocks = u64::from(le32(sb, 0x04))
            | if incompat & INCOMPAT_64BIT != 0 {
                u64::from(le32(sb, 0x150)) << 32
            } else {
                0
            };
        let first_data = u64::from(le32(sb, 0x14));
        let per_group = u64::from(le32(sb, 0x20));
        if first_data != u64::from(block == 1024) {
            bail!("bad ext first data block");
        }
        // mke2fs never makes groups under 256 blocks; the bound also caps the GDT we allocate.
        if per_group < 256
            || per_group % 8 != 0
            || per_group > 8 * block
            || le32(sb, 0x24) != per_group as u32
        {
            bail!("bad ext blocks per group");
        }
        let fits = matches!(blocks.checked_mul(block), Some(b) if b <= part_size);
        if blocks <= first_data + 1 || !fits {
            bail!("ext filesystem does not fit its partition");
        }
        let groups = (blocks - first_data).div_ceil(per_group);
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            u64::from(le16(sb, 0xFE))
        } else {
            32
        };
        if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            bail!("bad ext descriptor size");
        }
        if incompat & INCOMPAT_64BIT != 0 && desc_size < 64 {
            bail!("bad ext descriptor size for 64bit");
        }
        let gdt_blocks = (groups * desc_size).div_ceil(block);
        let reserved_gdt = u64::from(le16(sb, 0xCE));
        let rev = le32(sb, 0x4C);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(le16(sb, 0x58))
        };
        let per_group_inodes = u64::from(le32(sb, 0x28));
        if inode_size < 128 || inode_size > block || !inode_size.is_power_of_two() {
            bail!("bad ext inode size");
        }
        if per_group_inodes == 0 || per_group_inodes > 8 * block {
            bail!("bad ext inodes per group");
        }
        let itable_blocks = (per_group_inodes * inode_size).div_ceil(block);
        if first_data + 1 + gdt_blocks + reserved_gdt > blocks {
            bail!("ext descriptor table does not fit");
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[0x68..0x78]);
        let sum = if ro & RO_METADATA_CSUM != 0 {
            if crc32c(!0, &sb[..0x3FC]) != le32(sb, 0x3FC) {
                bail!("ext superblock checksum mismatch");
            }
            let seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
                le32(sb, 0x270)
            } else {
                crc32c(!0, &uuid)
            };
            ExtSum::Crc32c { seed }
        } else if ro & RO_GDT_CSUM != 0 {
            ExtSum::Crc16 { uuid }
        } else {
            ExtSum::None
        };
        let backups = if le32(sb, 0x5C) & COMPAT_SPARSE_SUPER2 != 0 {
            Backups::Two([le32(sb, 0x24C), le32(sb, 0x250)])
        } else if ro & RO_SPARSE_SUPER != 0 {
            Backups::Sparse
        } else {
            Backups::All
        };
        Ok(Ext {
            backups,
            sum,
            block,
            blocks,
            first_data,
            per_group,
            groups,
            desc_size,
            gdt_blocks,
            reserved_gdt,
            itable_blocks,
            csum: ro & (RO_GDT_CSUM | RO_METADATA_CSUM) != 0,
        })
    }

    /// Free byte ranges relative to the partition start at `base`.
    fn free(&self, file: &File, base: u64) -> Result<Vec<(u64, u64)>> {
        let mut gdt = vec![0u8; (self.groups * self.desc_size) as usize];
        file.read_exact_at(&mut gdt, base + (self.first_data + 1) * self.block)
            .context("reading the ext group descriptors")?;
        let ds = self.desc_size as usize;
        let wide = ds >= 64;
        let hi = |d: &[u8], off: usize| -> u64 {
            if wide {
                u64::from(le32(d, off)) << 32
            } else {
                0
            }
        };
        // Blocks that stay needed whatever the bitmaps say, as (first, count) in fs blocks.
        let mut meta: Vec<(u64, u64)> = Vec::with_capacity(self.groups as usize * 3 + 1);
        meta.push((0, self.first_data + 1 + self.gdt_blocks + self.reserved_gdt));
        let mut free: Vec<(u64, u64)> = Vec::new();
        let mut push_free = |first: u64, count: u64| match free.last_mut() {
            Some((s, c)) if *s + *c == first => *c += count,
            _ => free.push((first, count)),
        };
        let mut bitmap = vec![0u8; self.block as usize];
        for g in 0..self.groups {
            let d = &gdt[g as usize * ds..(g as usize + 1) * ds];
            let block_bitmap = u64::from(le32(d, 0x00)) | hi(d, 0x20);
            let inode_bitmap = u64::from(le32(d, 0x04)) | hi(d, 0x24);
            let inode_table = u64::from(le32(d, 0x08)) | hi(d, 0x28);
            let flags = le16(d, 0x12);
            if !self.desc_ok(g, d) {
                bail!("ext group {g} descriptor checksum mismatch");
            }
            let valid = |b: u64, n: u64| b > self.first_data && b.saturating_add(n) <= self.blocks;
            if !valid(block_bitmap, 1)
                || !valid(inode_bitmap, 1)
                || !valid(inode_table, self.itable_blocks)
            {
                bail!("ext group {g} descriptor points outside the filesystem");
            }
            meta.push((block_bitmap, 1));
            meta.push((inode_bitmap, 1));
            meta.push((inode_table, self.itable_blocks));

            let start = self.first_data + g * self.per_group;
            let count = self.per_group.min(self.blocks - start);
            if self.csum && flags & BG_BLOCK_UNINIT != 0 {
                // No bitmap on disk: like the kernel (ext4_init_block_bitmap), the group's own
                // metadata is used (kept through `meta` below) plus a superblock + GDT backup
                // at its start in the groups that carry one.
                let keep = if self.has_super(g) {
                    1 + self.gdt_blocks + self.reserved_gdt
                } else {
                    0
                };
                if count > keep {
                    push_free(start + keep, count - keep);
                }
                continue;
            }
            file.read_exact_at(&mut bitmap, base + block_bitmap * self.block)
                .with_context(|| format!("reading the block bitmap of ext group {g}"))?;
            if let ExtSum::Crc32c { seed } = self.sum {
                let c = crc32c(seed, &bitmap[..(self.per_group / 8) as usize]);
                let lo = u32::from(le16(d, 0x18));
                let want = if ds >= 0x3C {
                    lo | u32::from(le16(d, 0x38)) << 16
                } else {
                    lo
                };
                let got = if ds >= 0x3C { c } else { c & 0xFFFF };
                if got != want {
                    bail!("ext group {g} block bitmap checksum mismatch");
                }
            }
            let mut zeros = 0u64;
            zero_runs(&bitmap, count, |s, n| {
                zeros += n;
                push_free(start + s, n);
            });
            // A clean filesystem's descriptor agrees with its bitmap; otherwise trust neither.
            let desc_free = u64::from(le16(d, 0x0C))
                | if wide {
                    u64::from(le16(d, 0x2C)) << 16
                } else {
                    0
                };
            if zeros != desc_free {
                bail!("ext group {g}: bitmap and descriptor disagree on free blocks");
            }
        }
        meta.sort_unstable();
        let needed_bytes: Vec<(u64, u64)> = meta
            .into_iter()
            .map(|(s, n)| (s * self.block, n * self.block))
            .collect();
        let free_bytes: Vec<(u64, u64)> = free
            .into_iter()
            .map(|(s, n)| (s * self.block, n * self.block))
            .collect();
        Ok(subtract(&free_bytes, &needed_bytes))
    }
}

impl Ext {
    /// Whether group `g` holds a superblock + GDT backup (the kernel's ext4_bg_has_super).
    fn has_super(&self, g: u64) -> bool {
        let power_of = |base: u64| {
            let mut n = 1u64;
            while n < g {
                n *= base;
            }
            n == g
        };
        match self.backups {
            _ if g == 0 => true,
            Backups::All => true,
            Backups::Two(b) => b.iter().any(|&x| u64::from(x) == g),
            Backups::Sparse => {
                g == 1 || (g % 2 == 1 && (power_of(3) || power_of(5) || power_of(7)))
            }
        }
    }

    /// Whether descriptor `d` of group `g` carries the right checksum (true without checksums).
    fn desc_ok(&self, g: u64, d: &[u8]) -> bool {
        let group = (g as u32).to_le_bytes();
        let stored = le16(d, 0x1E);
        match &self.sum {
            ExtSum::None => true,
            ExtSum::Crc32c { seed } => {
                let c = crc32c(*seed, &group);
                let c = crc32c(c, &d[..0x1E]);
                let c = crc32c(c, &[0, 0]);
                let c = crc32c(c, &d[0x20..]);
                c & 0xFFFF == u32::from(stored)
            }
            ExtSum::Crc16 { uuid } => {
                let c = crc16(0xFFFF, uuid);
                let c = crc16(c, &group);
                let c = crc16(c, &d[..0x1E]);
                // Only 64bit filesystems checksum the descriptor's upper half.
                let c = if d.len() > 32 {
                    crc16(c, &d[0x20..])
                } else {
                    c
                };
                c == stored
            }
        }
    }
}

/// CRC-32C (Castagnoli) as ext4 uses it: no pre/post inversion beyond the caller's seed.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ crc >> 8;
    }
    crc
}

/// Byte-wise lookup table for [`crc32c`] (bitmaps are checksummed per group: keep it fast).
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                c >> 1 ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-16 (poly 0x8005, reflected) as ext4's GDT_CSUM uses it.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// `a` minus `b`; `a` sorted non-overlapping, `b` sorted by start (may overlap).
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0usize;
    for &(s, l) in a {
        let end = s + l;
        let mut pos = s;
        // Skip cuts that end before this range.
        while j < b.len() && b[j].0 + b[j].1 <= pos {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < end {
            let (cs, cl) = b[k];
            if cs > pos {
                out.push((pos, cs - pos));
            }
            pos = pos.max(cs + cl);
            k += 1;
        }
        if pos < end {
            out.push((pos, end - pos));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// FAT12/16/32

/// Geometry from a FAT boot sector (BPB).
#[derive(Debug)]
struct Fat {
    sector: u64,
    cluster: u64,
    reserved: u64,
    fats: u64,
    fat_bytes: u64,
    data_start: u64,
    clusters: u64,
    bits: u32,
    media: u8,
    root_cluster: u64,
}

impl Fat {
    /// Parse and sanity-check a boot sector for a partition of `part_size` bytes.
    fn parse(bs: &[u8], part_size: u64) -> Result<Fat> {
        if bs.len() < 512 || bs[510..512] != [0x55, 0xAA] || !matches!(bs[0], 0xEB | 0xE9) {
            bail!("no FAT boot sector");
        }
        let sector = u64::from(le16(bs, 0x0B));
        let spc = u64::from(bs[0x0D]);
        let reserved = u64::from(le16(bs, 0x0E));
        let fats = u64::from(bs[0x10]);
        let root_entries = u64::from(le16(bs, 0x11));
        let media = bs[0x15];
        let total = match le16(bs, 0x13) {
            0 => u64::from(le32(bs, 0x20)),
            n => u64::from(n),
        };
        let fat16_size = u64::from(le16(bs, 0x16));
        let fat_sectors = match fat16_size {
            0 => u64::from(le32(bs, 0x24)),
            n => n,
        };
        if !(512..=4096).contains(&sector) || !sector.is_power_of_two() {
            bail!("bad FAT sector size");
        }
        if spc == 0 || !spc.is_power_of_two() || reserved == 0 || !(1..=2).contains(&fats) {
            bail!("bad FAT geometry");
        }
        if media != 0xF0 && media < 0xF8 {
            bail!("bad FAT media byte");
        }
        if total == 0 || fat_sectors == 0 || total * sector > part_size {
            bail!("FAT does not fit its partition");
        }
        let root_sectors = (root_entries * 32).div_ceil(sector);
        let data_sector = reserved + fats * fat_sectors + root_sectors;
        if data_sector >= total {
            bail!("FAT has no data area");
        }
        let clusters = (total - data_sector) / spc;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        let fat32 = bits == 32;
        if clusters == 0 || fat32 != (fat16_size == 0) || fat32 != (root_entries == 0) {
            bail!("inconsistent FAT type");
        }
        let fat_bytes = fat_sectors * sector;
        if (clusters + 2) * u64::from(bits) > fat_bytes * 8 {
            bail!("FAT too small for its clusters");
        }
        let root_cluster = if fat32 { u64::from(le32(bs, 0x2C)) } else { 0 };
        if fat32 && !(2..clusters + 2).contains(&root_cluster) {
            bail!("bad FAT32 root cluster");
        }
        Ok(Fat {
            sector,
            cluster: spc * sector,
            reserved,
            fats,
            fat_bytes,
            data_start: data_sector * sector,
            clusters,
            bits,
            media,
            root_cluster,
        })
    }

    /// Entry `n` of a FAT table.
    fn entry(&self, fat: &[u8], n: u64) -> u32 {
        match self.bits {
            12 => {
                let off = (n + n / 2) as usize;
                // Bytes past the table read as "used" (never happens after the size check).
                let byte = |i: usize| u32::from(fat.get(i).copied().unwrap_or(0xFF));
                let v = byte(off) | byte(off + 1) << 8;
                if n % 2 == 0 {
                    v & 0xFFF
                } else {
                    v >> 4
                }
            }
            16 => u32::from(le16(fat, (n * 2) as usize)),
            _ => le32(fat, (n * 4) as usize) & 0x0FFF_FFFF,
        }
    }

    /// Free byte ranges relative to the partition start at `base`: clusters free in every FAT.
    fn free(&self, file: &File, base: u64) -> Result<Vec<(u64, u64)>> {
        let mut used = vec![false; self.clusters as usize];
        // Only the entries of existing clusters matter; a FAT may be larger than that.
        let want = ((self.clusters + 2) * u64::from(self.bits)).div_ceil(8);
        let mut table = vec![0u8; want as usize];
        for i in 0..self.fats {
            let at = base + (self.reserved + i * (self.fat_bytes / self.sector)) * self.sector;
            file.read_exact_at(&mut table, at)
                .context("reading a FAT")?;
            if table[0] != self.media {
                bail!("FAT {i} does not start with the media byte");
            }
            for (c, u) in used.iter_mut().enumerate() {
                *u |= self.entry(&table, c as u64 + 2) != 0;
            }
        }
        if self.bits == 32 && !used[(self.root_cluster - 2) as usize] {
            bail!("FAT32 root directory cluster is marked free");
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (c, u) in used.iter().enumerate() {
            if *u {
                continue;
            }
            let start = self.data_start + c as u64 * self.cluster;
            match out.last_mut() {
                Some((s, l)) if *s + *l == start => *l += self.cluster,
                _ => out.push((start, self.cluster)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_reference_values() {
        // Standard check values: CRC-32C("123456789") = 0xE3069283, CRC-16/ARC = 0xBB3D.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }

    #[test]
    fn zero_runs_finds_runs() {
        let mut bm = vec![0u8; 32];
        bm[0] = 0b0000_0101; // bits 0, 2 used
        bm[9] = 0xFF; // bits 72..80 used
        let mut runs = Vec::new();
        zero_runs(&bm, 200, |s, n| runs.push((s, n)));
        assert_eq!(runs, vec![(1, 1), (3, 69), (80, 120)]);
        runs.clear();
        zero_runs(&[0xFF; 8], 64, |s, n| runs.push((s, n)));
        assert!(runs.is_empty());
        runs.clear();
        zero_runs(&[0; 2], 100, |s, n| runs.push((s, n)));
        assert_eq!(runs, vec![(0, 16)]);
    }

    #[test]
    fn subtract_and_complement() {
        let a = [(0, 10), (20, 10), (40, 5)];
        let b = [(5, 2), (6, 20), (41, 1), (44, 10)];
        assert_eq!(subtract(&a, &b), vec![(0, 5), (26, 4), (40, 1), (42, 2)]);
        assert_eq!(complement(&[(0, 5), (26, 4)], 40), vec![(5, 21), (30, 10)]);
        assert_eq!(complement(&[], 7), vec![(0, 7)]);
        assert_eq!(complement(&[(0, 7)], 7), vec![]);
    }

    #[test]
    fn normalize_merges_and_clips() {
        let v = vec![(30, 10), (0, 10), (5, 10), (15, 0), (38, 100)];
        assert_eq!(normalize(v, 2, 100), vec![(2, 13), (30, 70)]);
    }
}
