//! The writer side: positional writes of the reader's buffers (or in-kernel copies of a raw
//! image onto a file), writeback and device batches published to the verifiers.

use super::reader::{produce, Job};
use super::{Check, Gate, Sink, Source, CHUNK, DEVICE_BATCH, FILE_KICK};
use crate::bmap::Bmap;
use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

/// Start (not wait for) writeback of a span, so the disk works while we copy and the final
/// fsync has little left to do. Best effort.
fn start_writeback(f: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open descriptor with integer arguments; no memory involved.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Tracks what was written and publishes it to the verifiers.
struct Progress<'a> {
    sink: &'a Sink<'a>,
    gate: &'a Gate,
    bar: &'a ProgressBar,
    written: u64,
    end: u64,
    synced: u64,
}

impl Progress<'_> {
    fn wrote(&mut self, off: u64, len: u64) -> Result<()> {
        self.written += len;
        self.end = self.end.max(off + len);
        self.bar.inc(len);
        if self.gate.failed.load(Ordering::SeqCst) {
            bail!(
                "verification failed while writing {}",
                self.sink.name.display()
            );
        }
        if !self.sink.device {
            self.gate.publish(self.end);
            if self.end - self.synced >= FILE_KICK {
                start_writeback(self.sink.disk.file(), self.synced, self.end - self.synced);
                self.synced = self.end;
            }
        } else if self.end - self.synced >= DEVICE_BATCH {
            // Synced and dropped from the cache before the verifiers may read it: they read
            // what the medium holds, not the pages we wrote from.
            self.sink.disk.sync()?;
            self.sink
                .disk
                .corrupt_for_test("image", self.synced, self.end)?;
            self.sink
                .disk
                .drop_cache(self.synced, self.end - self.synced);
            self.synced = self.end;
            self.gate.publish(self.end);
        }
        Ok(())
    }
    fn check_limit(&self, end: u64) -> Result<()> {
        match self.sink.limit {
            Some(l) if end > l => bail!(
                "image is larger than {} ({} bytes)",
                self.sink.name.display(),
                l
            ),
            _ => Ok(()),
        }
    }
}

/// Returns (bytes written, image size, checks gathered while reading).
pub(super) fn write_phase(
    src: &Source,
    sink: &Sink,
    raw: Option<&File>,
    gate: &Gate,
    wbar: &ProgressBar,
) -> Result<(u64, u64, Vec<Check>)> {
    let mut p = Progress {
        sink,
        gate,
        bar: wbar,
        written: 0,
        end: 0,
        synced: 0,
    };
    if let (Some(b), Some(img), false) = (src.bmap, raw, sink.device) {
        // Raw image onto a file: in-kernel copies, no user-space buffers.
        if copy_ranges(src.image, img, b, &mut p)? {
            return Ok((p.written, b.image_size, Vec::new()));
        }
    }
    let (tx, rx) = mpsc::sync_channel::<Job>(3);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..4 {
        let _ = free_tx.send(vec![0u8; CHUNK]);
    }
    let skip_zero = !sink.device;
    std::thread::scope(|s| {
        let reader = s.spawn(move || produce(src, raw, skip_zero, tx, free_rx));
        let mut werr: Option<anyhow::Error> = None;
        for job in rx.iter() {
            for &(a, e) in &job.segs {
                let at = job.off + a as u64;
                let r = p.check_limit(job.off + e as u64).and_then(|_| {
                    sink.disk
                        .file()
                        .write_all_at(&job.buf[a..e], at)
                        .with_context(|| format!("write {} at offset {at}", sink.name.display()))?;
                    p.wrote(at, (e - a) as u64)
                });
                if let Err(err) = r {
                    werr = Some(err);
                    break;
                }
            }
            let _ = free_tx.send(job.buf);
            if werr.is_some() {
                break;
            }
        }
        drop(rx);
        drop(free_tx);
        let produced = reader
            .join()
            .map_err(|_| anyhow!("image reader thread panicked"))?;
        if let Some(e) = werr {
            return Err(e);
        }
        let (size, checks) = produced.with_context(|| format!("read {}", src.image.display()))?;
        Ok((p.written, size, checks))
    })
}

/// Copy the bmap's ranges with `copy_file_range`; false if the kernel cannot (nothing copied).
fn copy_ranges(name: &Path, img: &File, b: &Bmap, p: &mut Progress) -> Result<bool> {
    use rustix::io::Errno;
    let mut first = true;
    for r in &b.ranges {
        let (off, len) = r.byte_span(b.block_size, b.image_size);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(16 << 20) as usize;
            let mut a = off + done;
            let mut o = off + done;
            match rustix::fs::copy_file_range(
                img,
                Some(&mut a),
                p.sink.disk.file(),
                Some(&mut o),
                n,
            ) {
                Ok(0) => bail!("{} is shorter than its bmap says", name.display()),
                Ok(k) => {
                    p.wrote(off + done, k as u64)?;
                    done += k as u64;
                }
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if first => {
                    return Ok(false)
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("copy {} to {}", name.display(), p.sink.name.display())
                    })
                }
            }
            first = false;
        }
    }
    Ok(true)
}
