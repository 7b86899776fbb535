//! Decoding a base image file (raw, .xz, .gz, .tar.xz/.tar.gz with disk.raw) into a sparse
//! raw disk.

use super::tar_sparse;
use crate::sparse::{self, SparseWriter};
use anyhow::{bail, Context, Result};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

/// Container/compression of a base image file, detected from magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Raw,
    Xz,
    Gzip,
}

/// Detect the outer format from the first bytes of a file.
pub fn detect_format(head: &[u8]) -> Result<InputFormat> {
    if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Ok(InputFormat::Xz)
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Ok(InputFormat::Gzip)
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        bail!("zstd-compressed images are not supported (use .xz, .gz or a raw image)")
    } else if head.starts_with(b"BZh") {
        bail!("bzip2-compressed images are not supported (use .xz, .gz or a raw image)")
    } else {
        Ok(InputFormat::Raw)
    }
}

fn is_tar_header(head: &[u8]) -> bool {
    head.len() >= 512 && &head[257..262] == b"ustar"
}

fn has_boot_signature(head: &[u8]) -> bool {
    head.len() >= 512 && head[510..512] == [0x55, 0xAA]
}

/// Counts bytes read from the compressed input for progress reporting.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Multi-threaded xz decoding of every stream in the input (concatenated streams and stream
/// padding included); liblzma's multi-threaded decoder handles one stream at a time.
struct XzStreams<R: BufRead> {
    dec: Option<liblzma::bufread::XzDecoder<R>>,
}

fn xz_mt_stream() -> io::Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        // Above this the decoder falls back to one thread, which keeps peak RSS bounded.
        .memlimit_threading(128 << 20)
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(io::Error::other)
}

impl<R: BufRead> XzStreams<R> {
    fn new(r: R) -> io::Result<Self> {
        Ok(XzStreams {
            dec: Some(liblzma::bufread::XzDecoder::new_stream(r, xz_mt_stream()?)),
        })
    }
}

impl<R: BufRead> Read for XzStreams<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // End of one stream: skip zero padding, then either EOF or another stream.
            let Some(dec) = self.dec.take() else {
                return Ok(0);
            };
            let mut r = dec.into_inner();
            loop {
                let avail = r.fill_buf()?;
                if avail.is_empty() {
                    return Ok(0);
                }
                let zeros = avail.iter().take_while(|&&b| b == 0).count();
                let more = zeros < avail.len();
                r.consume(zeros);
                if more {
                    break;
                }
            }
            self.dec = Some(liblzma::bufread::XzDecoder::new_stream(r, xz_mt_stream()?));
        }
    }
}

/// Read up to `n` bytes (fewer only at EOF).
fn read_head(r: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Which side of a copy failed, for the error message.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn copy_stream(
    r: &mut dyn Read,
    w: &mut SparseWriter,
    progress: &mut dyn FnMut(),
) -> std::result::Result<u64, CopyError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
        progress();
    }
}

/// Unpack `input` into `out` (sparse); returns the size the container declared: the raw
/// file's length, the tar member's real size, or the decoded length of an xz/gzip stream (their
/// decoders check it against the xz index and block sizes / the gzip ISIZE and CRC).
pub(super) fn unpack_into(
    input: &Path,
    out: File,
    partial: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let step = |what: &str| format!("{what} base image {}", input.display());
    let mut src = File::open(input).with_context(|| step("opening"))?;
    let mut head = [0u8; 512];
    let got = src.read_at(&mut head, 0).with_context(|| step("reading"))?;
    let head = &head[..got];
    let format = detect_format(head).with_context(|| step("reading"))?;
    let count = Rc::new(Cell::new(0u64));
    let counting = Counting {
        inner: src.try_clone().with_context(|| step("opening"))?,
        count: count.clone(),
    };
    let mut report = || progress(count.get());
    let mut writer = SparseWriter::new(out);
    let write_err =
        |e: io::Error| anyhow::Error::new(e).context(format!("writing {}", partial.display()));

    if format == InputFormat::Raw && !is_tar_header(head) {
        if !has_boot_signature(head) {
            bail!(
                "reading base image {}: not a disk image (no MBR/GPT boot signature), \
                 not xz, gzip or tar",
                input.display()
            );
        }
        // Raw: read only the data ranges of the input; zero blocks inside them become holes too.
        let len = src.metadata().with_context(|| step("reading"))?.len();
        for (start, n) in sparse::data_ranges(&src, 0, len).with_context(|| step("reading"))? {
            writer.skip_to(start).map_err(write_err)?;
            src.seek(SeekFrom::Start(start))
                .with_context(|| step("reading"))?;
            let mut r = (&src).take(n);
            copy_stream(&mut r, &mut writer, &mut || progress(start))
                .map_err(|e| map_copy_err(e, "reading", input, partial))?;
            progress(start + n);
        }
        writer.skip_to(len).map_err(write_err)?;
        writer.finish().map_err(write_err)?;
        return Ok(len);
    }

    let reader: Box<dyn Read + '_> = match format {
        InputFormat::Xz => Box::new(
            XzStreams::new(BufReader::with_capacity(1 << 20, counting))
                .with_context(|| step("decompressing"))?,
        ),
        InputFormat::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 20,
            counting,
        ))),
        InputFormat::Raw => Box::new(BufReader::with_capacity(1 << 20, counting)),
    };
    let what = if format == InputFormat::Raw {
        "reading"
    } else {
        "decompressing"
    };
    let mut reader = reader;
    let inner_head = read_head(&mut reader, 512).map_err(|e| {
        anyhow::Error::new(e).context(format!("{what} base image {}", input.display()))
    })?;
    let mut stream = io::Cursor::new(inner_head.clone()).chain(reader);
    if is_tar_header(&inner_head) {
        let mut archive = tar::Archive::new(stream);
        let entries = archive
            .entries()
            .with_context(|| format!("{what} base image {} (tar)", input.display()))?;
        let mut seen = Vec::new();
        for entry in entries {
            let mut entry =
                entry.with_context(|| format!("{what} base image {} (tar)", input.display()))?;
            let pax = tar_sparse::pax_records(&mut entry, input)?;
            let (layout, sparse_name) = tar_sparse::layout(&pax)
                .with_context(|| format!("{what} base image {} (tar)", input.display()))?;
            let path = match sparse_name {
                Some(n) => n,
                None => entry
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let t = entry.header().entry_type();
            let is_disk = Path::new(&path).file_name() == Some(std::ffi::OsStr::new("disk.raw"))
                && (t.is_file() || t.is_gnu_sparse());
            if !is_disk {
                seen.push(path);
                continue;
            }
            let declared = match layout {
                tar_sparse::Layout::Plain => {
                    let want = entry.size();
                    let got = copy_stream(&mut entry, &mut writer, &mut report)
                        .map_err(|e| map_copy_err(e, what, input, partial))?;
                    if got != want {
                        bail!(
                            "{what} base image {}: disk.raw ends after {got} of {want} bytes (the file is truncated)",
                            input.display()
                        );
                    }
                    want
                }
                tar_sparse::Layout::Pax {
                    version,
                    real_size,
                    map,
                } => {
                    let stored = entry.size();
                    tar_sparse::copy_pax(
                        &mut entry,
                        stored,
                        version,
                        real_size,
                        map,
                        &mut writer,
                        &mut report,
                    )
                    .with_context(|| {
                        format!(
                            "{what} base image {}: disk.raw (pax sparse {version})",
                            input.display()
                        )
                    })?
                }
            };
            writer.finish().map_err(write_err)?;
            return Ok(declared);
        }
        bail!(
            "{what} base image {}: the tar archive holds no disk.raw (found: {})",
            input.display(),
            if seen.is_empty() {
                "nothing".to_string()
            } else {
                seen.join(", ")
            }
        );
    }
    if !has_boot_signature(&inner_head) {
        bail!(
            "{what} base image {}: the content is neither a tar archive nor a disk image \
             (no MBR/GPT boot signature)",
            input.display()
        );
    }
    let n = copy_stream(&mut stream, &mut writer, &mut report)
        .map_err(|e| map_copy_err(e, what, input, partial))?;
    writer.finish().map_err(write_err)?;
    Ok(n)
}

fn map_copy_err(e: CopyError, what: &str, input: &Path, partial: &Path) -> anyhow::Error {
    match e {
        CopyError::Read(e) => {
            let hint = if e.kind() == io::ErrorKind::UnexpectedEof {
                " (the file is truncated)"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!("{what} base image {}{hint}", input.display()))
        }
        CopyError::Write(e) => {
            anyhow::Error::new(e).context(format!("writing {}", partial.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            detect_format(&[0xFD, b'7', b'z', b'X', b'Z', 0, 1]).unwrap(),
            InputFormat::Xz
        );
        assert_eq!(detect_format(&[0x1F, 0x8B, 8]).unwrap(), InputFormat::Gzip);
        assert_eq!(detect_format(&[0; 512]).unwrap(), InputFormat::Raw);
        assert!(detect_format(&[0x28, 0xB5, 0x2F, 0xFD]).is_err());
    }
}
