//! A disk opened alike whether it is a regular image file or a block device: its size, positional
//! reads and writes, sync, and dropping the page cache so a read-back reads the medium.
//!
//! The size of a block device is not its `st_size` (that is 0 for device nodes, stat(2)); it is
//! where `lseek(fd, 0, SEEK_END)` lands, the same number the `BLKGETSIZE64` ioctl and
//! `blockdev --getsize64` report (Linux `block/fops.c`: block devices seek relative to the
//! device's size). Every size that may be a device's comes from [`size_of`].
//! Rules and sources: docs/block-devices.md.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `BLKFLSBUF` (`_IO(0x12, 97)`, linux/fs.h): write back and drop a block device's buffer cache.
const BLKFLSBUF: u64 = 0x1261;
/// `BLKRRPART` (`_IO(0x12, 95)`, linux/fs.h): re-read the partition table.
const BLKRRPART: u64 = 0x125f;

/// Test-only seam, documented in README "Tests": `OFFSET` (during the image write) or
/// `seed:OFFSET` (during `flash --node`'s seed write): after the byte at OFFSET was written and
/// synced, and before it is read back, flip it on the medium (see [`Disk::corrupt_for_test`]).
pub const CORRUPT_ENV: &str = "NODEFORGE_TEST_CORRUPT_AFTER_WRITE";

/// Size in bytes of an open regular file or block device.
///
/// Regular files: `st_size`. Block devices: seek to the end (their `st_size` is 0). Anything
/// else is an error.
pub fn size_of(file: &File) -> std::io::Result<u64> {
    let m = file.metadata()?;
    if m.file_type().is_block_device() {
        rustix::fs::seek(file, rustix::fs::SeekFrom::End(0)).map_err(std::io::Error::from)
    } else {
        Ok(m.len())
    }
}

/// An open image file or block device.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    device: bool,
    size: u64,
}

impl Disk {
    /// Open `path` read-only.
    pub fn open(path: &Path) -> Result<Disk> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Disk::from_file(f, path)
    }

    /// Open an existing `path` for reading and writing. `exclusive` adds `O_EXCL`, which on a
    /// block device fails with EBUSY while anything else holds it exclusively (a mounted
    /// filesystem, device-mapper, another exclusive writer) and keeps them out while it is open
    /// (open(2)); on a regular file without `O_CREAT` it has no effect.
    pub fn open_rw(path: &Path, exclusive: bool) -> Result<Disk> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if exclusive {
            o.custom_flags(libc::O_EXCL);
        }
        let f = o.open(path).with_context(|| {
            format!(
                "opening {} for writing{}",
                path.display(),
                if exclusive {
                    " (exclusively: is it mounted or in use?)"
                } else {
                    ""
                }
            )
        })?;
        Disk::from_file(f, path)
    }

    /// Wrap an already open file; `path` names it in messages.
    pub fn from_file(file: File, path: &Path) -> Result<Disk> {
        let m = file
            .metadata()
            .with_context(|| format!("reading the metadata of {}", path.display()))?;
        let device = m.file_type().is_block_device();
        if !device && !m.file_type().is_file() {
            anyhow::bail!(
                "{} is neither a regular file nor a block device",
                path.display()
            );
        }
        let size =
            size_of(&file).with_context(|| format!("reading the size of {}", path.display()))?;
        Ok(Disk {
            file,
            path: path.to_path_buf(),
            device,
            size,
        })
    }

    /// The open file (for positional I/O by callers that take a `&File`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes: a device's capacity (read at open), a file's current length.
    pub fn size(&self) -> u64 {
        if self.device {
            return self.size;
        }
        self.file.metadata().map_or(self.size, |m| m.len())
    }

    /// Whether this is a block device.
    pub fn is_device(&self) -> bool {
        self.device
    }

    /// Read exactly `buf.len()` bytes at `off`.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .with_context(|| format!("reading {} at offset {off}", self.path.display()))
    }

    /// Write all of `buf` at `off`.
    pub fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.file
            .write_all_at(buf, off)
            .with_context(|| format!("writing {} at offset {off}", self.path.display()))
    }

    /// Flush written data to the medium (fdatasync).
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fdatasync(&self.file)
            .with_context(|| format!("syncing {}", self.path.display()))
    }

    /// Drop the cached pages of `off..off+len` (clean pages only: [`Disk::sync`] first) so the
    /// next read of that span reads the medium. Block devices also get `BLKFLSBUF`, which writes
    /// back and invalidates the whole device's cache (needs CAP_SYS_ADMIN; best effort).
    pub fn drop_cache(&self, off: u64, len: u64) {
        let _ = rustix::fs::fadvise(
            &self.file,
            off,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
        if self.device {
            // SAFETY: an integer ioctl on an open descriptor; no memory is passed.
            unsafe {
                libc::ioctl(self.file.as_raw_fd(), BLKFLSBUF as _, 0);
            }
        }
    }

    /// Ask the kernel to re-read a block device's partition table, so `/dev/sdX1`… match what
    /// was written. No-op for files.
    pub fn reread_partitions(&self) -> Result<()> {
        if !self.device {
            return Ok(());
        }
        // SAFETY: an integer ioctl on an open descriptor; no memory is passed.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), BLKRRPART as _, 0) };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "re-reading the partition table of {} (run `partprobe {}` or re-plug it)",
                    self.path.display(),
                    self.path.display()
                )
            });
        }
        Ok(())
    }

    /// Test seam (test-only, see [`CORRUPT_ENV`]): when the variable names `phase` (`image` or
    /// `seed`) and an offset inside `from..to` (a span just written and synced, not yet read
    /// back), flip that byte on the
    /// medium. For a loop device that is its backing file, behind the device's page cache, so
    /// only a read-back that really reads the medium sees it (a stick that stored other bytes
    /// than it was sent); for a regular file it is the file. Other devices are never touched.
    pub fn corrupt_for_test(&self, phase: &str, from: u64, to: u64) -> Result<()> {
        let Ok(v) = std::env::var(CORRUPT_ENV) else {
            return Ok(());
        };
        let (want, num) = v.trim().split_once(':').unwrap_or(("image", v.trim()));
        let Some(off) = num.parse::<u64>().ok().filter(|_| want == phase) else {
            return Ok(());
        };
        if off < from || off >= to {
            return Ok(());
        }
        let (file, at) = if self.device {
            let Some((backing, base)) = self.loop_backing()? else {
                return Ok(());
            };
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&backing)
                .with_context(|| format!("opening loop backing file {}", backing.display()))?;
            (f, base + off)
        } else {
            let f = self
                .file
                .try_clone()
                .context("cloning the target descriptor")?;
            (f, off)
        };
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at)
            .context("test seam: reading the byte to flip")?;
        b[0] ^= 0xff;
        file.write_all_at(&b, at)
            .context("test seam: writing the flipped byte")?;
        file.sync_all().context("test seam: syncing")?;
        eprintln!("test seam {CORRUPT_ENV}: flipped the byte at offset {off} on the medium");
        Ok(())
    }

    /// Backing file and offset of a loop device (sysfs `loop/backing_file`, `loop/offset`).
    fn loop_backing(&self) -> Result<Option<(PathBuf, u64)>> {
        let m = self.file.metadata().context("stat of the target")?;
        let rdev = m.rdev();
        let dir = PathBuf::from(format!(
            "/sys/dev/block/{}:{}/loop",
            rustix::fs::major(rdev),
            rustix::fs::minor(rdev)
        ));
        let Ok(b) = std::fs::read_to_string(dir.join("backing_file")) else {
            return Ok(None);
        };
        let off = std::fs::read_to_string(dir.join("offset"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Some((PathBuf::from(b.trim()), off)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_size_and_io() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        let d = Disk::open_rw(&p, true).unwrap();
        assert_eq!(d.size(), 8192);
        assert!(!d.is_device());
        d.write_at(b"abc", 4096).unwrap();
        d.sync().unwrap();
        d.drop_cache(0, 8192);
        let mut b = [0u8; 3];
        d.read_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"abc");
        assert!(d.read_at(&mut b, 8191).is_err());
        assert!(Disk::open(dir.path()).is_err());
    }
}
