//! FAT12/16/32: free clusters from the first FAT.

use super::*;

/// Geometry from a FAT boot sector (BPB).
#[derive(Debug)]
pub(super) struct Fat {
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
    pub(super) fn parse(bs: &[u8], part_size: u64) -> Result<Fat> {
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
                if n.is_multiple_of(2) {
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
    pub(super) fn free(&self, file: &File, base: u64) -> Result<Vec<(u64, u64)>> {
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
