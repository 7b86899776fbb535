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

mod ext;
mod fat;

use ext::{Ext, EXT_MAGIC};
use fat::Fat;

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

pub(super) fn le16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

pub(super) fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Runs of zero bits among the first `nbits` bits of `bitmap` (LSB first), as `(first, count)`.
pub(super) fn zero_runs(bitmap: &[u8], nbits: u64, mut emit: impl FnMut(u64, u64)) {
    let nbits = nbits.min(bitmap.len() as u64 * 8);
    let mut run_start: Option<u64> = None;
    let mut i = 0u64;
    while i < nbits {
        // Whole zero / whole one words in one step: bitmaps are mostly uniform.
        if i.is_multiple_of(64) && i + 64 <= nbits {
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

/// `a` minus `b`; `a` sorted non-overlapping, `b` sorted by start (may overlap).
pub(super) fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
