//! Build outputs: atomic files, compressed images, checksums and the manifest.
//! Every file is written under a temporary name and renamed when complete.

use crate::progress::Progress;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Compressed forms of the raw image a build can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Xz,
    Gz,
}

impl Compression {
    /// File name suffix added after `.img`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Gz => "gz",
        }
    }
}

/// A file being written under a temporary name; removed on drop unless committed.
pub struct Partial {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Partial {
    /// Reserve `dest`; the bytes go to `dest.partial` until [`Partial::commit`].
    pub fn new(dest: &Path) -> Self {
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".partial");
        Partial {
            tmp: PathBuf::from(tmp),
            dest: dest.to_path_buf(),
            committed: false,
        }
    }

    /// The temporary path to write to.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Rename the finished file to its final name.
    pub fn commit(mut self) -> Result<PathBuf> {
        fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `dest` atomically (mode 0644).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(dest, bytes, 0o644)
}

/// Write `bytes` to `dest` atomically with `mode`, set before any byte is written (secrets are
/// never readable by others, not even for a moment), synced, then renamed into place.
pub fn write_atomic_mode(dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".nodeforge.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", dest.display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming a temporary file to {}", dest.display()))?;
    Ok(())
}

/// Mode of build outputs that hold a node's secrets (its image and compressed images).
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of a directory made for such outputs.
pub const SECRET_DIR_MODE: u32 = 0o700;

/// Create (or truncate) `path` with `mode`, set before any byte is written: a node image holds
/// its cluster token and node password, so no other user may read it even while it is written.
pub fn create_with_mode(path: &Path, mode: u32) -> Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // `mode` at creation is masked by the umask and ignored for an existing file: set it outright.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(f)
}

/// Make sure `dir` exists, is a directory and is private (mode 0700): it holds secret outputs.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    ensure_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(SECRET_DIR_MODE))
        .with_context(|| format!("setting the mode of output directory {}", dir.display()))
}

/// Permission bits of `path` (`0o644`, `0o600`…).
pub fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// Make sure `dir` exists and is a directory.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "output path {} exists and is not a directory",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating output directory {}", dir.display()))
}

/// Copy `src` into `w` in large chunks, reporting progress on `progress`.
fn pump(src: &Path, w: &mut dyn Write, step: &str, progress: &Progress) -> Result<()> {
    crate::hash::for_each_chunk(src, &mut |chunk| {
        w.write_all(chunk)
            .with_context(|| format!("{step}: writing"))?;
        progress.inc(chunk.len() as u64);
        Ok(())
    })
}

/// Compress the raw image `src` into `dest` (atomic). `dest` gets the permission bits of `src`
/// from its creation on: a node image's secrets stay private in its compressed forms, a generic
/// image's compressed form stays world-readable.
pub fn compress(src: &Path, dest: &Path, how: Compression) -> Result<()> {
    let partial = Partial::new(dest);
    let out = create_with_mode(partial.path(), mode_of(src)? & 0o777)?;
    let out = BufWriter::with_capacity(1 << 20, out);
    let step = format!("compressing {}", file_name(dest));
    let len = fs::metadata(src)
        .with_context(|| format!("reading size of {}", src.display()))?
        .len();
    // The step's time (printed by `finish`) covers the encoder's final flush too.
    let progress = Progress::bytes(&step, len);
    match how {
        Compression::Xz => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads)
                .preset(6)
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .context("setting up the xz encoder")?;
            let mut enc = liblzma::write::XzEncoder::new_stream(out, stream);
            pump(src, &mut enc, &step, &progress)?;
            let mut out = enc
                .finish()
                .with_context(|| format!("finishing {}", partial.path().display()))?;
            out.flush()
                .with_context(|| format!("writing {}", partial.path().display()))?;
            out.get_ref().sync_all().ok();
        }
        Compression::Gz => {
            // mtime 0 and no file name in the header: the same input gives the same bytes.
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(out, flate2::Compression::new(6));
            pump(src, &mut enc, &step, &progress)?;
            let mut out = enc
                .finish()
                .with_context(|| format!("finishing {}", partial.path().display()))?;
            out.flush()
                .with_context(|| format!("writing {}", partial.path().display()))?;
        }
    }
    progress.finish();
    partial.commit()?;
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Write `SHA256SUMS` in `dir` for `files` (in `sha256sum -c` format, sorted by name). A file
/// whose hash the caller already has comes with it, so big images are not read twice.
pub fn write_sha256sums(dir: &Path, files: &[(PathBuf, Option<String>)]) -> Result<()> {
    let mut lines: Vec<(String, String)> = Vec::new();
    for (f, known) in files {
        let sum = match known {
            Some(s) => s.clone(),
            None => crate::hash::sha256_file(f)?,
        };
        lines.push((file_name(f), sum));
    }
    lines.sort();
    let text: String = lines
        .iter()
        .map(|(name, sum)| format!("{sum}  {name}\n"))
        .collect();
    write_atomic(&dir.join("SHA256SUMS"), text.as_bytes())
}

/// One input of a build, as recorded in the manifest.
#[derive(Clone, Debug, Serialize)]
pub struct ManifestInput {
    pub name: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

/// `manifest.json`: what an image was made from. Never holds secrets.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub nodeforge_version: String,
    pub cluster: String,
    pub node: Option<String>,
    pub role: String,
    pub board: String,
    pub family: String,
    pub k3s_version: String,
    pub generic: bool,
    pub instance_id: Option<String>,
    /// File name of the image's SPDX 2.3 SBOM beside this manifest (`<name>.spdx.json`).
    pub sbom: String,
    pub source_date_epoch: i64,
    pub inputs: Vec<ManifestInput>,
    pub image: ManifestImage,
}

/// The image part of the manifest.
#[derive(Clone, Debug, Serialize)]
pub struct ManifestImage {
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub partitions: crate::partition::DiskLayout,
}

/// Write `manifest.json` into `dir`.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<PathBuf> {
    let path = dir.join("manifest.json");
    let mut text = serde_json::to_string_pretty(m).context("serialising manifest.json")?;
    text.push('\n');
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn partial_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.img");
        {
            let p = Partial::new(&dest);
            fs::write(p.path(), b"x").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let p = Partial::new(&dest);
        fs::write(p.path(), b"y").unwrap();
        p.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"y");
    }

    #[test]
    fn sparse_files_hash_and_compress_like_their_bytes() {
        use crate::hash::{sha256_file, sha256_file_background};
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("sparse.img");
        let f = File::create(&src).unwrap();
        // Data, a hole of 9 MiB (more than one chunk), data, then a trailing hole.
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&[7u8; 5000], (9 << 20) + 123).unwrap();
        f.set_len(13 << 20).unwrap();
        drop(f);
        let bytes = fs::read(&src).unwrap();
        let want = hex::encode(Sha256::digest(&bytes));
        assert_eq!(sha256_file(&src).unwrap(), want);
        let out = std::process::Command::new("sha256sum")
            .arg(&src)
            .output()
            .expect("sha256sum (coreutils) is needed");
        assert_eq!(String::from_utf8_lossy(&out.stdout)[..64], want);
        // A background hash is picked up by the next call; a changed file is hashed again.
        sha256_file_background(&src);
        assert_eq!(sha256_file(&src).unwrap(), want);
        let other = dir.path().join("other");
        fs::write(&other, b"one").unwrap();
        sha256_file_background(&other);
        fs::write(&other, b"two!").unwrap();
        assert_eq!(
            sha256_file(&other).unwrap(),
            hex::encode(Sha256::digest(b"two!"))
        );

        let xz = dir.path().join("sparse.img.xz");
        compress(&src, &xz, Compression::Xz).unwrap();
        let out = std::process::Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .output()
            .expect("xz is needed");
        assert!(out.status.success());
        assert_eq!(out.stdout, bytes);
    }

    #[test]
    fn compressed_outputs_are_deterministic_and_decode() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data).unwrap();
        for how in [Compression::Xz, Compression::Gz] {
            let a = dir.path().join(format!("a.{}", how.suffix()));
            let b = dir.path().join(format!("b.{}", how.suffix()));
            compress(&src, &a, how).unwrap();
            compress(&src, &b, how).unwrap();
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
            let tool = if how == Compression::Xz { "xz" } else { "gzip" };
            let out = std::process::Command::new(tool)
                .arg("-dc")
                .arg(&a)
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout, data);
        }
    }
}
