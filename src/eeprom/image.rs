//! The Pi 4 (BCM2711) `pieeprom.bin` section format: read and replace the embedded `bootconf.txt`.
//!
//! Follows rpi-eeprom-config's `BootloaderImage` (docs/raspberry-pi-eeprom.md#bootconftxt-inside-pieeprombin): sections from offset 0, each a
//! big-endian magic + length; FILE sections hold a 12-byte name, 4 reserved bytes and the data.
//! Every offset read from the image is bounds-checked: a garbage image is an error, never a panic.

use anyhow::{bail, Result};

/// Size of a BCM2711 bootloader image.
pub const IMAGE_SIZE: usize = 512 * 1024;
/// The last 4 KiB are the bootloader's scratch page: never written.
pub const RESERVED_TAIL: usize = 4096;
/// Modifiable files live above the read-only first 64 KiB.
pub const READ_ONLY_SIZE: usize = 64 * 1024;
/// Modifiable files sit in one 4 KiB erase sector, less the 20-byte header rpi-eeprom-config counts.
pub const MAX_FILE_SIZE: usize = 4096 - 20;

/// Any valid section magic matches this under `MAGIC_MASK`.
pub const MAGIC: u32 = 0x55aa_f00f;
/// Mask applied to a section magic before comparing with `MAGIC`.
pub const MAGIC_MASK: u32 = 0xffff_f00f;
/// A modifiable file (bootconf.txt, bootconf.sig, pubkey.bin).
pub const FILE_MAGIC: u32 = 0x55aa_f11f;
/// Padding: 0xFF filled, skipped by the bootloader.
pub const PAD_MAGIC: u32 = 0x55aa_feef;

const HDR_LEN: usize = 8;
const FILENAME_LEN: usize = 12;
/// Data of a FILE section starts after magic, length, name and 4 reserved bytes.
const FILE_DATA_OFF: usize = HDR_LEN + FILENAME_LEN + 4;
const BOOTCONF: &str = "bootconf.txt";

/// One section found by walking the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub magic: u32,
    /// Byte offset of the section header.
    pub offset: usize,
    /// The header's length field (bytes after the 8-byte header).
    pub length: usize,
    /// File name of a FILE section (NUL padding removed).
    pub name: Option<String>,
}

impl Section {
    /// Offset just past the section's data (before alignment).
    pub fn end(&self) -> usize {
        self.offset + HDR_LEN + self.length
    }
}

fn be32(image: &[u8], off: usize) -> Option<u32> {
    let b = image.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn put_be32(image: &mut [u8], off: usize, v: u32) {
    image[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn check_size(image: &[u8]) -> Result<()> {
    if image.len() != IMAGE_SIZE {
        bail!(
            "not a Pi 4 bootloader image: expected {IMAGE_SIZE} bytes, got {}",
            image.len()
        );
    }
    Ok(())
}

/// Walk the sections from offset 0 until a 0x00000000/0xffffffff magic (rpi-eeprom-config `parse`).
///
/// Unlike rpi-eeprom-config the walk also stops at the reserved last 4 KiB: the bootloader may write
/// anything there, and no section starts in it.
pub fn parse_sections(image: &[u8]) -> Result<Vec<Section>> {
    check_size(image)?;
    let mut sections = Vec::new();
    let mut off = 0usize;
    while off + HDR_LEN <= image.len() - RESERVED_TAIL {
        let (Some(magic), Some(len)) = (be32(image, off), be32(image, off + 4)) else {
            break;
        };
        if magic == 0 || magic == 0xffff_ffff {
            break;
        }
        if magic & MAGIC_MASK != MAGIC {
            bail!("corrupt bootloader image: bad section magic 0x{magic:08x} at offset 0x{off:x}");
        }
        let length = len as usize;
        let end = off
            .checked_add(HDR_LEN)
            .and_then(|v| v.checked_add(length))
            .filter(|&e| e <= image.len());
        let Some(end) = end else {
            bail!(
                "corrupt bootloader image: section at offset 0x{off:x} (length {length}) runs past the end"
            );
        };
        let name = if magic == FILE_MAGIC {
            if length < FILENAME_LEN + 4 {
                bail!(
                    "corrupt bootloader image: file section at offset 0x{off:x} has length {length} < 16"
                );
            }
            let raw = &image[off + HDR_LEN..off + HDR_LEN + FILENAME_LEN];
            let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
            Some(String::from_utf8_lossy(raw).into_owned())
        } else {
            None
        };
        sections.push(Section {
            magic,
            offset: off,
            length,
            name,
        });
        off = (end + 7) & !7;
    }
    Ok(sections)
}

/// Index of the writable `bootconf.txt` FILE section (at or above 64 KiB).
fn find_bootconf(sections: &[Section]) -> Result<usize> {
    let is_conf = |s: &Section| s.magic == FILE_MAGIC && s.name.as_deref() == Some(BOOTCONF);
    if let Some(i) = sections
        .iter()
        .position(|s| is_conf(s) && s.offset >= READ_ONLY_SIZE)
    {
        return Ok(i);
    }
    if sections.iter().any(is_conf) {
        bail!("the image's only bootconf.txt section lies in the read-only first 64 KiB");
    }
    bail!("no bootconf.txt section in the bootloader image (is this a Pi 4 pieeprom.bin?)")
}

/// Return the `bootconf.txt` embedded in a 512 KiB Pi 4 bootloader image.
pub fn read_bootconf(image: &[u8]) -> Result<String> {
    let sections = parse_sections(image)?;
    let s = &sections[find_bootconf(&sections)?];
    let data = &image[s.offset + FILE_DATA_OFF..s.end()];
    match std::str::from_utf8(data) {
        Ok(t) => Ok(t.to_string()),
        Err(e) => bail!("the embedded bootconf.txt is not UTF-8 text: {e}"),
    }
}

/// Return a copy of `image` with `conf` as its `bootconf.txt` (rpi-eeprom-config `update`).
///
/// The following non-pad section keeps its offset: the freed or shrunk space becomes 0xFF fill and,
/// when at least 8 bytes remain before that section, a PAD section. The last 4 KiB are never written.
pub fn embed_bootconf(image: &[u8], conf: &str) -> Result<Vec<u8>> {
    let data = conf.as_bytes();
    if data.len() > MAX_FILE_SIZE {
        bail!(
            "bootconf.txt is {} bytes; the bootloader allows at most {MAX_FILE_SIZE}",
            data.len()
        );
    }
    let sections = parse_sections(image)?;
    let idx = find_bootconf(&sections)?;
    let target = &sections[idx];
    let is_last = idx + 1 == sections.len();
    let writable_end = IMAGE_SIZE - RESERVED_TAIL;
    // The region we may rewrite ends at the next section that is not padding.
    let next = sections[idx + 1..]
        .iter()
        .find(|s| s.magic != PAD_MAGIC)
        .map_or(writable_end, |s| s.offset);
    if target.offset + FILE_DATA_OFF > writable_end || next > writable_end {
        bail!("corrupt bootloader image: bootconf.txt or the section after it lies in the reserved last 4 KiB");
    }
    let data_start = target.offset + FILE_DATA_OFF;
    let data_end = data_start + data.len();
    let pad_start = (data_end + 7) & !7;
    if pad_start > next {
        bail!(
            "bootconf.txt is {} bytes but only {} fit before the next section at offset 0x{next:x}",
            data.len(),
            next.saturating_sub(data_start)
        );
    }

    let mut out = image.to_vec();
    put_be32(
        &mut out,
        target.offset + 4,
        (data.len() + FILENAME_LEN + 4) as u32,
    );
    out[data_start..data_end].copy_from_slice(data);
    out[data_end..pad_start].fill(0xff);
    let gap = next - pad_start;
    let mut fill_from = pad_start;
    // A gap is a multiple of 8 (sections are 8-aligned); any gap before a following section needs a
    // PAD header or the walk would stop at the 0xFF fill and lose the sections after it.
    if gap >= HDR_LEN && !is_last {
        put_be32(&mut out, pad_start, PAD_MAGIC);
        put_be32(&mut out, pad_start + 4, (gap - HDR_LEN) as u32);
        fill_from += HDR_LEN;
    }
    out[fill_from..next].fill(0xff);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(img: &mut [u8], off: usize, magic: u32, payload: &[u8]) -> usize {
        put_be32(img, off, magic);
        put_be32(img, off + 4, payload.len() as u32);
        img[off + 8..off + 8 + payload.len()].copy_from_slice(payload);
        (off + 8 + payload.len() + 7) & !7
    }

    fn file(img: &mut [u8], off: usize, name: &str, data: &[u8]) -> usize {
        let mut p = vec![0u8; 16];
        p[..name.len()].copy_from_slice(name.as_bytes());
        p.extend_from_slice(data);
        section(img, off, FILE_MAGIC, &p)
    }

    fn image() -> Vec<u8> {
        let mut img = vec![0xffu8; IMAGE_SIZE];
        let off = section(&mut img, 0, MAGIC, &[0xab; 1000]);
        let off = section(&mut img, off, 0x55aa_f33f, &[0xcd; 13]);
        section(&mut img, off, PAD_MAGIC, &vec![0xff; 0x10000 - off - 8]);
        let off = file(&mut img, 0x10000, BOOTCONF, b"[all]\nBOOT_ORDER=0xf41\n");
        section(&mut img, off, PAD_MAGIC, &vec![0xff; 0x11000 - off - 8]);
        file(&mut img, 0x11000, "pubkey.bin", &[7; 264]);
        img
    }

    #[test]
    fn walk_and_read() {
        let img = image();
        let s = parse_sections(&img).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[3].name.as_deref(), Some(BOOTCONF));
        assert_eq!(read_bootconf(&img).unwrap(), "[all]\nBOOT_ORDER=0xf41\n");
        let out = embed_bootconf(&img, "[all]\nBOOT_ORDER=0xf14\n").unwrap();
        assert_eq!(read_bootconf(&out).unwrap(), "[all]\nBOOT_ORDER=0xf14\n");
        assert_eq!(parse_sections(&out).unwrap()[5].offset, 0x11000);
    }

    #[test]
    fn bounds_checked_on_garbage() {
        let mut img = vec![0u8; IMAGE_SIZE];
        put_be32(&mut img, 0, MAGIC);
        put_be32(&mut img, 4, u32::MAX);
        assert!(parse_sections(&img).is_err());
        let mut img = vec![0u8; IMAGE_SIZE];
        put_be32(&mut img, 0, FILE_MAGIC);
        put_be32(&mut img, 4, 3);
        assert!(parse_sections(&img).is_err());
        let mut img = vec![0x5au8; IMAGE_SIZE];
        assert!(read_bootconf(&img).is_err());
        // A section header ending exactly at the image end.
        put_be32(&mut img, 0, MAGIC);
        put_be32(&mut img, 4, (IMAGE_SIZE - 8) as u32);
        assert!(read_bootconf(&img).is_err());
    }
}
