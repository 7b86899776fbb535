//! Known base images, selectable by name in `cluster.toml` (`base = "raspios-lite-arm64"`).
//!
//! The list lives in `catalog/bases.toml` (embedded at build time); every entry pins a URL
//! and its sha256 and says where the hash was published.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::base::Family;
use crate::fetch::{Arch, Source};
use crate::hash::{normalize_sha256, normalize_sha512};

const BASES_TOML: &str = include_str!("../catalog/bases.toml");

/// One known base image.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Name used in `cluster.toml`.
    #[serde(default)]
    pub name: String,
    pub description: String,
    pub url: String,
    /// Lowercase hex sha256; empty when not pinned.
    #[serde(default)]
    pub sha256: String,
    /// Lowercase hex sha512 (Debian publishes only SHA512SUMS); empty when not pinned. With
    /// neither pinned, `[boards.*]` must give `sha256` or `sha512`.
    #[serde(default)]
    pub sha512: String,
    /// `raspios`, `ubuntu-raspi`, `debian-raspi` or `debian-generic`.
    pub family: String,
    pub arch: Arch,
    /// Where the sha256 was taken from.
    pub sha256_source: String,
    /// False when the hash could not be checked against an upstream publication.
    pub verified: bool,
}

impl CatalogEntry {
    /// The pinned source of this base. `sha256`/`sha512` come from `[boards.*]`: required when
    /// the catalog pins neither, and must agree with the catalog's pins when it has them.
    pub fn source(&self, sha256: Option<&str>, sha512: Option<&str>) -> Result<Source> {
        let board_key = "sha256 or sha512 in the board's [boards.<board>] table of cluster.toml";
        let g256 = sha256
            .map(normalize_sha256)
            .transpose()
            .with_context(|| format!("sha256 given for base {:?}", self.name))?;
        let g512 = sha512
            .map(normalize_sha512)
            .transpose()
            .with_context(|| format!("sha512 given for base {:?}", self.name))?;
        for (kind, pinned, given) in [
            ("sha256", &self.sha256, &g256),
            ("sha512", &self.sha512, &g512),
        ] {
            if let (false, Some(g)) = (pinned.is_empty(), given) {
                if g != pinned {
                    bail!(
                        "base {:?} is pinned by the catalog to {kind} {pinned}, but {g} was \
                         given; give the URL instead of the name to use another file",
                        self.name
                    );
                }
            }
        }
        let pick = |pinned: &String, given: Option<String>| {
            if pinned.is_empty() {
                given
            } else {
                Some(pinned.clone())
            }
        };
        let s256 = pick(&self.sha256, g256);
        let s512 = pick(&self.sha512, g512);
        if s256.is_none() && s512.is_none() {
            bail!(
                "catalog base {:?} has no pinned hash ({}); give {board_key} after checking \
                 the file against {}",
                self.name,
                self.url,
                self.sha256_source
            );
        }
        Source::pinned(&self.url, s256.as_deref(), s512.as_deref())
            .with_context(|| format!("catalog base {:?}", self.name))
    }

    /// The base family.
    pub fn family(&self) -> Result<Family> {
        parse_family(&self.family).with_context(|| format!("catalog base {:?}", self.name))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    base: std::collections::BTreeMap<String, CatalogEntry>,
}

/// Map a family name used in the catalog to [`Family`].
pub fn parse_family(s: &str) -> Result<Family> {
    Ok(match s {
        "raspios" => Family::Raspios,
        "ubuntu-raspi" => Family::UbuntuRaspi,
        "debian-raspi" => Family::DebianRaspi,
        "debian-generic" => Family::DebianGeneric,
        other => bail!(
            "unknown base family {other:?} (raspios, ubuntu-raspi, debian-raspi, debian-generic)"
        ),
    })
}

/// All catalog entries, sorted by name.
pub fn entries() -> Result<Vec<CatalogEntry>> {
    parse(BASES_TOML).context("parsing the embedded catalog/bases.toml")
}

fn parse(text: &str) -> Result<Vec<CatalogEntry>> {
    let file: CatalogFile = toml::from_str(text)?;
    let mut out = Vec::new();
    for (name, mut e) in file.base {
        e.name = name;
        if !e.sha256.is_empty() {
            e.sha256 = normalize_sha256(&e.sha256).with_context(|| format!("base {:?}", e.name))?;
        }
        if !e.sha512.is_empty() {
            e.sha512 = normalize_sha512(&e.sha512).with_context(|| format!("base {:?}", e.name))?;
        }
        Source::new(&e.url, &"0".repeat(64)).with_context(|| format!("base {:?}", e.name))?;
        e.family()?;
        out.push(e);
    }
    Ok(out)
}

/// The catalog entry called `name`.
pub fn lookup(name: &str) -> Result<Option<CatalogEntry>> {
    Ok(entries()?.into_iter().find(|e| e.name == name))
}

/// Resolve `base` from `cluster.toml`: a catalog name, or a URL / absolute path that needs
/// `sha256` or `sha512`. The family is known for catalog entries and left to detection otherwise.
pub fn resolve_base(
    name_or_url: &str,
    sha256: Option<&str>,
    sha512: Option<&str>,
) -> Result<(Source, Option<Family>)> {
    let key = name_or_url.trim();
    if let Some(e) = lookup(key)? {
        return Ok((e.source(sha256, sha512)?, Some(e.family()?)));
    }
    let looks_like_location = key.contains("://") || key.starts_with('/');
    if !looks_like_location {
        let names: Vec<String> = entries()?.into_iter().map(|e| e.name).collect();
        bail!(
            "unknown base {key:?}: not a catalog name ({}) nor a URL",
            names.join(", ")
        );
    }
    if sha256.is_none() && sha512.is_none() {
        return Err(anyhow!(
            "base {key:?} is a URL or path: give its `sha256` or `sha512` in the board's \
             [boards.<board>] table of cluster.toml"
        ));
    }
    Ok((Source::pinned(key, sha256, sha512)?, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses() {
        let all = entries().unwrap();
        let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        for n in [
            "raspios-lite-arm64",
            "ubuntu-24.04-raspi-arm64",
            "debian-13-generic-amd64",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        for e in &all {
            assert!(e.url.starts_with("https://"), "{}", e.url);
            assert!(!e.url.contains("/latest/"), "{} is not a dated URL", e.url);
        }
    }

    #[test]
    fn resolve() {
        let (src, fam) = resolve_base("raspios-lite-arm64", None, None).unwrap();
        assert_eq!(fam, Some(Family::Raspios));
        assert_eq!(src.sha256.len(), 64);
        assert!(resolve_base("raspios-lite-arm64", Some(&"0".repeat(64)), None).is_err());
        resolve_base("raspios-lite-arm64", Some(&src.sha256.to_uppercase()), None).unwrap();

        // No hash pinned in the catalog: the caller must supply one, and the hint names the key.
        let err = resolve_base("debian-13-generic-amd64", None, None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("sha256 or sha512 in the board's [boards.<board>]"),
            "{msg}"
        );
        assert!(!msg.contains("base_sha256"), "{msg}");
        let (src, fam) =
            resolve_base("debian-13-generic-amd64", Some(&"b".repeat(64)), None).unwrap();
        assert_eq!(fam, Some(Family::DebianGeneric));
        assert!(src.url.contains("/20260914-2601/"));
        let (src, _) =
            resolve_base("debian-13-generic-amd64", None, Some(&"C".repeat(128))).unwrap();
        assert_eq!(
            (src.sha256.as_str(), src.sha512.as_deref()),
            ("", Some("c".repeat(128).as_str()))
        );
        assert!(resolve_base("debian-13-generic-amd64", None, Some("abc")).is_err());

        let (src, fam) = resolve_base("/tmp/x.img", Some(&"A".repeat(64)), None).unwrap();
        assert_eq!((src.url.as_str(), fam), ("/tmp/x.img", None));
        assert_eq!(src.sha256, "a".repeat(64));
        let err = resolve_base("https://x/y.img", None, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("`sha256` or `sha512`"),
            "{err:#}"
        );
        resolve_base("https://x/y.img", None, Some(&"d".repeat(128))).unwrap();
        let err = resolve_base("no-such-base", None, None).unwrap_err();
        assert!(format!("{err:#}").contains("raspios-lite-arm64"), "{err:#}");
    }

    #[test]
    fn rejects_bad_entries() {
        let bad = r#"
[base.x]
description = "d"
url = "https://a/b"
sha256 = "zz"
family = "raspios"
arch = "arm64"
sha256_source = "s"
verified = false
"#;
        assert!(parse(bad).is_err());
        assert!(parse(&bad.replace("\"zz\"", &format!("\"{}\"", "a".repeat(64)))).is_ok());
        assert!(parse(&bad.replace("https://a/b", "ftp://a/b")).is_err());
        assert!(parse(
            &bad.replace("\"zz\"", &format!("\"{}\"", "a".repeat(64)))
                .replace("raspios", "windows")
        )
        .is_err());
    }
}
