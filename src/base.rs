//! Base images: unpack (raw, .xz, .gz, .tar.xz/.tar.gz with disk.raw) into the cache as sparse raw,
//! read the layout and the boot FAT, and detect the family.

mod tar_sparse;
mod verify;

pub use verify::check_raw;

use crate::fat::BaseFat;
use crate::partition::{self, DiskLayout, PartType, Partition, TableKind};
use crate::sparse::{self, SparseWriter};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Label of the seed partition added to families whose cloud-init finds its seed by label.
pub const CIDATA_LABEL: &str = "CIDATA";

/// The base families nodeforge knows (README "How an image is made"; docs/cloud-init.md#where-each-family-looks-for-its-seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Raspberry Pi OS: MBR, p1 `bootfs`, seed on the boot FAT.
    Raspios,
    /// Ubuntu Server raspi: MBR, p1 `system-boot`, seed on the boot FAT.
    UbuntuRaspi,
    /// Debian raspi: MBR, p1 `RASPIFIRM`, p2 `RASPIROOT`, seed on a new `CIDATA` FAT.
    DebianRaspi,
    /// Debian generic amd64: GPT, p15 ESP, p1 root last, seed on a new `CIDATA` FAT before root.
    DebianGeneric,
}

impl Family {
    /// The kebab-case name used in `cluster.toml` and `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Raspios => "raspios",
            Family::UbuntuRaspi => "ubuntu-raspi",
            Family::DebianRaspi => "debian-raspi",
            Family::DebianGeneric => "debian-generic",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An opened base image.
pub struct Base {
    /// Sparse raw image in the cache.
    pub raw: PathBuf,
    pub size: u64,
    pub layout: DiskLayout,
    pub family: Family,
    /// Index into `layout.partitions` of the boot FAT (Pi firmware FAT, or the ESP).
    pub boot: usize,
    /// Index into `layout.partitions` of the root filesystem.
    pub root: usize,
    /// The boot FAT's content (Pi families; `None` where the boot partition is kept byte for byte).
    pub boot_fat: Option<BaseFat>,
    /// `/etc/os-release` from the root filesystem, when readable.
    pub os_release: Option<String>,
    /// Indices into `layout.partitions` of FAT partitions labelled `CIDATA` (a seed left by an
    /// earlier build or another tool). nodeforge owns the seed: these are dropped when composing.
    pub seed_partitions: Vec<usize>,
}

// ---------------------------------------------------------------------------------------------
// Unpacking into the cache
// ---------------------------------------------------------------------------------------------

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

/// Decompress `input` (already verified against its pin `key`: 64 or 128 hex digits, its
/// sha256 or sha512) into `<cache_dir>/raw/<key>.raw` once, sparse; later calls return the
/// cached file. The family is detected (see [`unpack_base`]).
pub fn unpack_to_cache(input: &Path, sha256: &str, cache_dir: &Path) -> Result<PathBuf> {
    unpack_base(input, sha256, cache_dir, None)
}

/// [`unpack_to_cache`] with a family override (`[boards.*] family`).
///
/// The cache holds only verified entries: the disk is written under `<key>.raw.partial`,
/// checked by [`check_raw`] (declared size, whole sectors, 512-byte sectors, partition table,
/// known family), then `<key>.raw.verified` (its size) is written and the disk renamed into
/// place. A cached entry is checked again on reuse; one that fails is discarded with a message
/// and unpacked again.
pub fn unpack_base(
    input: &Path,
    key: &str,
    cache_dir: &Path,
    family: Option<Family>,
) -> Result<PathBuf> {
    let final_path = cached_raw_path(input, key, cache_dir)?;
    if reuse(&final_path, family) {
        return Ok(final_path);
    }
    let total = std::fs::metadata(input)
        .with_context(|| format!("reading base image {}", input.display()))?
        .len();
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let progress = crate::progress::Progress::bytes(&format!("unpacking {name}"), total);
    let res = unpack_base_with(input, key, cache_dir, family, &mut |done| {
        progress.set(done)
    });
    if res.is_ok() {
        progress.finish();
    }
    res
}

/// [`unpack_to_cache`] with a progress callback receiving input bytes consumed so far.
pub fn unpack_to_cache_with(
    input: &Path,
    sha256: &str,
    cache_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<PathBuf> {
    unpack_base_with(input, sha256, cache_dir, None, progress)
}

/// The sidecar recording that `raw` passed [`check_raw`], with its size.
fn verified_marker(raw: &Path) -> PathBuf {
    let mut s = raw.as_os_str().to_owned();
    s.push(".verified");
    PathBuf::from(s)
}

/// True when the cached `raw` exists and passes its checks again; a failing entry is removed
/// with a message (it is then unpacked again).
fn reuse(raw: &Path, family: Option<Family>) -> bool {
    if !raw.is_file() {
        return false;
    }
    let marker = verified_marker(raw);
    let recorded = std::fs::read_to_string(&marker).ok().and_then(|t| {
        t.trim()
            .strip_prefix("size=")
            .and_then(|n| n.parse::<u64>().ok())
    });
    let problem = match recorded {
        None => "it was never verified (no .verified record)".to_string(),
        Some(n) => match check_raw(raw, Some(n), family) {
            Ok(()) => return true,
            Err(e) => format!("{e:#}"),
        },
    };
    eprintln!(
        "discarding cached base {}: {problem}; unpacking it again",
        raw.display()
    );
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(raw);
    false
}

fn unpack_base_with(
    input: &Path,
    key: &str,
    cache_dir: &Path,
    family: Option<Family>,
    progress: &mut dyn FnMut(u64),
) -> Result<PathBuf> {
    let final_path = cached_raw_path(input, key, cache_dir)?;
    let sha = key.to_ascii_lowercase();
    let dir = cache_dir.join("raw");
    if reuse(&final_path, family) {
        return Ok(final_path);
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating cache directory {}", dir.display()))?;
    let partial = dir.join(format!("{sha}.raw.partial"));
    // Another nodeforge may be unpacking the same base: an exclusive lock on the partial file
    // serialises us; the winner's result is then reused.
    let out = loop {
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(io::Error::from)
            .with_context(|| format!("locking {}", partial.display()))?;
        let ours = f
            .metadata()
            .with_context(|| format!("reading {}", partial.display()))?;
        let same = std::fs::metadata(&partial)
            .is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev());
        if reuse(&final_path, family) {
            if same {
                let _ = std::fs::remove_file(&partial);
            }
            return Ok(final_path);
        }
        if same {
            break f;
        }
        // The file we locked was renamed or removed meanwhile: start over.
    };
    out.set_len(0)
        .with_context(|| format!("truncating {}", partial.display()))?;
    // Keeps the lock until after a failed run's partial file is removed (drop order).
    let _lock = out
        .try_clone()
        .with_context(|| format!("reading {}", partial.display()))?;
    let guard = RemoveOnDrop(Some(partial.clone()));
    let declared = unpack_into(input, out, &partial, progress)?;
    check_raw(&partial, Some(declared), family).with_context(|| {
        format!(
            "base image {}: refused before caching (nothing was cached)",
            input.display()
        )
    })?;
    let marker = verified_marker(&final_path);
    crate::output::write_atomic(&marker, format!("size={declared}\n").as_bytes())
        .with_context(|| format!("writing {}", marker.display()))?;
    std::fs::rename(&partial, &final_path)
        .with_context(|| format!("renaming {} to {}", partial.display(), final_path.display()))?;
    std::mem::forget(guard);
    Ok(final_path)
}

/// `<cache_dir>/raw/<key>.raw`, after checking `key` is 64 or 128 hex digits (a sha256 or
/// sha512: it names a file).
pub fn cached_raw_path(input: &Path, sha256: &str, cache_dir: &Path) -> Result<PathBuf> {
    if !matches!(sha256.len(), 64 | 128) || !sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "unpacking base image {}: invalid sha256/sha512 {sha256:?}",
            input.display()
        );
    }
    Ok(cache_dir
        .join("raw")
        .join(format!("{}.raw", sha256.to_ascii_lowercase())))
}

/// Removes a partial output unless forgotten.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
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
fn unpack_into(
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

// ---------------------------------------------------------------------------------------------
// Probing filesystems
// ---------------------------------------------------------------------------------------------

/// What a partition holds, from its first sectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsKind {
    /// FAT12/16/32 (`bits`), with the boot-sector volume label (empty for `NO NAME`).
    Fat { bits: u8, label: String },
    /// ext2/3/4 with its volume label and filesystem UUID (lower-case text).
    Ext4 { label: String, uuid: String },
    /// Anything else (BIOS boot, swap, unformatted...).
    Unknown,
}

impl FsKind {
    /// Volume label, if the filesystem has one.
    pub fn label(&self) -> Option<&str> {
        match self {
            FsKind::Fat { label, .. } | FsKind::Ext4 { label, .. } if !label.is_empty() => {
                Some(label)
            }
            _ => None,
        }
    }
}

/// Identify the filesystem of partition `p` from its boot sector / superblock.
pub fn probe_fs(file: &File, p: &Partition) -> FsKind {
    let mut sb = [0u8; 2048];
    if p.size < 2048 || file.read_exact_at(&mut sb, p.start).is_err() {
        return FsKind::Unknown;
    }
    if let Some((bits, label)) = fat_label(&sb[..512]) {
        return FsKind::Fat { bits, label };
    }
    // ext2/3/4 superblock at byte 1024: magic 0xEF53 at 0x38, UUID at 0x68, label at 0x78.
    let s = &sb[1024..];
    if s[0x38..0x3A] == [0x53, 0xEF] {
        let label = String::from_utf8_lossy(&s[0x78..0x88])
            .trim_end_matches('\0')
            .to_string();
        let u = &s[0x68..0x78];
        let h = hex::encode(u);
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        return FsKind::Ext4 { label, uuid };
    }
    FsKind::Unknown
}

/// FAT type and boot-sector label: FAT32 keeps it at 0x47, FAT12/16 at 0x2B.
fn fat_label(bs: &[u8]) -> Option<(u8, String)> {
    if bs.len() < 512 || bs[510..512] != [0x55, 0xAA] {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([bs[11], bs[12]]);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) || bs[13] == 0 {
        return None;
    }
    let (bits, label) = if &bs[0x52..0x57] == b"FAT32" {
        (32, &bs[0x47..0x52])
    } else if &bs[0x36..0x3B] == b"FAT16" {
        (16, &bs[0x2B..0x36])
    } else if &bs[0x36..0x3B] == b"FAT12" {
        (12, &bs[0x2B..0x36])
    } else {
        return None;
    };
    let label = String::from_utf8_lossy(label).trim_end().to_string();
    let label = if label == "NO NAME" {
        String::new()
    } else {
        label
    };
    Some((bits, label))
}

/// An owned window for ext4-view (which wants `'static` readers).
struct Ext4Window {
    file: File,
    start: u64,
    len: u64,
}

impl ext4_view::Ext4Read for Ext4Window {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        match start_byte.checked_add(dst.len() as u64) {
            Some(end) if end <= self.len => {}
            _ => return Err("read beyond the end of the partition".into()),
        }
        self.file.read_exact_at(dst, self.start + start_byte)?;
        Ok(())
    }
}

/// Which of the files that identify a boot FAT exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootFiles {
    pub cmdline_txt: bool,
    pub config_txt: bool,
    pub efi_dir: bool,
}

/// Look for `cmdline.txt`, `config.txt` and `EFI/` in the FAT at partition `p` (fatfs, read-only).
pub fn boot_files(file: &File, p: &Partition) -> Result<BootFiles> {
    let w = crate::window::FileWindow::read_only(file, p.start, p.size);
    let fs = fatfs::FileSystem::new(w, fatfs::FsOptions::new())
        .with_context(|| format!("reading the FAT of partition {}", p.number))?;
    let root = fs.root_dir();
    let mut found = BootFiles::default();
    for e in root.iter() {
        let e = e.with_context(|| format!("reading the FAT of partition {}", p.number))?;
        let name = e.file_name().to_ascii_lowercase();
        match (name.as_str(), e.is_dir()) {
            ("cmdline.txt", false) => found.cmdline_txt = true,
            ("config.txt", false) => found.config_txt = true,
            ("efi", true) => found.efi_dir = true,
            _ => {}
        }
    }
    Ok(found)
}

/// Read a file from the ext4 filesystem in partition `p` (symlinks followed).
pub fn read_ext4_file(raw: &Path, p: &Partition, path: &str) -> Result<Vec<u8>> {
    read_ext4_file_if_exists(raw, p, path)?.with_context(|| {
        format!(
            "reading {path} from partition {} in {}: file not found",
            p.number,
            raw.display()
        )
    })
}

/// Like [`read_ext4_file`], but `Ok(None)` when `path` does not exist in the filesystem.
pub fn read_ext4_file_if_exists(raw: &Path, p: &Partition, path: &str) -> Result<Option<Vec<u8>>> {
    let file = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let fs = ext4_view::Ext4::load(Box::new(Ext4Window {
        file,
        start: p.start,
        len: p.size,
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| {
        format!(
            "reading the ext4 filesystem of partition {} in {}",
            p.number,
            raw.display()
        )
    })?;
    match fs.read(path) {
        Ok(b) => Ok(Some(b)),
        Err(ext4_view::Ext4Error::NotFound) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{e}")).with_context(|| {
            format!(
                "reading {path} from partition {} in {}",
                p.number,
                raw.display()
            )
        }),
    }
}

/// `/etc/os-release` (or `/usr/lib/os-release`) of the root filesystem.
fn read_os_release(raw: &Path, p: &Partition) -> Option<String> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|f| read_ext4_file(raw, p, f).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A key of os-release (`ID`, `VERSION_CODENAME`...) without quotes.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Family detection
// ---------------------------------------------------------------------------------------------

/// The result of detection, without the boot FAT's content.
#[derive(Clone, Debug)]
pub struct Detected {
    pub layout: DiskLayout,
    pub size: u64,
    pub family: Family,
    pub boot: usize,
    pub root: usize,
    /// Filesystem probe of every partition, parallel to `layout.partitions`.
    pub fs: Vec<FsKind>,
    pub os_release: Option<String>,
    /// FAT partitions labelled `CIDATA` (see [`Base::seed_partitions`]).
    pub seed_partitions: Vec<usize>,
}

/// True for a FAT volume labelled `CIDATA` (cloud-init NoCloud matches the label case-insensitively).
fn is_cidata(k: &FsKind) -> bool {
    matches!(k, FsKind::Fat { label, .. } if label.eq_ignore_ascii_case(CIDATA_LABEL))
}

fn is_fat(k: &FsKind) -> bool {
    matches!(k, FsKind::Fat { .. })
}

/// Open a raw base image and detect its family and partitions, without reading the FAT's files.
pub fn detect(raw: &Path, family: Option<Family>) -> Result<Detected> {
    let mut file =
        File::open(raw).with_context(|| format!("opening base image {}", raw.display()))?;
    let size = crate::disk::size_of(&file)
        .with_context(|| format!("reading the size of base image {}", raw.display()))?;
    let layout = partition::read_layout(&mut file, raw)?;
    let fs: Vec<FsKind> = layout
        .partitions
        .iter()
        .map(|p| probe_fs(&file, p))
        .collect();

    let gpt = matches!(layout.table, TableKind::Gpt { .. });
    // Boot FAT: the ESP on GPT, else the lowest-numbered FAT partition.
    // A CIDATA volume is a seed, never the boot FAT.
    let boot = layout.partitions.iter().enumerate().position(|(i, p)| {
        is_fat(&fs[i])
            && !is_cidata(&fs[i])
            && (!gpt || p.part_type == PartType::Gpt(partition::ESP_TYPE))
    });
    let seed_partitions: Vec<usize> = (0..fs.len())
        .filter(|&i| is_cidata(&fs[i]) && Some(i) != boot)
        .collect();
    // Root: the largest ext4 partition (with a Linux type on GPT).
    let root = layout
        .partitions
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            matches!(fs[*i], FsKind::Ext4 { .. })
                && (!gpt
                    || matches!(p.part_type, PartType::Gpt(t) if t == partition::LINUX_FS_TYPE
                        || t == partition::ROOT_X86_64_TYPE || t == partition::ROOT_ARM64_TYPE))
        })
        .max_by_key(|(_, p)| p.size)
        .map(|(i, _)| i);
    let os_release = root.and_then(|r| read_os_release(raw, &layout.partitions[r]));

    let detected = match (family, boot, root) {
        (Some(f), Some(b), Some(r)) => Some((f, b, r)),
        (None, Some(b), Some(r)) => {
            detect_family(&file, &layout, &fs, b, r, os_release.as_deref(), raw)?.map(|f| (f, b, r))
        }
        _ => None,
    };
    let Some((family, boot, root)) = detected else {
        bail!(
            "{}",
            unknown_layout_message(raw, &layout, &fs, family, boot, root)
        );
    };
    for i in [boot, root] {
        let p = &layout.partitions[i];
        if p.end() > size {
            bail!(
                "base image {}: partition {} ends at byte {} but the image has {size} bytes (truncated?)",
                raw.display(),
                p.number,
                p.end()
            );
        }
    }
    Ok(Detected {
        layout,
        size,
        family,
        boot,
        root,
        fs,
        os_release,
        seed_partitions,
    })
}

fn detect_family(
    file: &File,
    layout: &DiskLayout,
    fs: &[FsKind],
    boot: usize,
    root: usize,
    os_release: Option<&str>,
    raw: &Path,
) -> Result<Option<Family>> {
    let bp = &layout.partitions[boot];
    if matches!(layout.table, TableKind::Gpt { .. }) {
        // ESP + Linux root on GPT: the Debian generic (cloud) shape.
        return Ok(Some(Family::DebianGeneric));
    }
    let files = boot_files(file, bp).with_context(|| format!("base image {}", raw.display()))?;
    let label = fs[boot].label().unwrap_or("").to_ascii_lowercase();
    let by_label = match label.as_str() {
        "bootfs" if files.cmdline_txt => Some(Family::Raspios),
        "system-boot" => Some(Family::UbuntuRaspi),
        "raspifirm" => Some(Family::DebianRaspi),
        _ => None,
    };
    if by_label.is_some() {
        return Ok(by_label);
    }
    // Labels differ from the known ones: a Pi firmware FAT + what the root says it is.
    if !(files.config_txt || files.cmdline_txt) {
        return Ok(None);
    }
    let id = os_release.and_then(|t| os_release_field(t, "ID"));
    let rpi = os_release.is_some_and(|t| t.contains("Raspberry Pi") || t.contains("raspbian"))
        || read_ext4_file(raw, &layout.partitions[root], "/etc/rpi-issue").is_ok();
    Ok(match id.as_deref() {
        Some("ubuntu") => Some(Family::UbuntuRaspi),
        Some("raspbian") => Some(Family::Raspios),
        Some("debian") if rpi => Some(Family::Raspios),
        Some("debian") => Some(Family::DebianRaspi),
        _ => None,
    })
}

fn unknown_layout_message(
    raw: &Path,
    layout: &DiskLayout,
    fs: &[FsKind],
    family: Option<Family>,
    boot: Option<usize>,
    root: Option<usize>,
) -> String {
    let mut m = format!("base image {}: unknown layout: ", raw.display());
    match &layout.table {
        TableKind::Mbr { disk_signature } => {
            let _ = write!(m, "MBR (disk signature 0x{disk_signature:08x})");
        }
        TableKind::Gpt { disk_guid } => {
            let _ = write!(m, "GPT (disk GUID {})", partition::guid_string(disk_guid));
        }
    }
    if layout.partitions.is_empty() {
        m.push_str(" with no partitions");
    }
    for (p, k) in layout.partitions.iter().zip(fs) {
        let ty = match &p.part_type {
            PartType::Mbr(t) => format!("type 0x{t:02x}"),
            PartType::Gpt(g) => format!("type {}", partition::guid_string(g)),
        };
        let f = match k {
            FsKind::Fat { bits, label } => format!("FAT{bits} label {label:?}"),
            FsKind::Ext4 { label, .. } => format!("ext4 label {label:?}"),
            FsKind::Unknown => "unknown filesystem".to_string(),
        };
        let _ = write!(
            m,
            "; p{} {ty} {f} at {} MiB, {} MiB",
            p.number,
            p.start >> 20,
            p.size >> 20
        );
    }
    if boot.is_none() {
        m.push_str("; no boot FAT partition found");
    }
    if root.is_none() {
        m.push_str("; no ext4 root partition found");
    }
    if let (Some(f), true) = (family, boot.is_none() || root.is_none()) {
        let _ = write!(m, " (family {f} was requested)");
    } else {
        m.push_str(
            ". Known: raspios (MBR, FAT `bootfs` + cmdline.txt), ubuntu-raspi (MBR, FAT \
             `system-boot`), debian-raspi (MBR, FAT `RASPIFIRM`), debian-generic (GPT, ESP + ext4 \
             root); set the base's family in cluster.toml to override",
        );
    }
    m
}

/// Open a raw base image and detect its family (`family` overrides detection).
pub fn open(raw: &Path, family: Option<Family>) -> Result<Base> {
    let d = detect(raw, family)?;
    let boot_fat = match d.family {
        Family::DebianGeneric => None,
        Family::Raspios | Family::UbuntuRaspi | Family::DebianRaspi => {
            let file =
                File::open(raw).with_context(|| format!("opening base image {}", raw.display()))?;
            let p = &d.layout.partitions[d.boot];
            Some(
                crate::fat::read_fat(&file, p.start, p.size).with_context(|| {
                    format!(
                        "reading the boot FAT (partition {}) of base image {}",
                        p.number,
                        raw.display()
                    )
                })?,
            )
        }
    };
    Ok(Base {
        raw: raw.to_path_buf(),
        size: d.size,
        layout: d.layout,
        family: d.family,
        boot: d.boot,
        root: d.root,
        boot_fat,
        os_release: d.os_release,
        seed_partitions: d.seed_partitions,
    })
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

    #[test]
    fn fat_labels() {
        let mut bs = [0u8; 512];
        bs[11] = 0;
        bs[12] = 2;
        bs[13] = 1;
        bs[510] = 0x55;
        bs[511] = 0xAA;
        bs[0x52..0x57].copy_from_slice(b"FAT32");
        bs[0x47..0x52].copy_from_slice(b"bootfs     ");
        assert_eq!(fat_label(&bs), Some((32, "bootfs".to_string())));
        let mut b16 = bs;
        b16[0x52..0x57].copy_from_slice(b"\0\0\0\0\0");
        b16[0x36..0x3B].copy_from_slice(b"FAT16");
        b16[0x2B..0x36].copy_from_slice(b"NO NAME    ");
        assert_eq!(fat_label(&b16), Some((16, String::new())));
        bs[510] = 0;
        assert_eq!(fat_label(&bs), None);
    }

    #[test]
    fn os_release_fields() {
        let t = "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_CODENAME='noble'\n";
        assert_eq!(os_release_field(t, "ID").as_deref(), Some("ubuntu"));
        assert_eq!(
            os_release_field(t, "VERSION_CODENAME").as_deref(),
            Some("noble")
        );
        assert_eq!(os_release_field(t, "X"), None);
    }
}
