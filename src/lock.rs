//! `nodeforge.lock`: every input a build used (name, URL, sha256, size).
//!
//! Written by `nodeforge fetch`; `build --locked` refuses inputs that differ from it, and
//! k3s files that are otherwise trusted on first use (`sha256sum-*.txt`, `install.sh`) are
//! pinned by it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Current lock file format version.
pub const LOCK_VERSION: u32 = 1;

/// One pinned input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// Stable name of the input (e.g. `base/raspios-lite-arm64`, `k3s/v1.31.4+k3s1/k3s-arm64`).
    pub name: String,
    pub url: String,
    /// Lowercase hex sha256 (may be absent in a hand-written entry pinned by `sha512`).
    #[serde(default)]
    pub sha256: String,
    /// Lowercase hex sha512, for inputs pinned by one (Debian publishes only SHA512SUMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    pub size: u64,
}

/// The parsed lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    #[serde(default = "default_version")]
    pub version: u32,
    /// Entries, kept sorted by name.
    #[serde(default, rename = "input")]
    pub entries: Vec<LockEntry>,
}

fn default_version() -> u32 {
    LOCK_VERSION
}

impl Default for Lock {
    fn default() -> Lock {
        Lock::new()
    }
}

impl Lock {
    /// An empty lock.
    pub fn new() -> Lock {
        Lock {
            version: LOCK_VERSION,
            entries: Vec::new(),
        }
    }

    /// Read and validate a lock file.
    pub fn read(path: &Path) -> Result<Lock> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading lock file {}", path.display()))?;
        Lock::parse(&text).with_context(|| format!("parsing lock file {}", path.display()))
    }

    /// Read a lock file, or an empty lock when it does not exist.
    pub fn read_or_default(path: &Path) -> Result<Lock> {
        if path.exists() {
            Lock::read(path)
        } else {
            Ok(Lock::new())
        }
    }

    /// Parse and validate lock file text.
    pub fn parse(text: &str) -> Result<Lock> {
        let mut lock: Lock = toml::from_str(text)?;
        if lock.version != LOCK_VERSION {
            bail!(
                "unsupported lock file version {} (this nodeforge writes {LOCK_VERSION})",
                lock.version
            );
        }
        for e in &mut lock.entries {
            if e.sha256.is_empty() && e.sha512.is_none() {
                bail!("input {:?} has neither sha256 nor sha512", e.name);
            }
            if !e.sha256.is_empty() {
                e.sha256 = crate::hash::normalize_sha256(&e.sha256)
                    .with_context(|| format!("input {:?}", e.name))?;
            }
            if let Some(h) = &e.sha512 {
                e.sha512 = Some(
                    crate::hash::normalize_sha512(h)
                        .with_context(|| format!("input {:?}", e.name))?,
                );
            }
        }
        let mut names: Vec<&str> = lock.entries.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("input {:?} appears twice", w[0]);
        }
        lock.entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(lock)
    }

    /// The lock file text (entries sorted by name, so output is deterministic).
    pub fn to_toml(&self) -> Result<String> {
        let mut sorted = self.clone();
        sorted.entries.sort_by(|a, b| a.name.cmp(&b.name));
        let body = toml::to_string_pretty(&sorted).context("serialising the lock file")?;
        Ok(format!(
            "# nodeforge.lock: inputs pinned by `nodeforge fetch`. Commit it; \
             `nodeforge build --locked` refuses inputs that differ.\n{body}"
        ))
    }

    /// Write atomically (temporary file in the same directory, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = self.to_toml()?;
        crate::output::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing the lock file {}", path.display()))
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&LockEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Add or replace the entry with the same name.
    pub fn upsert(&mut self, entry: LockEntry) {
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(e) => *e = entry,
            None => {
                self.entries.push(entry);
                self.entries.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
    }

    /// `--locked`: `used` must match this lock's entry of the same name (URL and sha256).
    pub fn check_entry(&self, used: &LockEntry) -> Result<()> {
        let Some(pinned) = self.get(&used.name) else {
            bail!(
                "--locked: input {:?} ({}) is not in nodeforge.lock; run `nodeforge fetch` to update it",
                used.name,
                used.url
            );
        };
        if pinned.url != used.url {
            bail!(
                "--locked: input {:?} changed URL: lock has {}, build uses {}",
                used.name,
                pinned.url,
                used.url
            );
        }
        if let (Some(p), Some(u)) = (&pinned.sha512, &used.sha512) {
            if !p.eq_ignore_ascii_case(u) {
                bail!(
                    "--locked: input {:?} ({}) changed sha512: lock has {p}, build uses {u}",
                    used.name,
                    used.url
                );
            }
        }
        let both = !pinned.sha256.is_empty() && !used.sha256.is_empty();
        if both && !pinned.sha256.eq_ignore_ascii_case(&used.sha256) {
            bail!(
                "--locked: input {:?} ({}) changed sha256: lock has {}, build uses {}",
                used.name,
                used.url,
                pinned.sha256,
                used.sha256
            );
        }
        Ok(())
    }

    /// `--locked` for a whole build: every used input must match (extra lock entries are fine).
    pub fn check_locked(&self, used: &[LockEntry]) -> Result<()> {
        for u in used {
            self.check_entry(u)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, c: char) -> LockEntry {
        LockEntry {
            name: name.into(),
            url: format!("https://example.org/{name}"),
            sha256: c.to_string().repeat(64),
            sha512: None,
            size: 42,
        }
    }

    #[test]
    fn roundtrip_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodeforge.lock");
        let mut lock = Lock::new();
        lock.upsert(entry("z", 'a'));
        lock.upsert(entry("b", 'b'));
        lock.upsert(entry("z", 'c'));
        lock.write(&path).unwrap();
        let back = Lock::read(&path).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.entries[0].name, "b");
        assert_eq!(back.get("z").unwrap().sha256, "c".repeat(64));

        back.check_locked(&[entry("z", 'c')]).unwrap();
        let err = back.check_locked(&[entry("z", 'd')]).unwrap_err();
        assert!(format!("{err:#}").contains("\"z\""), "{err:#}");
        let mut moved = entry("b", 'b');
        moved.url = "https://elsewhere/b".into();
        assert!(format!("{:#}", back.check_entry(&moved).unwrap_err()).contains("URL"));
        assert!(back.check_entry(&entry("new", 'a')).is_err());
    }

    #[test]
    fn rejects_bad_lock() {
        assert!(
            Lock::parse("version = 1\n[[input]]\nname='a'\nurl='u'\nsha256='xy'\nsize=1\n")
                .is_err()
        );
        assert!(Lock::parse("version = 9\n").is_err());
        let e = entry("a", 'a');
        let one = format!(
            "[[input]]\nname='{}'\nurl='{}'\nsha256='{}'\nsize=1\n",
            e.name, e.url, e.sha256
        );
        assert!(Lock::parse(&format!("version = 1\n{one}{one}")).is_err());
        assert!(Lock::parse("").unwrap().entries.is_empty());
        // sha512 pins are accepted (and checked for form).
        let h = "A".repeat(128);
        let l = Lock::parse(&format!(
            "version = 1\n[[input]]\nname='b'\nurl='u'\nsha512='{h}'\nsize=1\n"
        ))
        .unwrap();
        assert_eq!(
            l.entries[0].sha512.as_deref(),
            Some("a".repeat(128).as_str())
        );
        assert!(
            Lock::parse("version = 1\n[[input]]\nname='b'\nurl='u'\nsha512='ab'\nsize=1\n")
                .is_err()
        );
        assert!(Lock::parse("version = 1\n[[input]]\nname='b'\nurl='u'\nsize=1\n").is_err());
    }
}
