//! SSH signatures in OpenSSH's `sshsig` format (what `ssh-keygen -Y sign` writes), and the
//! trust a verifier brings: an OpenSSH allowed-signers file or one public key.
//!
//! The format and the crypto are the `ssh-key` crate's (RustCrypto); this module only picks the
//! key, the namespace and which signers are trusted. Rules follow OpenSSH's PROTOCOL.sshsig and
//! the ALLOWED SIGNERS section of ssh-keygen(1): see `docs/provenance.md`.

use anyhow::{bail, Context, Result};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use std::path::{Path, PathBuf};

/// The sshsig namespace of release signatures: ssh-keygen's documented one for signing files
/// (`ssh-keygen -Y sign -n file`).
pub const NAMESPACE: &str = "file";

/// Read the private key at `path` for signing (OpenSSH format: ed25519 or ECDSA P-256/P-384).
/// Errors name the file: unreadable, a public key given by mistake, not a key, an RSA key, or
/// protected by a passphrase (nodeforge signs unattended, so the key must be unencrypted).
pub fn load_signing_key(path: &Path) -> Result<PrivateKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    if !text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        if PublicKey::from_openssh(text.trim()).is_ok() {
            bail!(
                "{} is a public key: --sign needs the private key (the file without .pub)",
                path.display()
            );
        }
        bail!(
            "{} is not an OpenSSH private key (expected a file starting with \
             -----BEGIN OPENSSH PRIVATE KEY-----, as ssh-keygen writes)",
            path.display()
        );
    }
    let key = PrivateKey::from_openssh(text.trim())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    if key.is_encrypted() {
        bail!(
            "the signing key {} is protected by a passphrase: nodeforge signs without asking, \
             so use a key without one (e.g. a dedicated release key from \
             `ssh-keygen -t ed25519 -N '' -f release-key`) and keep it secret",
            path.display()
        );
    }
    if matches!(key.algorithm(), ssh_key::Algorithm::Rsa { .. }) {
        // ssh-key 0.6.7 builds the RSA private key from the wrong primes and every RSA signature
        // fails (RustCrypto/SSH #387, fixed after 0.6.7); RSA signatures still verify.
        bail!(
            "{} is an RSA key: nodeforge signs with ed25519 or ECDSA keys \
             (`ssh-keygen -t ed25519`); RSA signatures made by ssh-keygen still verify",
            path.display()
        );
    }
    Ok(key)
}

/// Sign `msg` with `key` in namespace [`NAMESPACE`]; returns the armored signature
/// (`-----BEGIN SSH SIGNATURE-----`…, LF line endings, ending in a newline like ssh-keygen's).
pub fn sign(key: &PrivateKey, msg: &[u8]) -> Result<String> {
    let sig = key
        .sign(NAMESPACE, HashAlg::Sha512, msg)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("signing")?;
    let mut pem = sig
        .to_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("encoding the signature")?;
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    Ok(pem)
}

/// `SHA256:…` fingerprint of a public key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// One line of an allowed-signers file.
#[derive(Clone, Debug)]
pub struct AllowedSigner {
    /// Principal patterns (`*` and `?` wildcards, `!` negation), as written.
    pub principals: Vec<String>,
    /// `namespaces="…"`: namespace patterns this key may sign for; `None` means any.
    pub namespaces: Option<Vec<String>>,
    /// `valid-after=`: Unix seconds.
    pub valid_after: Option<i64>,
    /// `valid-before=`: Unix seconds.
    pub valid_before: Option<i64>,
    /// `cert-authority`: the key signs certificates; nodeforge does not verify certificate
    /// signatures, so such lines never match.
    pub cert_authority: bool,
    pub key: PublicKey,
    /// Line number in the file (1-based), for messages.
    pub line: usize,
}

/// Whom a verifier trusts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// An OpenSSH allowed-signers file (`--allowed-signers`).
    AllowedSigners {
        file: PathBuf,
        signers: Vec<AllowedSigner>,
    },
    /// One public key (`--signer-key KEY.pub`).
    Key { file: PathBuf, key: PublicKey },
}

impl Trust {
    /// Load an allowed-signers file. Errors name the file and line.
    pub fn allowed_signers(path: &Path) -> Result<Trust> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the allowed signers file {}", path.display()))?;
        let signers = parse_allowed_signers(&text)
            .with_context(|| format!("in the allowed signers file {}", path.display()))?;
        if signers.is_empty() {
            bail!("the allowed signers file {} lists no key", path.display());
        }
        Ok(Trust::AllowedSigners {
            file: path.to_path_buf(),
            signers,
        })
    }

    /// Load one OpenSSH public key (`ssh-ed25519 AAAA… comment`; the first key line of the file).
    pub fn signer_key(path: &Path) -> Result<Trust> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signer key {}", path.display()))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .with_context(|| format!("the signer key file {} is empty", path.display()))?;
        let key = PublicKey::from_openssh(line)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "{} is not an OpenSSH public key (expected `ssh-ed25519 AAAA… comment`, \
                     like a .pub file or a line of https://github.com/USER.keys)",
                    path.display()
                )
            })?;
        Ok(Trust::Key {
            file: path.to_path_buf(),
            key,
        })
    }

    /// The file the trust came from.
    pub fn file(&self) -> &Path {
        match self {
            Trust::AllowedSigners { file, .. } | Trust::Key { file, .. } => file,
        }
    }
}

/// Who signed, after a successful [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Principals of the matching allowed-signers line (empty for `--signer-key`).
    pub principals: Vec<String>,
    /// Key algorithm (`ssh-ed25519`…).
    pub algorithm: String,
    /// `SHA256:…` fingerprint of the signing key.
    pub fingerprint: String,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "good \"{NAMESPACE}\" signature")?;
        if !self.principals.is_empty() {
            write!(f, " for {}", self.principals.join(","))?;
        }
        write!(f, " with {} key {}", self.algorithm, self.fingerprint)
    }
}

/// Check the armored sshsig `sig` over `msg` against `trust`, in namespace [`NAMESPACE`], at
/// Unix time `now` (for `valid-after`/`valid-before`). `what` names the signed file in errors.
/// Errors: not an SSH signature, another namespace, a key nobody trusts, a bad signature.
pub fn verify(trust: &Trust, msg: &[u8], sig: &[u8], what: &str, now: i64) -> Result<Verified> {
    let sig = SshSig::from_pem(sig)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("the signature of {what} is not an SSH signature"))?;
    if sig.namespace() != NAMESPACE {
        bail!(
            "the signature of {what} is for namespace {:?}, not {NAMESPACE:?} \
             (sign with `ssh-keygen -Y sign -n {NAMESPACE}`)",
            sig.namespace()
        );
    }
    let signer = PublicKey::from(sig.public_key().clone());
    let fp = fingerprint(&signer);
    let principals = match trust {
        Trust::Key { file, key } => {
            if key.key_data() != sig.public_key() {
                bail!(
                    "{what} is signed by key {fp}, not by the key in {} ({})",
                    file.display(),
                    fingerprint(key)
                );
            }
            Vec::new()
        }
        Trust::AllowedSigners { file, signers } => {
            let same_key: Vec<&AllowedSigner> = signers
                .iter()
                .filter(|s| !s.cert_authority && s.key.key_data() == sig.public_key())
                .collect();
            if same_key.is_empty() {
                bail!(
                    "{what} is signed by key {fp}, which {} does not list",
                    file.display()
                );
            }
            let ok = same_key.iter().find(|s| {
                s.namespaces
                    .as_ref()
                    .is_none_or(|ns| pattern_list_matches(ns, NAMESPACE))
                    && s.valid_after.is_none_or(|t| now >= t)
                    && s.valid_before.is_none_or(|t| now < t)
            });
            match ok {
                Some(s) => s.principals.clone(),
                None => bail!(
                    "{what} is signed by key {fp}, but line {} of {} does not allow it now \
                     (namespaces, valid-after or valid-before)",
                    same_key[0].line,
                    file.display()
                ),
            }
        }
    };
    signer
        .verify(NAMESPACE, msg, &sig)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("BAD signature: {what} does not match its signature"))?;
    Ok(Verified {
        principals,
        algorithm: signer.algorithm().to_string(),
        fingerprint: fp,
    })
}

/// Parse an allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS): per line `principals
/// [options] keytype base64-key [comment]`; `#` comments and blank lines ignored; options
/// `cert-authority`, `namespaces="…"`, `valid-after="…"`, `valid-before="…"`.
pub fn parse_allowed_signers(text: &str) -> Result<Vec<AllowedSigner>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let (principals, rest) = split_field(line);
        if rest.is_empty() {
            bail!("line {n}: no key after the principals");
        }
        let principals: Vec<String> = unquote(principals).split(',').map(str::to_string).collect();
        // Options come before the key type; a field that parses as a key starts the key.
        let (options, key_text) = match PublicKey::from_openssh(rest) {
            Ok(_) => ("", rest),
            Err(_) => split_field(rest),
        };
        let key = PublicKey::from_openssh(key_text)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("line {n}: no valid OpenSSH public key"))?;
        let mut s = AllowedSigner {
            principals,
            namespaces: None,
            valid_after: None,
            valid_before: None,
            cert_authority: false,
            key,
            line: n,
        };
        for opt in split_options(options) {
            let (k, v) = match opt.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(unquote(v))),
                None => (opt.to_ascii_lowercase(), None),
            };
            match (k.as_str(), v) {
                ("cert-authority", None) => s.cert_authority = true,
                ("namespaces", Some(v)) => {
                    s.namespaces = Some(v.split(',').map(str::to_string).collect())
                }
                ("valid-after", Some(v)) => {
                    s.valid_after =
                        Some(parse_time(v).with_context(|| format!("line {n}: valid-after"))?)
                }
                ("valid-before", Some(v)) => {
                    s.valid_before =
                        Some(parse_time(v).with_context(|| format!("line {n}: valid-before"))?)
                }
                _ => bail!("line {n}: unknown option {opt:?}"),
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// The first whitespace-separated field (double quotes keep spaces) and the trimmed rest.
fn split_field(s: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], s[i..].trim_start()),
            _ => {}
        }
    }
    (s, "")
}

/// Comma-separated options, commas inside double quotes kept.
fn split_options(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(s)
}

/// OpenSSH pattern list: `*`/`?` wildcards, `!pattern` negates (a negated match wins).
fn pattern_list_matches(patterns: &[String], s: &str) -> bool {
    let mut hit = false;
    for p in patterns {
        match p.strip_prefix('!') {
            Some(neg) if wildcard(neg.as_bytes(), s.as_bytes()) => return false,
            Some(_) => {}
            None => hit |= wildcard(p.as_bytes(), s.as_bytes()),
        }
    }
    hit
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

/// `YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]` as Unix seconds. OpenSSH reads a time without `Z` as
/// local time; nodeforge reads every time as UTC (what CI machines use).
pub fn parse_time(v: &str) -> Result<i64> {
    let d = v.strip_suffix(['Z', 'z']).unwrap_or(v);
    if !d.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&d.len()) {
        bail!("time {v:?} is not YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]");
    }
    let num = |a: usize, b: usize| d[a..b].parse::<i64>().unwrap_or(0);
    let (y, m, day) = (num(0, 4), num(4, 6), num(6, 8));
    let (hh, mm, ss) = match d.len() {
        8 => (0, 0, 0),
        12 => (num(8, 10), num(10, 12), 0),
        _ => (num(8, 10), num(10, 12), num(12, 14)),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        bail!("time {v:?} is out of range");
    }
    Ok(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the Unix epoch now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed test key from a seed: no private key text in the repository.
    fn key() -> PrivateKey {
        ssh_key::private::Ed25519Keypair::from_seed(&[7u8; 32]).into()
    }

    #[test]
    fn signs_and_verifies_with_one_key() {
        let k = key();
        let sig = sign(&k, b"hello\n").unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----\n"), "{sig}");
        let trust = Trust::Key {
            file: "k.pub".into(),
            key: k.public_key().clone(),
        };
        let v = verify(&trust, b"hello\n", sig.as_bytes(), "x", 0).unwrap();
        assert_eq!(v.algorithm, "ssh-ed25519");
        assert!(v.fingerprint.starts_with("SHA256:"));
        let e = verify(&trust, b"hello!\n", sig.as_bytes(), "x", 0).unwrap_err();
        assert!(format!("{e:#}").contains("BAD signature"), "{e:#}");
        assert!(verify(&trust, b"hello\n", b"garbage", "x", 0).is_err());
    }

    #[test]
    fn allowed_signers_lines() {
        let pubkey = key().public_key().to_openssh().unwrap();
        let text = format!(
            "# comment\n\nme@home,ci@*  {pubkey}\n\
             \"a b\" namespaces=\"git,file\",valid-after=\"20200101\" {pubkey}\n\
             ca@x cert-authority {pubkey}\n"
        );
        let s = parse_allowed_signers(&text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].principals, ["me@home", "ci@*"]);
        assert_eq!(s[0].line, 3);
        assert!(s[0].namespaces.is_none());
        assert_eq!(s[1].principals, ["a b"]);
        assert_eq!(s[1].namespaces.as_deref().unwrap(), ["git", "file"]);
        assert_eq!(s[1].valid_after, Some(1_577_836_800));
        assert!(s[2].cert_authority);
        let e = parse_allowed_signers("me@home bogus=1 ssh-ed25519 AAAA\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 1"), "{e:#}");
        assert!(parse_allowed_signers("me@home\n").is_err());
    }

    #[test]
    fn allowed_signers_options_are_enforced() {
        let k = key();
        let pubkey = k.public_key().to_openssh().unwrap();
        let sig = sign(&k, b"m").unwrap();
        let trust = |line: &str| Trust::AllowedSigners {
            file: "allowed".into(),
            signers: parse_allowed_signers(line).unwrap(),
        };
        let ok = |t: &Trust, now| verify(t, b"m", sig.as_bytes(), "m", now);
        assert_eq!(
            ok(&trust(&format!("me@x {pubkey}")), 0).unwrap().principals,
            ["me@x"]
        );
        assert!(ok(&trust(&format!("me@x namespaces=\"git\" {pubkey}")), 0).is_err());
        assert!(ok(&trust(&format!("me@x namespaces=\"f*\" {pubkey}")), 0).is_ok());
        assert!(ok(&trust(&format!("me@x namespaces=\"*,!file\" {pubkey}")), 0).is_err());
        let t = trust(&format!("me@x valid-after=\"20250101Z\" {pubkey}"));
        assert!(ok(&t, 1_700_000_000).is_err());
        assert!(ok(&t, 1_800_000_000).is_ok());
        let t = trust(&format!("me@x valid-before=\"202501010000\" {pubkey}"));
        assert!(ok(&t, 1_800_000_000).is_err());
        assert!(ok(&trust(&format!("me@x cert-authority {pubkey}")), 0).is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("19700101").unwrap(), 0);
        assert_eq!(parse_time("20200101Z").unwrap(), 1_577_836_800);
        assert_eq!(parse_time("202001010001").unwrap(), 1_577_836_860);
        assert_eq!(parse_time("20200101000102Z").unwrap(), 1_577_836_862);
        assert_eq!(parse_time("20240229").unwrap(), 1_709_164_800);
        assert!(parse_time("2020").is_err());
        assert!(parse_time("20201301").is_err());
        assert!(parse_time("2020010x").is_err());
    }
}
