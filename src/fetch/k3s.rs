//! The k3s bundle: binary, install.sh, airgap images and the release's sha256sum file, from
//! GitHub releases or a mirror.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Url;

use super::{fetch_source, is_not_found, parse_location, Arch, Fetched, Fetcher, Location, Source};
use crate::hash::normalize_sha256;
use crate::lock::{Lock, LockEntry};

/// Default `k3s.mirror`: GitHub releases of k3s-io/k3s.
pub const DEFAULT_K3S_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";

/// Everything needed to install k3s offline on a node of one architecture.
#[derive(Clone, Debug)]
pub struct K3sBundle {
    pub version: String,
    pub arch: Arch,
    pub binary: Fetched,
    pub install_sh: Fetched,
    pub airgap: Option<Fetched>,
    /// The release's `sha256sum-<arch>.txt`: the trust root for `binary` and `airgap`.
    pub sums: Fetched,
}

impl K3sBundle {
    /// Lock entries for every file of the bundle (names from [`k3s_lock_name`]).
    pub fn lock_entries(&self) -> Vec<LockEntry> {
        let a = self.arch.as_str();
        let v = &self.version;
        let mut e = vec![
            self.sums
                .lock_entry(&k3s_lock_name(v, &format!("sha256sum-{a}.txt"))),
            self.binary
                .lock_entry(&k3s_lock_name(v, k3s_binary_asset(self.arch))),
            self.install_sh.lock_entry(&k3s_lock_name(v, "install.sh")),
        ];
        if let Some(ag) = &self.airgap {
            e.push(ag.lock_entry(&k3s_lock_name(v, &format!("k3s-airgap-images-{a}.tar.zst"))));
        }
        e
    }
}

/// Lock entry name of a k3s release file: `k3s/<version>/<asset>`.
pub fn k3s_lock_name(version: &str, asset: &str) -> String {
    format!("k3s/{version}/{asset}")
}

/// Release asset name of the k3s binary: `k3s` (amd64) or `k3s-arm64`.
pub fn k3s_binary_asset(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "k3s",
        Arch::Arm64 => "k3s-arm64",
    }
}

/// A k3s mirror: a release-download URL prefix or a local folder.
enum Mirror {
    GitHub,
    Http(String),
    Dir(PathBuf),
}

/// Where a mirror keeps a release's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MirrorLayout {
    /// Like GitHub's release downloads: `<mirror>/<version>/<asset>`.
    Versioned,
    /// One release's files directly in the mirror: `<mirror>/<asset>`.
    Flat,
}

/// The layouts a mirror may use, described for error messages.
const LAYOUT_HELP: &str = "a k3s mirror is laid out like GitHub's release downloads \
    (<mirror>/<version>/k3s, .../k3s-arm64, .../sha256sum-amd64.txt, .../sha256sum-arm64.txt, \
    .../install.sh) or holds one release's files directly (<mirror>/k3s-arm64, \
    <mirror>/sha256sum-arm64.txt, <mirror>/install.sh; <version> with `+` written as `%2B` in URLs)";

impl Mirror {
    fn parse(mirror: &str) -> Result<Mirror> {
        let m = mirror.trim().trim_end_matches('/');
        if m.is_empty() || m == DEFAULT_K3S_MIRROR {
            return Ok(Mirror::GitHub);
        }
        match parse_location(m).with_context(|| format!("k3s mirror {mirror:?}"))? {
            Location::Http(_) => Ok(Mirror::Http(m.to_string())),
            Location::File(p) => Ok(Mirror::Dir(p)),
        }
    }

    /// The layouts to try, in order.
    fn layouts(&self) -> &'static [MirrorLayout] {
        match self {
            Mirror::GitHub => &[MirrorLayout::Versioned],
            _ => &[MirrorLayout::Versioned, MirrorLayout::Flat],
        }
    }

    /// URL of a release asset in `layout`.
    fn asset(&self, layout: MirrorLayout, version: &str, asset: &str) -> String {
        let v = version.replace('+', "%2B");
        match (self, layout) {
            (Mirror::GitHub, _) => format!("{DEFAULT_K3S_MIRROR}/{v}/{asset}"),
            (Mirror::Http(m), MirrorLayout::Versioned) => format!("{m}/{v}/{asset}"),
            (Mirror::Http(m), MirrorLayout::Flat) => format!("{m}/{asset}"),
            (Mirror::Dir(d), MirrorLayout::Versioned) => file_url(&d.join(version).join(asset)),
            (Mirror::Dir(d), MirrorLayout::Flat) => file_url(&d.join(asset)),
        }
    }

    /// URL of install.sh: pinned to the k3s repository at `version` for GitHub, else the
    /// mirror's copy.
    fn install_sh(&self, layout: MirrorLayout, version: &str) -> String {
        match self {
            Mirror::GitHub => format!(
                "https://raw.githubusercontent.com/k3s-io/k3s/{}/install.sh",
                version.replace('+', "%2B")
            ),
            _ => self.asset(layout, version, "install.sh"),
        }
    }
}

fn file_url(path: &Path) -> String {
    Url::from_file_path(path)
        .map(|u| u.to_string())
        .unwrap_or_else(|()| path.display().to_string())
}

/// Find the sha256 of `asset` in a `sha256sum` listing (`<hex>  <name>` lines).
pub fn find_in_sha256sums(text: &str, asset: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let hash = parts.next()?;
        let name = parts.next()?.trim_start_matches('*');
        let name = name.strip_prefix("./").unwrap_or(name);
        if name == asset && parts.next().is_none() {
            normalize_sha256(hash).ok()
        } else {
            None
        }
    })
}

/// Fetch k3s `version` for `arch` from `mirror` (empty = GitHub releases), verified against
/// the release's `sha256sum-<arch>.txt`. `pins` supplies hashes recorded earlier (the sums file
/// and install.sh are otherwise trusted on first use); the caller records
/// [`K3sBundle::lock_entries`].
pub fn k3s_bundle(
    f: &Fetcher,
    mirror: &str,
    version: &str,
    arch: Arch,
    airgap: bool,
    pins: &Lock,
) -> Result<K3sBundle> {
    if version.is_empty() || version.contains('/') || version.contains(char::is_whitespace) {
        bail!("invalid k3s version {version:?}");
    }
    let m = Mirror::parse(mirror)?;
    let a = arch.as_str();

    let fetch_maybe_pinned = |url: String, asset: &str, what: &str| -> Result<Fetched> {
        let name = k3s_lock_name(version, asset);
        match pins.get(&name) {
            Some(pin) => fetch_source(f, &Source::new(&url, &pin.sha256)?, what)
                .with_context(|| format!("{name} is pinned in the lock to sha256 {}", pin.sha256)),
            None => {
                let (path, sha) = f.fetch_unpinned(&url, what)?;
                Fetched::new(
                    Source {
                        url,
                        sha256: sha,
                        sha512: None,
                    },
                    path,
                )
            }
        }
    };

    // The sums file decides the layout: the one the lock recorded, else the first that has it.
    let sums_asset = format!("sha256sum-{a}.txt");
    let sums_what = format!("k3s {version} {sums_asset}");
    let locked_layout = pins
        .get(&k3s_lock_name(version, &sums_asset))
        .and_then(|pin| {
            m.layouts()
                .iter()
                .copied()
                .find(|l| m.asset(*l, version, &sums_asset) == pin.url)
        });
    let mut tried = Vec::new();
    let mut found = None;
    for &layout in m.layouts() {
        if locked_layout.is_some_and(|l| l != layout) {
            continue;
        }
        let url = m.asset(layout, version, &sums_asset);
        tried.push(url.clone());
        match fetch_maybe_pinned(url, &sums_asset, &sums_what) {
            Ok(s) => {
                found = Some((layout, s));
                break;
            }
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    let Some((layout, sums)) = found else {
        bail!(
            "k3s {version}: {sums_asset} is not on the mirror {mirror:?} (tried {}); {LAYOUT_HELP}",
            tried.join(", ")
        );
    };
    let missing = |e: anyhow::Error, url: &str| -> anyhow::Error {
        if is_not_found(&e) {
            e.context(format!(
                "k3s {version}: {url} is missing although {} is there; {LAYOUT_HELP}",
                sums.source.url
            ))
        } else {
            e
        }
    };
    let text = fs::read_to_string(&sums.path)
        .with_context(|| format!("reading {} ({})", sums.path.display(), sums.source.url))?;

    let from_sums = |asset: &str| -> Result<Fetched> {
        let sha = find_in_sha256sums(&text, asset)
            .ok_or_else(|| anyhow!("{sums_asset} ({}) has no line for {asset}", sums.source.url))?;
        let url = m.asset(layout, version, asset);
        let src = Source::new(&url, &sha)?;
        fetch_source(f, &src, &format!("k3s {version} {asset}")).map_err(|e| missing(e, &url))
    };

    let binary = from_sums(k3s_binary_asset(arch))?;
    let install_url = m.install_sh(layout, version);
    let install_sh = fetch_maybe_pinned(
        install_url.clone(),
        "install.sh",
        &format!("k3s {version} install.sh"),
    )
    .map_err(|e| missing(e, &install_url))?;
    let airgap = if airgap {
        Some(from_sums(&format!("k3s-airgap-images-{a}.tar.zst"))?)
    } else {
        None
    };
    Ok(K3sBundle {
        version: version.to_string(),
        arch,
        binary,
        install_sh,
        airgap,
        sums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_lookup_exact() {
        let h1 = "1".repeat(64);
        let h2 = "2".repeat(64);
        let text = format!("{h1}  k3s-arm64\n{h2}  k3s-arm64.sig\n{h2} *k3s\n");
        assert_eq!(find_in_sha256sums(&text, "k3s-arm64"), Some(h1));
        assert_eq!(find_in_sha256sums(&text, "k3s"), Some(h2));
        assert_eq!(find_in_sha256sums(&text, "k3s-arm"), None);
    }

    #[test]
    fn mirror_urls() {
        let v = MirrorLayout::Versioned;
        let m = Mirror::parse("").unwrap();
        assert_eq!(
            m.asset(v, "v1.31.4+k3s1", "k3s"),
            "https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s"
        );
        assert_eq!(
            m.install_sh(v, "v1.31.4+k3s1"),
            "https://raw.githubusercontent.com/k3s-io/k3s/v1.31.4%2Bk3s1/install.sh"
        );
        let m = Mirror::parse("http://mirror.lan/k3s/").unwrap();
        assert_eq!(
            m.install_sh(v, "v1.2.3+k3s1"),
            "http://mirror.lan/k3s/v1.2.3%2Bk3s1/install.sh"
        );
        assert_eq!(
            m.asset(MirrorLayout::Flat, "v1.2.3+k3s1", "k3s-arm64"),
            "http://mirror.lan/k3s/k3s-arm64"
        );
    }
}
