//! `disk.raw` out of a tar stream, holes kept: plain members, GNU old sparse members (type `S`,
//! read by the `tar` crate) and the pax sparse formats GNU.sparse 0.0, 0.1 and 1.0, which the
//! `tar` crate reads as plain files (their stored data, not the disk).
//!
//! The pax formats (GNU tar manual, "Storing Sparse Files", appendix "Sparse Formats"):
//! - 0.0: pax keys `GNU.sparse.size` (real size), `GNU.sparse.numblocks`, then
//!   `GNU.sparse.offset`/`GNU.sparse.numbytes` pairs in order; the member holds the data blocks
//!   back to back.
//! - 0.1: like 0.0 but the map is one key `GNU.sparse.map` = `off,len,off,len,...`; the ustar
//!   name is `GNUSparseFile.<pid>/<name>`, the real one in `GNU.sparse.name`.
//! - 1.0: keys `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name`,
//!   `GNU.sparse.realsize`; the map is at the start of the member's data as decimal lines (count,
//!   then offset and length per block), padded with zeros to a 512-byte boundary, then the data
//!   blocks. bsdtar (libarchive) writes this version.
//!
//! Anything else that claims to be sparse is refused by name ("unsupported sparse tar format").

use crate::sparse::SparseWriter;
use anyhow::{bail, Context, Result};
use std::io::{self, Read, Write};
use std::path::Path;

/// How a tar member stores its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// All bytes stored (holes as zeros), or GNU old sparse expanded by the `tar` crate.
    Plain,
    /// A pax sparse member: `version` ("0.0", "0.1", "1.0"), real size, and the block map
    /// (`None` for 1.0: the map is read from the data).
    Pax {
        version: &'static str,
        real_size: u64,
        map: Option<Vec<(u64, u64)>>,
    },
}

fn num(key: &str, v: &str) -> Result<u64> {
    v.trim()
        .parse()
        .with_context(|| format!("pax sparse key {key}={v:?} is not a number"))
}

/// The member's layout from its pax records (`(key, value)` in archive order) and its real name
/// (`GNU.sparse.name` when present).
pub fn layout(pax: &[(String, String)]) -> Result<(Layout, Option<String>)> {
    let get = |k: &str| {
        pax.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let name = get("GNU.sparse.name").map(str::to_string);
    let sparse_keys = pax
        .iter()
        .any(|(k, _)| k.starts_with("GNU.sparse.") || k.starts_with("SCHILY.sparse"));
    if !sparse_keys {
        return Ok((Layout::Plain, name));
    }
    if let (Some(major), minor) = (get("GNU.sparse.major"), get("GNU.sparse.minor")) {
        let minor = minor.unwrap_or("?");
        if (major.trim(), minor.trim()) != ("1", "0") {
            bail!(
                "unsupported sparse tar format (pax {}.{}); supported: GNU old sparse and pax \
                 0.0, 0.1, 1.0",
                major.trim(),
                minor.trim()
            );
        }
        let real = get("GNU.sparse.realsize")
            .context("pax sparse 1.0 member without GNU.sparse.realsize")?;
        return Ok((
            Layout::Pax {
                version: "1.0",
                real_size: num("GNU.sparse.realsize", real)?,
                map: None,
            },
            name,
        ));
    }
    let Some(size) = get("GNU.sparse.size") else {
        let keys: Vec<&str> = pax
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.contains("sparse"))
            .collect();
        bail!(
            "unsupported sparse tar format (pax keys {}); supported: GNU old sparse and pax \
             0.0, 0.1, 1.0",
            keys.join(", ")
        );
    };
    let real_size = num("GNU.sparse.size", size)?;
    if let Some(map) = get("GNU.sparse.map") {
        let nums: Vec<u64> = map
            .split(',')
            .map(|n| num("GNU.sparse.map", n))
            .collect::<Result<_>>()?;
        if !nums.len().is_multiple_of(2) {
            bail!("pax sparse 0.1 map has an odd number of values");
        }
        let map = nums.chunks(2).map(|c| (c[0], c[1])).collect();
        return Ok((
            Layout::Pax {
                version: "0.1",
                real_size,
                map: Some(map),
            },
            name,
        ));
    }
    // 0.0: offset/numbytes records in order.
    let mut map = Vec::new();
    let mut offset = None;
    for (k, v) in pax {
        match k.as_str() {
            "GNU.sparse.offset" => offset = Some(num(k, v)?),
            "GNU.sparse.numbytes" => {
                let off = offset
                    .take()
                    .context("pax sparse 0.0: GNU.sparse.numbytes without an offset before it")?;
                map.push((off, num(k, v)?));
            }
            _ => {}
        }
    }
    if let Some(n) = get("GNU.sparse.numblocks") {
        if num("GNU.sparse.numblocks", n)? != map.len() as u64 {
            bail!(
                "pax sparse 0.0: GNU.sparse.numblocks={n} but {} blocks are listed",
                map.len()
            );
        }
    }
    Ok((
        Layout::Pax {
            version: "0.0",
            real_size,
            map: Some(map),
        },
        name,
    ))
}

/// Read one decimal line of a 1.0 map; returns the number and the bytes consumed.
fn map_line(r: &mut dyn Read) -> Result<(u64, u64)> {
    let mut text = Vec::new();
    let mut b = [0u8; 1];
    loop {
        r.read_exact(&mut b)
            .context("pax sparse 1.0 map ends early (the file is truncated)")?;
        if b[0] == b'\n' {
            break;
        }
        if !b[0].is_ascii_digit() || text.len() >= 20 {
            bail!("pax sparse 1.0 map holds a byte that is not a decimal digit");
        }
        text.push(b[0]);
    }
    let s = String::from_utf8_lossy(&text);
    Ok((num("GNU.sparse map", &s)?, text.len() as u64 + 1))
}

/// Copy a pax sparse member (`stored` bytes in the archive) into `w` at its offsets; returns
/// the real size, which `w` is extended to. `progress` is called after each chunk.
pub fn copy_pax(
    entry: &mut dyn Read,
    stored: u64,
    version: &str,
    real_size: u64,
    map: Option<Vec<(u64, u64)>>,
    w: &mut SparseWriter,
    progress: &mut dyn FnMut(),
) -> Result<u64> {
    let mut used = 0u64;
    let map = match map {
        Some(m) => m,
        None => {
            let (n, len) = map_line(entry)?;
            used += len;
            if n > stored / 2 + 1 {
                bail!("pax sparse 1.0 map lists {n} blocks, more than the member can hold");
            }
            let mut m = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let (off, l1) = map_line(entry)?;
                let (len_, l2) = map_line(entry)?;
                used += l1 + l2;
                m.push((off, len_));
            }
            // The map is padded to a whole 512-byte block.
            let pad = used.div_ceil(512) * 512 - used;
            io::copy(&mut (&mut *entry).take(pad), &mut io::sink())
                .context("reading the pax sparse 1.0 map")?;
            used += pad;
            m
        }
    };
    let mut end = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for &(off, len) in &map {
        let stop = off
            .checked_add(len)
            .context("pax sparse block beyond 2^64")?;
        if off < end || stop > real_size {
            bail!(
                "pax sparse {version} map is out of order or beyond the real size \
                 ({off}+{len}, real size {real_size})"
            );
        }
        w.skip_to(off).context("writing the unpacked disk")?;
        let mut left = len;
        while left > 0 {
            let n = (left.min(buf.len() as u64)) as usize;
            entry.read_exact(&mut buf[..n]).map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::UnexpectedEof {
                    " (the file is truncated)"
                } else {
                    ""
                };
                anyhow::Error::new(e).context(format!("reading pax sparse {version} data{hint}"))
            })?;
            w.write_all(&buf[..n])
                .context("writing the unpacked disk")?;
            left -= n as u64;
            progress();
        }
        used += len;
        end = stop;
    }
    if used != stored {
        bail!("pax sparse {version} member stores {stored} bytes but its map accounts for {used}");
    }
    w.skip_to(real_size).context("writing the unpacked disk")?;
    Ok(real_size)
}

/// The pax records of a tar entry as (key, value) strings, in archive order.
pub fn pax_records<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    input: &Path,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let Some(exts) = entry
        .pax_extensions()
        .with_context(|| format!("reading the pax header of a member of {}", input.display()))?
    else {
        return Ok(out);
    };
    for e in exts {
        let e = e.with_context(|| {
            format!("reading the pax header of a member of {}", input.display())
        })?;
        let key = String::from_utf8_lossy(e.key_bytes()).into_owned();
        let value = String::from_utf8_lossy(e.value_bytes()).into_owned();
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn versions() {
        let (l, _) = layout(&kv(&[
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.offset", "0"),
            ("GNU.sparse.numbytes", "10"),
            ("GNU.sparse.offset", "50"),
            ("GNU.sparse.numbytes", "5"),
        ]))
        .unwrap();
        assert_eq!(
            l,
            Layout::Pax {
                version: "0.0",
                real_size: 100,
                map: Some(vec![(0, 10), (50, 5)])
            }
        );
        let (l, n) = layout(&kv(&[
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.name", "disk.raw"),
            ("GNU.sparse.map", "0,10,50,5"),
        ]))
        .unwrap();
        assert_eq!(n.as_deref(), Some("disk.raw"));
        assert!(matches!(l, Layout::Pax { version: "0.1", .. }));
        let (l, _) = layout(&kv(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.realsize", "7"),
        ]))
        .unwrap();
        assert!(matches!(
            l,
            Layout::Pax {
                version: "1.0",
                real_size: 7,
                map: None
            }
        ));
        let e = layout(&kv(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "1")])).unwrap_err();
        assert!(
            format!("{e}").contains("unsupported sparse tar format (pax 2.1)"),
            "{e}"
        );
        let e = layout(&kv(&[("SCHILY.sparse", "x")])).unwrap_err();
        assert!(
            format!("{e}").contains("unsupported sparse tar format"),
            "{e}"
        );
        assert!(layout(&kv(&[
            ("GNU.sparse.size", "9"),
            ("GNU.sparse.map", "1,2,3")
        ]))
        .is_err());
        assert_eq!(layout(&kv(&[("mtime", "1")])).unwrap().0, Layout::Plain);
    }
}
