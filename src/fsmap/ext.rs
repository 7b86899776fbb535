//! ext2/3/4: free blocks from the block bitmaps, with the group descriptors' checksums checked.

use super::*;

pub(super) const EXT_MAGIC: u16 = 0xEF53;
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
pub(super) struct Ext {
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
pub(super) enum Backups {
    /// No sparse_super: every group.
    All,
    /// sparse_super: groups 0, 1 and powers of 3, 5 and 7.
    Sparse,
    /// sparse_super2: group 0 and the (up to) two groups named in the superblock.
    Two([u32; 2]),
}

/// Group descriptor checksum flavour of an ext filesystem.
#[derive(Debug)]
pub(super) enum ExtSum {
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
    pub(super) fn parse(sb: &[u8], part_size: u64) -> Result<Ext> {
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
    pub(super) fn free(&self, file: &File, base: u64) -> Result<Vec<(u64, u64)>> {
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
pub(super) fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
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
pub(super) fn crc16(mut crc: u16, data: &[u8]) -> u16 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_reference_values() {
        // Standard check values: CRC-32C("123456789") = 0xE3069283, CRC-16/ARC = 0xBB3D.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
