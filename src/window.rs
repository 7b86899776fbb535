//! A byte window over part of a file (a partition, a whole disk), as `Read + Write + Seek`, so
//! crates that want a stream (fatfs, mbrman, gptman) can work on a partition in place.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// `len` bytes of `file` from `start`, with its own position; writes only when made writable.
pub struct FileWindow<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
    writable: bool,
}

impl<'a> FileWindow<'a> {
    /// A window that refuses writes.
    pub fn read_only(file: &'a File, start: u64, len: u64) -> Self {
        FileWindow {
            file,
            start,
            len,
            pos: 0,
            writable: false,
        }
    }

    /// A window that also writes (never past its end).
    pub fn read_write(file: &'a File, start: u64, len: u64) -> Self {
        FileWindow {
            writable: true,
            ..Self::read_only(file, start, len)
        }
    }
}

impl Read for FileWindow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for FileWindow<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "opened read-only",
            ));
        }
        if self.pos.saturating_add(buf.len() as u64) > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write beyond the end of the window",
            ));
        }
        self.file.write_all_at(buf, self.start + self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for FileWindow<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_stay_inside_their_range() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        let mut w = FileWindow::read_only(&f, 2, 5);
        let mut s = String::new();
        w.read_to_string(&mut s).unwrap();
        assert_eq!(s, "23456");
        assert!(w.write(b"x").is_err());
        let mut w = FileWindow::read_write(&f, 2, 5);
        w.seek(SeekFrom::End(-1)).unwrap();
        w.write_all(b"X").unwrap();
        assert!(w.write(b"Y").is_err());
        let mut all = String::new();
        let mut r = FileWindow::read_only(&f, 0, 10);
        r.read_to_string(&mut all).unwrap();
        assert_eq!(all, "012345X789");
    }
}
