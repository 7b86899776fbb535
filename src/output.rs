//! Build outputs: atomic files, compressed images, checksums and the manifest.
//! Every file is written under a temporary name and renamed when complete.

use crate::progress::Progress;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
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

/// Write `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let partial = Partial::new(dest);
    fs::write(partial.path(), bytes)
        .with_context(|| format!("writing {}", partial.path().display()))?;
    partial.commit()?;
    Ok(())
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

/// Copy `src` into `w` in large chunks, reporting progress.
fn pump(src: &Path, w: &mut dyn Write, step: &str) -> Result<()> {
    let mut f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading size of {}", src.display()))?
        .len();
    let progress = Progress::bytes(step, len);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])
            .with_context(|| format!("{step}: writing"))?;
        progress.inc(n as u64);
    }
    progress.finish();
    Ok(())
}

/// Compress the raw image `src` into `dest` (atomic).
pub fn compress(src: &Path, dest: &Path, how: Compression) -> Result<()> {
    let partial = Partial::new(dest);
    let out = File::create(partial.path())
        .with_context(|| format!("creating {}", partial.path().display()))?;
    let out = BufWriter::with_capacity(1 << 20, out);
    let step = format!("compressing {}", file_name(dest));
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
            pump(src, &mut enc, &step)?;
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
            pump(src, &mut enc, &step)?;
            let mut out = enc
                .finish()
                .with_context(|| format!("finishing {}", partial.path().display()))?;
            out.flush()
                .with_context(|| format!("writing {}", partial.path().display()))?;
        }
    }
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
            None => crate::fetch::sha256_file(f)?,
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
