//! Sparse-aware copying: SEEK_DATA/SEEK_HOLE + copy_file_range so holes stay holes.
//!
//! Note: SEEK_DATA/SEEK_HOLE move the file descriptor's offset; use positional I/O on these files.

use anyhow::{bail, Context, Result};
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// Chunk used by the pread/pwrite fallback and for progress granularity.
const CHUNK: u64 = 4 << 20;
/// Block size for zero detection in `SparseWriter`.
pub const BLOCK: usize = 4096;

/// Copy `len` bytes from `src` at `src_off` to `dst` at `dst_off`, skipping holes in `src`.
/// `progress` is called with the number of bytes handled so far.
///
/// Holes of `src` are not written: `dst` must read as zeros there (a fresh file pre-sized
/// with `set_len`). `src` must hold at least `src_off + len` bytes.
pub fn copy_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let src_len = crate::disk::size_of(src).context("sparse copy: size of the source")?;
    let end = src_off
        .checked_add(len)
        .context("sparse copy: range overflows")?;
    if end > src_len {
        bail!("sparse copy: source has {src_len} bytes, range {src_off}..{end} goes beyond it");
    }
    let mut use_cfr = true;
    for (start, n) in data_ranges(src, src_off, len)? {
        let mut done = 0;
        while done < n {
            let step = (n - done).min(16 * CHUNK);
            let s = start + done;
            let d = dst_off + (s - src_off);
            if use_cfr {
                match cfr_all(src, s, dst, d, step) {
                    Ok(()) => {}
                    Err(CfrError::Unsupported(copied)) => {
                        // Cross-filesystem or a kernel/fs without support: plain reads and writes.
                        use_cfr = false;
                        rw_copy(src, s + copied, dst, d + copied, step - copied)?;
                    }
                    Err(CfrError::Io(e)) => {
                        return Err(e).context(format!(
                            "sparse copy: copy_file_range of {step} bytes at source offset {s}"
                        ))
                    }
                }
            } else {
                rw_copy(src, s, dst, d, step)?;
            }
            done += step;
            progress(s + step - src_off);
        }
    }
    progress(len);
    Ok(())
}

enum CfrError {
    /// copy_file_range is not usable here; the count is what was already copied.
    Unsupported(u64),
    Io(io::Error),
}

fn cfr_all(src: &File, s: u64, dst: &File, d: u64, n: u64) -> Result<(), CfrError> {
    let mut off_in = s;
    let mut off_out = d;
    let mut copied = 0u64;
    while copied < n {
        let want = (n - copied).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => {
                return Err(CfrError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended early",
                )))
            }
            Ok(k) => copied += k as u64,
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP | Errno::PERM) => {
                return Err(CfrError::Unsupported(copied))
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(CfrError::Io(e.into())),
        }
    }
    Ok(())
}

fn rw_copy(src: &File, s: u64, dst: &File, d: u64, n: u64) -> Result<()> {
    let mut buf = vec![0u8; CHUNK.min(n) as usize];
    let mut done = 0u64;
    while done < n {
        let k = (n - done).min(CHUNK) as usize;
        src.read_exact_at(&mut buf[..k], s + done)
            .with_context(|| {
                format!(
                    "sparse copy: reading {k} bytes at source offset {}",
                    s + done
                )
            })?;
        dst.write_all_at(&buf[..k], d + done).with_context(|| {
            format!(
                "sparse copy: writing {k} bytes at destination offset {}",
                d + done
            )
        })?;
        done += k as u64;
    }
    Ok(())
}

/// Data (non-hole) ranges of `file` within `off..off+len`, as (start, length).
pub fn data_ranges(file: &File, off: u64, len: u64) -> Result<Vec<(u64, u64)>> {
    let end = off
        .checked_add(len)
        .context("data ranges: range overflows")?;
    let mut out = Vec::new();
    let mut pos = off;
    while pos < end {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data after `pos`: the rest is a hole.
            Err(Errno::NXIO) => break,
            // The filesystem cannot tell: treat everything as data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                out.push((pos, end - pos));
                break;
            }
            Err(e) => return Err(io::Error::from(e)).context("data ranges: SEEK_DATA"),
        };
        if data >= end {
            break;
        }
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h,
            Err(Errno::NXIO) => end,
            Err(e) => return Err(io::Error::from(e)).context("data ranges: SEEK_HOLE"),
        };
        let stop = hole.min(end);
        if stop <= data {
            // Should not happen; avoid looping forever on a confused filesystem.
            out.push((data, end - data));
            break;
        }
        out.push((data, stop - data));
        pos = stop;
    }
    Ok(out)
}

/// A sequential writer that leaves all-zero 4 KiB blocks as holes.
///
/// The file must start empty (fresh or truncated); `finish` sets the final length so trailing
/// zeros also become a hole.
pub struct SparseWriter {
    file: File,
    pos: u64,
    buf: Vec<u8>,
    cap: usize,
}

impl SparseWriter {
    /// Wrap an empty, writable `file`.
    pub fn new(file: File) -> Self {
        let cap = 1 << 20;
        SparseWriter {
            file,
            pos: 0,
            buf: Vec::with_capacity(cap),
            cap,
        }
    }

    /// Bytes accepted so far (the logical length).
    pub fn position(&self) -> u64 {
        self.pos + self.buf.len() as u64
    }

    /// Advance to `pos` (≥ the current position) leaving zeros (a hole) in between.
    pub fn skip_to(&mut self, pos: u64) -> io::Result<()> {
        let cur = self.position();
        if pos < cur {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SparseWriter cannot move backwards",
            ));
        }
        self.flush_buf()?;
        self.pos = pos;
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let res = write_nonzero_blocks(&self.file, self.pos, &buf);
        self.pos += buf.len() as u64;
        self.buf = buf;
        self.buf.clear();
        res
    }

    /// Flush, set the file length to the logical length and return the file and that length.
    pub fn finish(mut self) -> io::Result<(File, u64)> {
        self.flush_buf()?;
        self.file.set_len(self.pos)?;
        Ok((self.file, self.pos))
    }
}

/// Write the non-zero 4 KiB blocks of `data` at `off`, merging neighbours into one write.
fn write_nonzero_blocks(file: &File, off: u64, data: &[u8]) -> io::Result<()> {
    let mut run: Option<usize> = None;
    let mut i = 0;
    while i < data.len() {
        let j = (i + BLOCK).min(data.len());
        let zero = is_zero(&data[i..j]);
        match (zero, run) {
            (false, None) => run = Some(i),
            (true, Some(s)) => {
                file.write_all_at(&data[s..i], off + s as u64)?;
                run = None;
            }
            _ => {}
        }
        i = j;
    }
    if let Some(s) = run {
        file.write_all_at(&data[s..], off + s as u64)?;
    }
    Ok(())
}

/// True when every byte is zero (an OR-fold, which the compiler vectorises).
pub fn is_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |acc, &x| acc | x) == 0
}

impl Write for SparseWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.cap - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.cap {
            self.flush_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        // Data is only complete on `finish`; flushing mid-block would break block alignment.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4096]));
        let mut b = [0u8; 4097];
        b[4096] = 1;
        assert!(!is_zero(&b));
        b[4096] = 0;
        b[13] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }

    #[test]
    fn sparse_writer_leaves_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        let f = File::create(&p).unwrap();
        let mut w = SparseWriter::new(f);
        let mut data = vec![0u8; 8 << 20];
        data[5000] = 7;
        data[(6 << 20) + 1] = 9;
        w.write_all(&data).unwrap();
        w.write_all(&[0u8; 100]).unwrap();
        let (_f, n) = w.finish().unwrap();
        assert_eq!(n, (8 << 20) + 100);
        let back = std::fs::read(&p).unwrap();
        assert_eq!(back.len() as u64, n);
        assert_eq!(&back[..8 << 20], &data[..]);
        let blocks = std::fs::metadata(&p).unwrap().blocks();
        assert!(blocks * 512 <= 64 * 1024, "{blocks} blocks allocated");
    }
}
