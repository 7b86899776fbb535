//! Writing a planned FAT32 volume: boot sector, FSInfo, both FATs, directories and file data,
//! leaving all-zero regions as holes.

use super::*;

impl FatImage {
    /// Write the volume at `offset` in `out`; all-zero regions are left as holes.
    ///
    /// `out` is extended to `offset + size()` if shorter; the regions not written must read as
    /// zeros (a fresh file sized with `set_len`).
    pub fn write_at(&self, out: &File, offset: u64) -> Result<()> {
        // Check every input first, so a changed file fails before anything is written.
        for f in &self.files {
            if let FileData::Path(p) = &f.data {
                let len = std::fs::metadata(p)
                    .with_context(|| {
                        format!("reading metadata of {} (FAT file {})", p.display(), f.path)
                    })?
                    .len();
                if len != f.size {
                    bail!(
                        "{} (FAT file {}) changed size from {} to {len} bytes while building the image",
                        p.display(),
                        f.path,
                        f.size
                    );
                }
            }
        }
        let end = offset + self.size();
        let cur = out
            .metadata()
            .context("reading the output's metadata before writing the FAT")?
            .len();
        if cur < end {
            out.set_len(end)
                .context("extending the output for the FAT volume")?;
        }

        let mut reserved = vec![0u8; (RESERVED_SECTORS * SECTOR) as usize];
        let boot = self.boot_sector();
        let info = self.fs_info();
        for (sector, data) in [(0usize, &boot), (1, &info), (6, &boot), (7, &info)] {
            reserved[sector * 512..sector * 512 + 512].copy_from_slice(&data[..]);
        }
        out.write_all_at(&reserved, offset)
            .context("writing the FAT boot sectors")?;

        let fat = self.fat_table();
        for i in 0..NUM_FATS {
            let at = offset + (RESERVED_SECTORS + i * u64::from(self.fat_sectors)) * SECTOR;
            out.write_all_at(&fat, at)
                .with_context(|| format!("writing FAT #{}", i + 1))?;
        }

        let cs = self.cluster_size();
        for d in &self.dirs {
            let mut buf = d.entries.clone();
            buf.resize((u64::from(d.clusters) * cs) as usize, 0);
            out.write_all_at(&buf, offset + self.cluster_offset(d.cluster))
                .context("writing a FAT directory")?;
        }

        let mut buf = vec![0u8; CHUNK];
        for f in &self.files {
            if f.size == 0 {
                continue;
            }
            let at = offset + self.cluster_offset(f.cluster);
            match &f.data {
                FileData::Bytes(b) => write_skipping_zeros(out, b, at)
                    .with_context(|| format!("writing FAT file {}", f.path))?,
                FileData::Path(p) => self.copy_path(out, p, f, at, &mut buf)?,
            }
        }
        Ok(())
    }

    /// Stream a file from disk into its clusters, checking it did not change since `new`.
    fn copy_path(
        &self,
        out: &File,
        p: &std::path::Path,
        f: &PlacedFile,
        at: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let mut src = File::open(p)
            .with_context(|| format!("opening {} for FAT file {}", p.display(), f.path))?;
        let len = src
            .metadata()
            .with_context(|| format!("reading metadata of {}", p.display()))?
            .len();
        if len != f.size {
            bail!(
                "{} (FAT file {}) changed size from {} to {len} bytes while building the image",
                p.display(),
                f.path,
                f.size
            );
        }
        let mut done: u64 = 0;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = src
                    .read(&mut buf[filled..])
                    .with_context(|| format!("reading {} for FAT file {}", p.display(), f.path))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            if done + filled as u64 > f.size {
                bail!(
                    "{} (FAT file {}) grew while building the image",
                    p.display(),
                    f.path
                );
            }
            write_skipping_zeros(out, &buf[..filled], at + done)
                .with_context(|| format!("writing FAT file {} from {}", f.path, p.display()))?;
            done += filled as u64;
        }
        if done != f.size {
            bail!(
                "{} (FAT file {}) shrank to {done} bytes (expected {}) while building the image",
                p.display(),
                f.path,
                f.size
            );
        }
        Ok(())
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        let data = RESERVED_SECTORS + NUM_FATS * u64::from(self.fat_sectors);
        (data + u64::from(cluster - 2) * u64::from(self.sectors_per_cluster)) * SECTOR
    }

    /// The FAT: entries 0 and 1 reserved, then one contiguous chain per directory and file.
    fn fat_table(&self) -> Vec<u8> {
        let n = 2 + self.used_clusters as usize;
        let mut fat = vec![0u32; n];
        fat[0] = 0x0FFF_FF00 | 0xF8;
        fat[1] = EOC;
        let mut chain = |first: u32, len: u32| {
            for c in first..first + len {
                fat[c as usize] = if c + 1 == first + len { EOC } else { c + 1 };
            }
        };
        for d in &self.dirs {
            chain(d.cluster, d.clusters);
        }
        let cs = self.cluster_size();
        for f in &self.files {
            if f.size > 0 {
                chain(f.cluster, f.size.div_ceil(cs) as u32);
            }
        }
        let mut bytes: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
        bytes.resize(bytes.len().next_multiple_of(SECTOR as usize), 0);
        bytes
    }

    fn boot_sector(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
        b[3..11].copy_from_slice(b"MSWIN4.1");
        b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
        b[13] = self.sectors_per_cluster as u8;
        b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
        b[16] = NUM_FATS as u8;
        // Root entries, 16-bit total sectors, 16-bit FAT size: 0 on FAT32.
        b[21] = 0xF8;
        b[24..26].copy_from_slice(&63u16.to_le_bytes());
        b[26..28].copy_from_slice(&255u16.to_le_bytes());
        b[28..32].copy_from_slice(&self.hidden_sectors.to_le_bytes());
        b[32..36].copy_from_slice(&self.total_sectors.to_le_bytes());
        b[36..40].copy_from_slice(&self.fat_sectors.to_le_bytes());
        // Flags 0 (FATs mirrored), version 0.0.
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[48..50].copy_from_slice(&1u16.to_le_bytes());
        b[50..52].copy_from_slice(&6u16.to_le_bytes());
        b[64] = 0x80;
        b[66] = 0x29;
        b[67..71].copy_from_slice(&self.volume_id.to_le_bytes());
        b[71..82].copy_from_slice(&self.label);
        b[82..90].copy_from_slice(b"FAT32   ");
        // Boot code: an endless loop (`jmp $`) for firmware that tries to run it.
        b[90..92].copy_from_slice(&[0xEB, 0xFE]);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    fn fs_info(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
        b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
        let free = self.cluster_count - self.used_clusters;
        b[488..492].copy_from_slice(&free.to_le_bytes());
        let next_free = if free > 0 {
            2 + self.used_clusters
        } else {
            0xFFFF_FFFF
        };
        b[492..496].copy_from_slice(&next_free.to_le_bytes());
        b[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
        b
    }
}

/// Write `data` at `at`, leaving 64 KiB blocks that are all zeros unwritten.
fn write_skipping_zeros(out: &File, data: &[u8], at: u64) -> std::io::Result<()> {
    let mut start = 0;
    let mut run: Option<usize> = None;
    while start < data.len() {
        let end = (start + ZERO_BLOCK).min(data.len());
        // A slice compare is a memcmp: vectorised, and it stops at the first non-zero byte.
        let zero = data[start..end] == ZEROS[..end - start];
        match (zero, run) {
            (true, Some(r)) => {
                out.write_all_at(&data[r..start], at + r as u64)?;
                run = None;
            }
            (false, None) => run = Some(start),
            _ => {}
        }
        start = end;
    }
    if let Some(r) = run {
        out.write_all_at(&data[r..], at + r as u64)?;
    }
    Ok(())
}
