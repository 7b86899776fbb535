//! Provenance checks of a downloaded release: `SHA256SUMS` signed in `SHA256SUMS.sig`, and every
//! file's sha256 listed there. Used by `nodeforge verify DIR` and by `flash` before it writes
//! any byte.

use crate::sign::{self, Trust, Verified};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The checksum file every release and build directory carries.
pub const SUMS: &str = "SHA256SUMS";
/// The detached sshsig signature of [`SUMS`].
pub const SUMS_SIG: &str = "SHA256SUMS.sig";

/// Whom to trust: the options shared by `flash` and `verify`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Require SHA256SUMS.sig by a key of this OpenSSH allowed-signers file (`principals
    /// [namespaces="file"] ssh-ed25519 AAAA…` per line); flash checks before writing anything.
    #[arg(long, value_name = "FILE", conflicts_with = "signer_key")]
    pub allowed_signers: Option<PathBuf>,
    /// Require SHA256SUMS.sig by this public key (`KEY.pub`, or a line of
    /// <https://github.com/USER.keys>); flash checks before writing anything.
    #[arg(long, value_name = "KEY.pub")]
    pub signer_key: Option<PathBuf>,
}

impl TrustArgs {
    /// The trust these options name, `None` when neither is given.
    pub fn load(&self) -> Result<Option<Trust>> {
        match (&self.allowed_signers, &self.signer_key) {
            (Some(f), _) => Ok(Some(Trust::allowed_signers(f)?)),
            (None, Some(k)) => Ok(Some(Trust::signer_key(k)?)),
            (None, None) => Ok(None),
        }
    }
}

/// Arguments of `nodeforge verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Directory holding the downloaded release: SHA256SUMS, SHA256SUMS.sig and the assets.
    pub dir: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Skip files listed in SHA256SUMS that are not in DIR (at least one must be there).
    #[arg(long)]
    pub ignore_missing: bool,
}

/// One line of `SHA256SUMS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumLine {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// File name (relative to the directory).
    pub name: String,
}

/// Parse `sha256sum` output (`<hex>  <name>` or `<hex> *<name>`). Errors name the line.
pub fn parse_sums(text: &str) -> Result<Vec<SumLine>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("{SUMS} line {}: not `<sha256>  <file>`: {line:?}", i + 1);
        let (hex, rest) = line.split_once(' ').with_context(bad)?;
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .with_context(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            bail!(bad());
        }
        if name.contains('/') || name == ".." {
            bail!(
                "{SUMS} line {}: {name:?} is not a file of the same directory",
                i + 1
            );
        }
        out.push(SumLine {
            sha256: hex.to_ascii_lowercase(),
            name: name.to_string(),
        });
    }
    Ok(out)
}

/// Read `dir/SHA256SUMS` and check `dir/SHA256SUMS.sig` against `trust`. Returns who signed and
/// the parsed lines. Errors: either file missing, bad signature, untrusted key, bad lines.
pub fn verified_sums(dir: &Path, trust: &Trust) -> Result<(Verified, Vec<SumLine>)> {
    let sums_path = dir.join(SUMS);
    let sig_path = dir.join(SUMS_SIG);
    let sums = std::fs::read(&sums_path)
        .with_context(|| format!("reading {} (the release's checksums)", sums_path.display()))?;
    let sig = match std::fs::read(&sig_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} is missing: this release is not signed (nodeforge release --sign KEY signs it)",
            sig_path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", sig_path.display()));
        }
    };
    let who = sign::verify(
        trust,
        &sums,
        &sig,
        &sums_path.display().to_string(),
        sign::now(),
    )
    .with_context(|| {
        format!(
            "checking {} with {}",
            sig_path.display(),
            trust.file().display()
        )
    })?;
    let text = std::str::from_utf8(&sums)
        .with_context(|| format!("{} is not text", sums_path.display()))?;
    let lines = parse_sums(text).with_context(|| format!("in {}", sums_path.display()))?;
    Ok((who, lines))
}

/// What [`verify_dir`] checked.
#[derive(Debug, Clone)]
pub struct DirReport {
    pub signer: Verified,
    /// Files whose sha256 matched.
    pub ok: Vec<String>,
    /// Listed files that are not in the directory (only with `ignore_missing`).
    pub missing: Vec<String>,
}

/// Check a release directory: the signature of `SHA256SUMS`, then every listed file's sha256.
/// Errors list every mismatching (and, unless `ignore_missing`, missing) file.
pub fn verify_dir(dir: &Path, trust: &Trust, ignore_missing: bool) -> Result<DirReport> {
    let (signer, lines) = verified_sums(dir, trust)?;
    let (mut ok, mut missing, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    for l in &lines {
        let p = dir.join(&l.name);
        if !p.exists() {
            missing.push(l.name.clone());
            continue;
        }
        if crate::hash::sha256_file(&p)? == l.sha256 {
            ok.push(l.name.clone());
        } else {
            bad.push(l.name.clone());
        }
    }
    if !bad.is_empty() {
        bail!(
            "{} (signed) does not match: {}",
            dir.join(SUMS).display(),
            bad.join(", ")
        );
    }
    if !missing.is_empty() && !ignore_missing {
        bail!(
            "missing in {}: {} (download them, or pass --ignore-missing)",
            dir.display(),
            missing.join(", ")
        );
    }
    if ok.is_empty() {
        bail!("no file listed in {} is in {}", SUMS, dir.display());
    }
    Ok(DirReport {
        signer,
        ok,
        missing,
    })
}

/// Run `nodeforge verify`.
pub fn cmd_verify(a: &VerifyArgs) -> Result<()> {
    let Some(trust) = a.trust.load()? else {
        bail!("verify needs --allowed-signers FILE or --signer-key KEY.pub");
    };
    let r = verify_dir(&a.dir, &trust, a.ignore_missing)?;
    for n in &r.ok {
        println!("{n}: OK");
    }
    for n in &r.missing {
        println!("{n}: missing (skipped)");
    }
    eprintln!(
        "{}: {}; {} file(s) match",
        a.dir.join(SUMS).display(),
        r.signer,
        r.ok.len()
    );
    Ok(())
}

/// The pre-write check of `flash`: with a trust, refuse unless the `SHA256SUMS` beside `image`
/// is signed by a trusted key and lists `image`'s sha256 (and that of `bmap`, the block map
/// flash will follow, when there is one). Without a trust, print one line saying the image was
/// not checked. Runs before the target is opened.
pub fn check_before_flash(image: &Path, bmap: Option<&Path>, trust: &TrustArgs) -> Result<()> {
    let Some(trust) = trust.load()? else {
        eprintln!(
            "note: {} was not signature-checked (--allowed-signers FILE or --signer-key KEY.pub \
             checks it against the release's SHA256SUMS.sig before writing)",
            image.display()
        );
        return Ok(());
    };
    let refuse = |e: anyhow::Error| e.context(format!("refusing to write {}", image.display()));
    let dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (who, lines) = verified_sums(dir, &trust).map_err(refuse)?;
    let mut files = vec![image];
    files.extend(bmap);
    for f in files {
        let sha = crate::hash::sha256_file(f).map_err(refuse)?;
        if !lines.iter().any(|l| l.sha256 == sha) {
            return Err(refuse(anyhow::anyhow!(
                "the sha256 of {} ({sha}) is not in the signed {}",
                f.display(),
                dir.join(SUMS).display()
            )));
        }
    }
    eprintln!(
        "{}: {}; {} listed",
        dir.join(SUMS).display(),
        who,
        image.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_lines() {
        let h = "a".repeat(64);
        let t = format!("{h}  a.img.xz\n{} *b.bmap\n\n", "B".repeat(64));
        let l = parse_sums(&t).unwrap();
        assert_eq!(l[0].name, "a.img.xz");
        assert_eq!(l[1].sha256, "b".repeat(64));
        assert_eq!(l[1].name, "b.bmap");
        for bad in [
            "xyz  a\n".to_string(),
            format!("{h}\n"),
            format!("{h}  ../etc/passwd\n"),
            format!("{h}  \n"),
        ] {
            assert!(parse_sums(&bad).is_err(), "{bad}");
        }
    }
}
