//! `nodeforge release`: the publishable assets of a cluster in one directory.
//!
//! Generic images (one per board and role, no secrets) compressed with xz, their block maps and
//! manifests, the lock file, a release `manifest.json` and one `SHA256SUMS` over everything.
//! Files over GitHub's 2 GiB asset limit are warned about, or split with `--split`.
//! Every file lands under its final name by rename only.

use crate::output::{self, Compression};
use crate::pipeline::{self, BuildArgs, CommonArgs, Session};
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// GitHub rejects release assets larger than this.
pub const GITHUB_ASSET_LIMIT: u64 = 2 << 30;

/// Arguments of `nodeforge release`.
#[derive(clap::Args, Clone)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output directory for the release assets.
    #[arg(short, long, default_value = "dist")]
    pub out: PathBuf,
    /// Split assets larger than SIZE (e.g. `2G`) into `<file>.part-00`, `-01`… (see JOIN.txt).
    #[arg(long, value_parser = pipeline::parse_size)]
    pub split: Option<u64>,
    /// Total image size (e.g. `8G`); root grows into the space on first boot.
    #[arg(long, value_parser = pipeline::parse_size)]
    pub size: Option<u64>,
    /// Sign SHA256SUMS with this OpenSSH private key (no passphrase), writing SHA256SUMS.sig
    /// (`ssh-keygen -Y sign -n file` format).
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

/// What a release wrote.
#[derive(Debug, Clone)]
pub struct ReleaseOutput {
    /// Every file listed in `SHA256SUMS`, by name (joined files that were split included).
    pub checksummed: Vec<String>,
    /// Files that exist in the output directory, by name (`SHA256SUMS` included).
    pub assets: Vec<String>,
    /// Files that were split, by name.
    pub split: Vec<String>,
    /// Warnings printed (assets over the GitHub limit).
    pub warnings: Vec<String>,
}

/// Run `nodeforge release`.
pub fn cmd_release(a: &ReleaseArgs) -> Result<()> {
    let r = release(a)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for f in &r.assets {
        println!("{}", a.out.join(f).display());
    }
    Ok(())
}

/// Build the generic images of the cluster and collect the release assets into `a.out`.
pub fn release(a: &ReleaseArgs) -> Result<ReleaseOutput> {
    if a.split == Some(0) {
        bail!("--split needs a size above zero");
    }
    // A bad key fails before minutes of building.
    let key = a
        .sign
        .as_deref()
        .map(crate::sign::load_signing_key)
        .transpose()?;
    output::ensure_dir(&a.out)?;
    let mut s = Session::open(&a.common)?;
    // Build in a scratch directory inside the output directory: same file system, so moving
    // the finished files into place is a rename; it is removed however the build ends.
    let staging = tempfile::Builder::new()
        .prefix(".nodeforge-release-")
        .tempdir_in(&a.out)
        .with_context(|| format!("creating a scratch directory in {}", a.out.display()))?;
    let build = BuildArgs {
        nodes: Vec::new(),
        all: true,
        role: None,
        generic: true,
        common: a.common.clone(),
        out: staging.path().to_path_buf(),
        size: a.size,
        compress: vec![Compression::Xz],
        no_raw: true,
    };
    let dirs = pipeline::build(&mut s, &build)?;

    // Lock: the one just written beside the cluster, or the one --locked checked against.
    let lock_src = &s.lock_path;
    let lock_text = fs::read(lock_src)
        .with_context(|| format!("reading the lock file {}", lock_src.display()))?;
    let lock_tmp = staging.path().join("nodeforge.lock");
    fs::write(&lock_tmp, &lock_text).with_context(|| format!("writing {}", lock_tmp.display()))?;

    // Gather (staged path, final name) pairs.
    let mut moves: Vec<(PathBuf, String)> = Vec::new();
    let mut manifests: Vec<serde_json::Value> = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("image directory without a name")?;
        for suffix in ["img.xz", "img.bmap", "spdx.json"] {
            let f = format!("{name}.{suffix}");
            moves.push((dir.join(&f), f));
        }
        let m = dir.join("manifest.json");
        let text = fs::read_to_string(&m).with_context(|| format!("reading {}", m.display()))?;
        manifests
            .push(serde_json::from_str(&text).with_context(|| format!("parsing {}", m.display()))?);
        moves.push((m, format!("{name}.manifest.json")));
    }
    moves.push((lock_tmp, "nodeforge.lock".to_string()));

    // The release manifest: the cluster and every image's manifest, in one file.
    let signature = key.as_ref().map(|k| {
        serde_json::json!({
            "file": crate::provenance::SUMS_SIG,
            "format": "sshsig",
            "namespace": crate::sign::NAMESPACE,
            "key": crate::sign::fingerprint(k.public_key()),
        })
    });
    let index = serde_json::json!({
        "nodeforge_version": env!("CARGO_PKG_VERSION"),
        "cluster": s.cluster.name,
        "checksums": crate::provenance::SUMS,
        "signature": signature,
        "images": manifests,
    });
    let mut text = serde_json::to_string_pretty(&index).context("serialising manifest.json")?;
    text.push('\n');
    let index_tmp = staging.path().join("manifest.json");
    fs::write(&index_tmp, text).with_context(|| format!("writing {}", index_tmp.display()))?;
    moves.push((index_tmp, "manifest.json".to_string()));

    // Hash everything while it is still staged; split what is too large.
    let mut sums: Vec<(String, String)> = Vec::new();
    let mut final_moves: Vec<(PathBuf, String)> = Vec::new();
    let mut split_names = Vec::new();
    let mut warnings = Vec::new();
    let mut join_lines = Vec::new();
    for (path, name) in &moves {
        sums.push((crate::hash::sha256_file(path)?, name.clone()));
        let len = fs::metadata(path)
            .with_context(|| format!("reading size of {}", path.display()))?
            .len();
        match a.split {
            Some(chunk) if len > chunk => {
                let parts = split_file(path, chunk)?;
                for p in parts {
                    let pname = file_name(&p);
                    sums.push((crate::hash::sha256_file(&p)?, pname.clone()));
                    final_moves.push((p, pname));
                }
                join_lines.push(format!("cat {name}.part-* > {name}"));
                split_names.push(name.clone());
                fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            }
            _ => {
                if let Some(w) = oversize_warning(name, len, GITHUB_ASSET_LIMIT) {
                    warnings.push(w);
                }
                final_moves.push((path.clone(), name.clone()));
            }
        }
    }
    if a.split.is_some() && chunk_over_limit(a.split) {
        warnings.push(format!(
            "--split parts of {} are over GitHub's 2 GiB release asset limit",
            human(a.split.unwrap_or(0))
        ));
    }
    if !join_lines.is_empty() {
        let text = join_text(&join_lines);
        let p = staging.path().join("JOIN.txt");
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        sums.push((crate::hash::sha256_file(&p)?, "JOIN.txt".to_string()));
        final_moves.push((p, "JOIN.txt".to_string()));
    }
    sums.sort_by(|x, y| x.1.cmp(&y.1));
    let mut sums_text = String::new();
    for (h, n) in &sums {
        sums_text.push_str(&format!("{h}  {n}\n"));
    }
    let sums_tmp = staging.path().join("SHA256SUMS");
    fs::write(&sums_tmp, &sums_text).with_context(|| format!("writing {}", sums_tmp.display()))?;
    final_moves.push((sums_tmp, "SHA256SUMS".to_string()));
    if let Some(k) = &key {
        let sig = crate::sign::sign(k, sums_text.as_bytes())
            .context("signing SHA256SUMS with the --sign key")?;
        let p = staging.path().join(crate::provenance::SUMS_SIG);
        fs::write(&p, sig).with_context(|| format!("writing {}", p.display()))?;
        final_moves.push((p, crate::provenance::SUMS_SIG.to_string()));
    }

    // Stale outputs of an earlier release would confuse `cat <file>.part-*` or sha256sum -c:
    // remove parts and joined files of the names we publish, and an old JOIN.txt.
    let published: Vec<String> = moves.iter().map(|(_, n)| n.clone()).collect();
    remove_stale(&a.out, &published)?;

    let mut assets = Vec::new();
    for (from, name) in &final_moves {
        let to = a.out.join(name);
        fs::rename(from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        assets.push(name.clone());
    }
    assets.sort();
    staging
        .close()
        .with_context(|| format!("removing the scratch directory in {}", a.out.display()))?;
    Ok(ReleaseOutput {
        checksummed: sums.into_iter().map(|(_, n)| n).collect(),
        assets,
        split: split_names,
        warnings,
    })
}

fn chunk_over_limit(split: Option<u64>) -> bool {
    matches!(split, Some(c) if c > GITHUB_ASSET_LIMIT)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `1.5 GiB`-style sizes for messages.
fn human(n: u64) -> String {
    let gib = n as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

/// The warning for an asset of `len` bytes if it is over `limit`.
pub fn oversize_warning(name: &str, len: u64, limit: u64) -> Option<String> {
    (len > limit).then(|| {
        format!(
            "{name} is {}, over GitHub's 2 GiB release asset limit: upload it elsewhere, \
             or rerun with --split 2G",
            human(len)
        )
    })
}

/// Width of the part number: two digits, more when there are over 100 parts, so the shell
/// glob `<file>.part-*` sorts them in order.
fn part_width(parts: u64) -> usize {
    let mut w = 2;
    while 10u64.pow(w as u32) < parts {
        w += 1;
    }
    w
}

/// Split `path` into `<path>.part-00`, `-01`… of `chunk` bytes each (the last one shorter);
/// each part is written under a temporary name and renamed. Returns the parts in order.
pub fn split_file(path: &Path, chunk: u64) -> Result<Vec<PathBuf>> {
    if chunk == 0 {
        bail!("split size must be above zero");
    }
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading size of {}", path.display()))?
        .len();
    let count = len.div_ceil(chunk).max(1);
    let width = part_width(count);
    let mut parts = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..count {
        let mut dest = path.as_os_str().to_owned();
        dest.push(format!(".part-{i:0width$}"));
        let dest = PathBuf::from(dest);
        let partial = output::Partial::new(&dest);
        let mut out = File::create(partial.path())
            .with_context(|| format!("creating {}", partial.path().display()))?;
        let mut left = chunk.min(len - i * chunk);
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = f
                .read(&mut buf[..want])
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                bail!("{} shrank while it was being split", path.display());
            }
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", partial.path().display()))?;
            left -= n as u64;
        }
        out.flush()
            .with_context(|| format!("writing {}", partial.path().display()))?;
        drop(out);
        parts.push(partial.commit()?);
    }
    Ok(parts)
}

/// JOIN.txt: how to put split files back together and check them.
fn join_text(lines: &[String]) -> String {
    let mut t = String::from(
        "Some release assets were split to stay under GitHub's 2 GiB asset limit.\n\
         Download every asset into one directory, then run there:\n\n",
    );
    t.push_str("    ");
    t.push_str(&lines.join(" && "));
    t.push_str(" && sha256sum -c SHA256SUMS\n");
    t.push_str(
        "\nsha256sum -c checks the joined file and every part against SHA256SUMS.\n\
         If you downloaded only some assets, add --ignore-missing.\n",
    );
    t
}

/// Remove `<name>.part-*` and `<name>` for every published name, JOIN.txt and SHA256SUMS.sig,
/// from `dir`.
fn remove_stale(dir: &Path, published: &[String]) -> Result<()> {
    let rd = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in rd {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let n = e.file_name().to_string_lossy().into_owned();
        // An old signature would not match the new SHA256SUMS.
        let stale = n == "JOIN.txt"
            || n == crate::provenance::SUMS_SIG
            || published.iter().any(|p| {
                n == *p
                    || n.strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with(".part-"))
            });
        if stale && e.path().is_file() {
            fs::remove_file(e.path())
                .with_context(|| format!("removing the old {}", e.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parts_join_back_and_sort() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.img.xz");
        let data: Vec<u8> = (0..25_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&f, &data).unwrap();
        let parts = split_file(&f, 10_000).unwrap();
        let names: Vec<String> = parts.iter().map(|p| file_name(p)).collect();
        assert_eq!(
            names,
            ["a.img.xz.part-00", "a.img.xz.part-01", "a.img.xz.part-02"]
        );
        let mut joined = Vec::new();
        for p in &parts {
            joined.extend(fs::read(p).unwrap());
        }
        assert_eq!(joined, data);
        assert_eq!(fs::metadata(&parts[2]).unwrap().len(), 5_000);
        // No temporary names left.
        assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")));
        assert!(split_file(&f, 0).is_err());
        assert!(split_file(&dir.path().join("missing"), 10)
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }

    #[test]
    fn part_numbers_keep_glob_order() {
        assert_eq!(part_width(1), 2);
        assert_eq!(part_width(100), 2);
        assert_eq!(part_width(101), 3);
        assert_eq!(part_width(1000), 3);
        assert_eq!(part_width(1001), 4);
    }

    #[test]
    fn warns_only_over_the_limit() {
        assert!(oversize_warning("a", GITHUB_ASSET_LIMIT, GITHUB_ASSET_LIMIT).is_none());
        let w = oversize_warning("a.img.xz", GITHUB_ASSET_LIMIT + 1, GITHUB_ASSET_LIMIT).unwrap();
        assert!(w.contains("a.img.xz") && w.contains("--split"), "{w}");
        assert!(w.contains("2.0 GiB"), "{w}");
    }

    #[test]
    fn stale_parts_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "x.img.xz.part-00",
            "x.img.xz",
            "JOIN.txt",
            "keep.txt",
            "y.img.xz.part-00",
        ] {
            fs::write(dir.path().join(n), "old").unwrap();
        }
        remove_stale(dir.path(), &["x.img.xz".to_string()]).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["keep.txt", "y.img.xz.part-00"]);
    }
}
