//! Read an existing FAT12/16/32 volume (a base image's boot partition) with fatfs 0.3.6.

use super::{BaseFat, FatFile, FileData};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A read-only window `base..base+len` of a file; writes are refused.
///
/// fatfs reads one cluster (often 512 bytes on Pi boot FATs) and one FAT entry at a time; a few
/// cached 128 KiB blocks turn that into large reads.
struct Window<'a> {
    file: &'a File,
    base: u64,
    len: u64,
    pos: u64,
    /// Most recently used first: (block index, bytes; shorter at the end of the window/file).
    cache: Vec<(u64, Vec<u8>)>,
}

const BLOCK: u64 = 128 << 10;
const CACHED_BLOCKS: usize = 4;

impl Window<'_> {
    fn block(&mut self, idx: u64) -> io::Result<&[u8]> {
        if let Some(i) = self.cache.iter().position(|(b, _)| *b == idx) {
            let hit = self.cache.remove(i);
            self.cache.insert(0, hit);
        } else {
            let start = idx * BLOCK;
            let want = BLOCK.min(self.len - start) as usize;
            let mut data = if self.cache.len() >= CACHED_BLOCKS {
                self.cache.pop().map(|(_, d)| d).unwrap_or_default()
            } else {
                Vec::new()
            };
            data.resize(want, 0);
            let mut got = 0;
            while got < want {
                let n = self
                    .file
                    .read_at(&mut data[got..], self.base + start + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            data.truncate(got);
            self.cache.insert(0, (idx, data));
        }
        Ok(&self.cache[0].1)
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        if n as u64 >= BLOCK {
            let got = self.file.read_at(&mut buf[..n], self.base + self.pos)?;
            self.pos += got as u64;
            return Ok(got);
        }
        let (idx, within) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let block = self.block(idx)?;
        let avail = block.len().saturating_sub(within).min(n);
        buf[..avail].copy_from_slice(&block[within..within + avail]);
        self.pos += avail as u64;
        Ok(avail)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the base FAT is read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        match target {
            Some(t) if t <= self.len => {
                self.pos = t;
                Ok(t)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the FAT volume",
            )),
        }
    }
}

/// Deepest directory nesting accepted (guards against directory cycles in corrupt volumes).
const MAX_DEPTH: usize = 64;
/// Most entries read from one directory (FAT's own limit; guards against cluster-chain loops).
const MAX_ENTRIES: usize = 65536;
/// Most entries read from the whole volume (guards against directories that contain themselves).
const MAX_TOTAL_ENTRIES: usize = 1 << 20;

/// What is left to read before the volume is declared corrupt.
struct Budget {
    bytes: u64,
    entries: usize,
}

/// Read every file of the FAT volume at `offset..offset+len` in `file`.
///
/// Returns files sorted by path, the BPB label with trailing spaces trimmed and the volume id.
/// Never panics on a corrupt volume: fatfs panics are caught and reported as errors.
pub fn read_fat(file: &File, offset: u64, len: u64) -> Result<BaseFat> {
    match catch_unwind(AssertUnwindSafe(|| read_inner(file, offset, len))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow!(
                "reading the FAT volume at byte {offset} (length {len}): the volume is corrupt (fatfs panicked: {msg})"
            ))
        }
    }
}

fn read_inner(file: &File, offset: u64, len: u64) -> Result<BaseFat> {
    let disk = Window {
        file,
        base: offset,
        len,
        pos: 0,
        cache: Vec::new(),
    };
    let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new()).with_context(|| {
        format!("opening the FAT volume at byte {offset} (length {len}): bad boot sector")
    })?;
    let label = fs.volume_label().trim().to_string();
    let volume_id = fs.volume_id();
    let mut files = Vec::new();
    let mut budget = Budget {
        bytes: len,
        entries: MAX_TOTAL_ENTRIES,
    };
    walk(&fs.root_dir(), "", 0, &mut files, &mut budget)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(BaseFat {
        label,
        volume_id,
        files,
    })
}

fn walk<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<T>,
    prefix: &str,
    depth: usize,
    out: &mut Vec<FatFile>,
    budget: &mut Budget,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("reading the FAT volume: directories nested deeper than {MAX_DEPTH} at /{prefix} (corrupt volume?)");
    }
    let shown = if prefix.is_empty() { "/" } else { prefix };
    for (n, entry) in dir.iter().enumerate() {
        if n >= MAX_ENTRIES {
            bail!(
                "reading FAT directory {shown}: more than {MAX_ENTRIES} entries (corrupt volume?)"
            );
        }
        if budget.entries == 0 {
            bail!(
                "reading the FAT volume: more than {MAX_TOTAL_ENTRIES} entries (corrupt volume?)"
            );
        }
        budget.entries -= 1;
        let entry = entry.with_context(|| format!("reading FAT directory {shown}"))?;
        let name = entry.file_name();
        if name == "."
            || name == ".."
            || entry
                .attributes()
                .contains(fatfs::FileAttributes::VOLUME_ID)
        {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if entry.is_dir() {
            walk(&entry.to_dir(), &path, depth + 1, out, budget)?;
        } else {
            let size = entry.len();
            if size > budget.bytes {
                bail!("reading FAT file {path}: {size} bytes do not fit in what is left of the volume (corrupt volume?)");
            }
            // Capacity capped: a corrupt entry's size is not trusted for one allocation.
            let mut data = Vec::with_capacity(size.min(64 << 20) as usize);
            entry
                .to_file()
                .take(size)
                .read_to_end(&mut data)
                .with_context(|| format!("reading FAT file {path}"))?;
            if data.len() as u64 != size {
                bail!(
                    "reading FAT file {path}: got {} of {size} bytes (corrupt volume?)",
                    data.len()
                );
            }
            budget.bytes -= size;
            out.push(FatFile {
                path,
                data: FileData::Bytes(data),
            });
        }
    }
    Ok(())
}
