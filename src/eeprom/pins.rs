//! Pinned rpi-eeprom release files (`firmware/rpi-eeprom.toml`) and fetching them.

use crate::fetch::{Fetcher, Source};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The manifest shipped in the binary.
pub const BUILTIN_PINS: &str = include_str!("../../firmware/rpi-eeprom.toml");

/// One pinned file.
#[derive(Clone, Debug, Deserialize)]
pub struct Pin {
    pub url: String,
    pub sha256: String,
    #[serde(default)]
    pub verified: bool,
}

impl Pin {
    /// A pin is usable only when marked verified and carrying a real digest.
    pub fn is_verified(&self) -> bool {
        self.verified
            && self.sha256.len() == 64
            && self.sha256.chars().all(|c| c.is_ascii_hexdigit())
    }

    /// File name at the end of the URL.
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

/// The whole pin manifest.
#[derive(Clone, Debug, Deserialize)]
pub struct Pins {
    pub repo: String,
    pub commit: String,
    /// `YYYY-MM-DD` of the pinned pieeprom release.
    pub release_date: String,
    pub pieeprom: Pin,
    pub recovery: Pin,
}

/// Parse a pin manifest; `origin` names it in errors.
pub fn parse_pins(text: &str, origin: &str) -> Result<Pins> {
    toml::from_str(text).with_context(|| format!("parsing pinned firmware list {origin}"))
}

/// Load `path`, or the built-in manifest when `None`.
pub fn load_pins(path: Option<&Path>) -> Result<Pins> {
    match path {
        None => parse_pins(BUILTIN_PINS, "firmware/rpi-eeprom.toml (built in)"),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading pinned firmware list {}", p.display()))?;
            parse_pins(&text, &p.display().to_string())
        }
    }
}

/// Refuse an unverified pin, telling the user which local-file option replaces it.
pub fn require_verified(pin: &Pin, what: &str, option: &str) -> Result<()> {
    if !pin.is_verified() {
        bail!(
            "the pinned {what} ({}) has no verified sha256 in firmware/rpi-eeprom.toml, so nodeforge \
             will not download it; pass a local copy with {option} FILE (from the rpi-eeprom repository's \
             firmware-2711/ folder or a Raspberry Pi OS /lib/firmware/raspberrypi/bootloader-2711/)",
            pin.file_name()
        );
    }
    Ok(())
}

/// Fetch a verified pin through the fetch stage (cached by sha256, checked, `--offline` aware).
pub fn fetch_pin(
    pin: &Pin,
    what: &str,
    cache_dir: Option<&Path>,
    offline: bool,
) -> Result<PathBuf> {
    let src = Source::new(&pin.url, &pin.sha256)
        .with_context(|| format!("pinned {what} in firmware/rpi-eeprom.toml"))?;
    let cache = cache_dir.map_or_else(Fetcher::default_cache_dir, Path::to_path_buf);
    let fetcher = Fetcher::new(cache, offline)?;
    fetcher.fetch(&src, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pins_parse_and_are_refused_while_unverified() {
        let p = load_pins(None).unwrap();
        assert_eq!(p.repo, "raspberrypi/rpi-eeprom");
        assert!(p.pieeprom.url.contains(&p.commit) && p.recovery.url.contains(&p.commit));
        assert!(p.pieeprom.file_name().starts_with("pieeprom-"));
        assert_eq!(p.recovery.file_name(), "recovery.bin");
        if !p.pieeprom.is_verified() {
            let e = require_verified(&p.pieeprom, "EEPROM image", "--eeprom").unwrap_err();
            assert!(e.to_string().contains("--eeprom"));
        }
    }
}
