//! FAT names: validation, deterministic 8.3 short names and VFAT long-name entries.

use anyhow::{bail, Result};
use std::collections::HashSet;

/// Characters allowed in a short (8.3) name besides `A-Z` and `0-9`.
const SHORT_EXTRA: &[u8] = b"!#$%&'()-@^_`{}~";

/// Longest long name, in UTF-16 code units.
const MAX_LFN_UNITS: usize = 255;

fn short_char_ok(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SHORT_EXTRA.contains(&b)
}

/// Check one path component (a file or directory name) against the rules of FAT long names.
pub fn validate_component(name: &str, path: &str) -> Result<()> {
    if name.is_empty() {
        bail!("invalid FAT path {path:?}: empty path component");
    }
    if name == "." || name == ".." {
        bail!("invalid FAT path {path:?}: component {name:?} is not allowed");
    }
    if let Some(c) = name.chars().find(|&c| {
        (c as u32) < 0x20 || matches!(c, '"' | '*' | '/' | ':' | '<' | '>' | '?' | '\\' | '|')
    }) {
        bail!("invalid FAT name {name:?} in {path:?}: character {c:?} is not allowed on FAT");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        bail!("invalid FAT name {name:?} in {path:?}: names cannot end with a dot or a space");
    }
    let units = name.encode_utf16().count();
    if units > MAX_LFN_UNITS {
        bail!("invalid FAT name in {path:?}: {units} UTF-16 units, FAT allows at most {MAX_LFN_UNITS}");
    }
    Ok(())
}

/// If `name` is a plain uppercase 8.3 name, its 11-byte short form (no long name needed).
pub fn plain_short_name(name: &str) -> Option<[u8; 11]> {
    let bytes = name.as_bytes();
    let (base, ext) = match name.find('.') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &b""[..]),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || (name.contains('.') && ext.is_empty())
    {
        return None;
    }
    if !base.iter().chain(ext.iter()).all(|&b| short_char_ok(b)) {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..8 + ext.len()].copy_from_slice(ext);
    Some(out)
}

/// Convert part of a long name to short-name characters; returns (chars, lossy).
fn to_short_chars(s: &str) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut lossy = false;
    for c in s.chars() {
        if c == ' ' || c == '.' {
            lossy = true;
            continue;
        }
        let u = c.to_ascii_uppercase();
        if u.is_ascii() && short_char_ok(u as u8) {
            out.push(u as u8);
        } else {
            out.push(b'_');
            lossy = true;
        }
    }
    (out, lossy)
}

/// Generate a short name for a long `name` that is unique in `used`, and record it there.
///
/// Deterministic: the same names offered in the same order give the same short names.
pub fn generate_short_name(name: &str, used: &mut HashSet<[u8; 11]>) -> Result<[u8; 11]> {
    let trimmed = name.trim_start_matches('.');
    let mut lossy = trimmed.len() != name.len();
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let (mut b, l1) = to_short_chars(base);
    let (mut e, l2) = to_short_chars(ext);
    lossy |= l1 || l2;
    if b.is_empty() {
        b.push(b'_');
        lossy = true;
    }
    if b.len() > 8 {
        b.truncate(8);
        lossy = true;
    }
    if e.len() > 3 {
        e.truncate(3);
        lossy = true;
    }
    let make = |base: &[u8]| {
        let mut out = [b' '; 11];
        out[..base.len()].copy_from_slice(base);
        out[8..8 + e.len()].copy_from_slice(&e);
        out
    };
    if !lossy {
        let cand = make(&b);
        if used.insert(cand) {
            return Ok(cand);
        }
    }
    for n in 1u32..=999_999 {
        let tail = format!("~{n}");
        let keep = b.len().min(8 - tail.len());
        let mut nb = b[..keep].to_vec();
        nb.extend_from_slice(tail.as_bytes());
        let cand = make(&nb);
        if used.insert(cand) {
            return Ok(cand);
        }
    }
    bail!(
        "cannot generate a unique short name for {name:?}: too many similar names in one directory"
    )
}

/// Checksum of an 11-byte short name, stored in each of its long-name entries.
pub fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &b| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b)
    })
}

/// Number of 32-byte long-name entries `name` needs.
pub fn lfn_entry_count(name: &str) -> usize {
    name.encode_utf16().count().div_ceil(13)
}

/// Append the long-name entries for `name` (last part first, as on disk) to `out`.
pub fn push_lfn_entries(out: &mut Vec<u8>, name: &str, short: &[u8; 11]) {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    let n = units.len().div_ceil(13);
    if !units.len().is_multiple_of(13) {
        units.push(0);
    }
    units.resize(n * 13, 0xFFFF);
    let sum = lfn_checksum(short);
    for seq in (1..=n).rev() {
        let part = &units[(seq - 1) * 13..seq * 13];
        let mut e = [0u8; 32];
        e[0] = seq as u8 | if seq == n { 0x40 } else { 0 };
        e[11] = 0x0F;
        e[13] = sum;
        let slots = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (pos, u) in slots.zip(part.iter()) {
            e[pos..pos + 2].copy_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        assert_eq!(plain_short_name("CONFIG.TXT"), Some(*b"CONFIG  TXT"));
        assert_eq!(plain_short_name("OVERLAYS"), Some(*b"OVERLAYS   "));
        assert_eq!(plain_short_name("config.txt"), None);
        assert_eq!(plain_short_name("A.B.C"), None);
        assert_eq!(plain_short_name("ABCDEFGHI"), None);
        assert_eq!(plain_short_name("X."), None);
        assert_eq!(plain_short_name(".X"), None);
    }

    #[test]
    fn short_names_are_unique_and_deterministic() {
        let mut used = HashSet::new();
        used.insert(*b"ABCDEF~1TXT");
        assert_eq!(
            generate_short_name("config.txt", &mut used).unwrap(),
            *b"CONFIG  TXT"
        );
        assert_eq!(
            generate_short_name("Config.txt", &mut used).unwrap(),
            *b"CONFIG~1TXT"
        );
        assert_eq!(
            generate_short_name("abcdefghij.txt", &mut used).unwrap(),
            *b"ABCDEF~2TXT"
        );
        assert_eq!(
            generate_short_name(".bashrc", &mut used).unwrap(),
            *b"BASHRC~1   "
        );
        assert_eq!(
            generate_short_name("bcm2711-rpi-4-b.dtb", &mut used).unwrap(),
            *b"BCM271~1DTB"
        );
        assert_eq!(
            generate_short_name("é", &mut used).unwrap(),
            *b"_~1        "
        );
        for i in 0..20 {
            let s = generate_short_name(&format!("longname{i}.dtbo"), &mut used).unwrap();
            assert!(s.starts_with(b"LONG") || s.starts_with(b"LONGNA"));
        }
        assert_eq!(used.len(), 27);
    }

    #[test]
    fn lfn_layout() {
        let short = *b"README  TXT";
        let mut v = Vec::new();
        push_lfn_entries(&mut v, "readme.txt", &short);
        assert_eq!(v.len(), 32);
        assert_eq!(v[0], 0x41);
        assert_eq!(v[11], 0x0F);
        assert_eq!(&v[1..3], &[b'r', 0]);
        // 10 chars then a terminator then 0xFFFF padding.
        assert_eq!(&v[24..26], &[0, 0]);
        assert_eq!(&v[28..32], &[0xFF; 4]);
        let mut v = Vec::new();
        push_lfn_entries(&mut v, &"a".repeat(26), &short);
        assert_eq!(v.len(), 64);
        assert_eq!(v[0], 0x42);
        assert_eq!(v[32], 0x01);
        assert_eq!(lfn_entry_count(&"a".repeat(27)), 3);
    }

    #[test]
    fn invalid_components() {
        for bad in [
            "", ".", "..", "a:b", "a*", "q?", "x\"", "<", ">", "a|b", "a\\b", "nul\0", "dot.",
            "sp ",
        ] {
            assert!(validate_component(bad, bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_component(&"x".repeat(256), "p").is_err());
        assert!(validate_component(&"x".repeat(255), "p").is_ok());
        assert!(validate_component("bcm2711-rpi-4-b.dtb", "p").is_ok());
    }
}
