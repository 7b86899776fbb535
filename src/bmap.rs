//! bmaptool 2.0 block maps: generate from a sparse image, parse for flashing.
//!
//! The XML is written byte for byte as bmaptool 3.x `BmapCreate` writes it, so `bmaptool copy`
//! accepts it and a diff against `bmaptool create` output is empty for the same image.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Block size nodeforge uses for the bmaps it generates (bmaptool's default).
pub const BLOCK_SIZE: u64 = 4096;

/// One run of mapped blocks, `first..=last`, with the sha256 (hex) of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    /// First block number (inclusive).
    pub first: u64,
    /// Last block number (inclusive).
    pub last: u64,
    /// Lower-case hex sha256 of the range's bytes (clipped to the image size); empty if the
    /// bmap carried no checksum for this range.
    pub sha256: String,
}

/// A bmap: which blocks of an image hold data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Image size in bytes.
    pub image_size: u64,
    /// Block size in bytes (4096 for bmaps nodeforge writes).
    pub block_size: u64,
    /// Number of blocks in the image (rounded up).
    pub blocks_total: u64,
    /// Number of mapped blocks (sum over `ranges`).
    pub mapped_blocks: u64,
    /// Mapped ranges, ascending, non-overlapping.
    pub ranges: Vec<BmapRange>,
}

impl BmapRange {
    /// Byte span `(offset, length)` of this range within an image of `image_size` bytes.
    pub fn byte_span(&self, block_size: u64, image_size: u64) -> (u64, u64) {
        let start = self.first.saturating_mul(block_size).min(image_size);
        let end = self
            .last
            .saturating_add(1)
            .saturating_mul(block_size)
            .min(image_size);
        (start, end - start)
    }
}

impl Bmap {
    /// Number of mapped bytes (clipped to the image size).
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| r.byte_span(self.block_size, self.image_size).1)
            .sum()
    }

    /// Build a bmap from byte-granular data extents `(offset, len)` (ascending), hashing each
    /// resulting block range with `hash(offset, len)`.
    pub fn from_extents(
        image_size: u64,
        extents: &[(u64, u64)],
        mut hash: impl FnMut(u64, u64) -> Result<String>,
    ) -> Result<Bmap> {
        let bs = BLOCK_SIZE;
        let blocks_total = image_size.div_ceil(bs);
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        for &(off, len) in extents {
            if len == 0 || off >= image_size {
                continue;
            }
            let end = (off + len).min(image_size);
            let first = off / bs;
            let last = end.div_ceil(bs) - 1;
            match blocks.last_mut() {
                // Merge touching/overlapping runs, as bmaptool's FIEMAP path does.
                Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
                _ => blocks.push((first, last)),
            }
        }
        let mut ranges = Vec::with_capacity(blocks.len());
        let mut mapped = 0;
        for (first, last) in blocks {
            mapped += last - first + 1;
            let r = BmapRange {
                first,
                last,
                sha256: String::new(),
            };
            let (o, l) = r.byte_span(bs, image_size);
            ranges.push(BmapRange {
                sha256: hash(o, l)?,
                ..r
            });
        }
        Ok(Bmap {
            image_size,
            block_size: bs,
            blocks_total,
            mapped_blocks: mapped,
            ranges,
        })
    }

    /// Render as bmaptool 2.0 XML, exactly as `bmaptool create` lays it out, with a valid
    /// `BmapFileChecksum`.
    pub fn to_xml(&self) -> String {
        let human = human_size(self.image_size);
        let mut x = String::new();
        x.push_str(HEADER);
        x.push_str(&format!(
            "<bmap version=\"2.0\">\n    <!-- Image size in bytes: {human} -->\n    <ImageSize> {} </ImageSize>\n\n    <!-- Size of a block in bytes -->\n    <BlockSize> {} </BlockSize>\n\n    <!-- Count of blocks in the image file -->\n    <BlocksCount> {} </BlocksCount>\n\n",
            self.image_size, self.block_size, self.blocks_total
        ));
        x.push_str("    <!-- Count of mapped blocks: ");
        // bmaptool writes space placeholders, then overwrites them in place: emulate that.
        let pos1 = x.len();
        x.push_str(&format!(
            "{} or {}   -->\n    <MappedBlocksCount> ",
            " ".repeat(human.len()),
            " ".repeat("100.0%".len())
        ));
        let pos2 = x.len();
        x.push_str(&format!(
            "{} </MappedBlocksCount>\n\n",
            " ".repeat(self.blocks_total.to_string().len())
        ));
        x.push_str("    <!-- Type of checksum used in this file -->\n");
        x.push_str("    <ChecksumType> sha256 </ChecksumType>\n\n");
        x.push_str(
            "    <!-- The checksum of this bmap file. When it is calculated, the value of\n",
        );
        x.push_str("         the checksum has be zero (all ASCII \"0\" symbols).  -->\n");
        x.push_str("    <BmapFileChecksum> ");
        let pos3 = x.len();
        x.push_str(&"0".repeat(64));
        x.push_str(" </BmapFileChecksum>\n\n");
        x.push_str(
            "    <!-- The block map which consists of elements which may either be a\n         range of blocks or a single block. The 'chksum' attribute\n         (if present) is the checksum of this blocks range. -->\n    <BlockMap>\n",
        );
        for r in &self.ranges {
            let attr = if r.sha256.is_empty() {
                String::new()
            } else {
                format!(" chksum=\"{}\"", r.sha256)
            };
            if r.first != r.last {
                x.push_str(&format!(
                    "        <Range{attr}> {}-{} </Range>\n",
                    r.first, r.last
                ));
            } else {
                x.push_str(&format!("        <Range{attr}> {} </Range>\n", r.first));
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");

        let percent = if self.blocks_total == 0 {
            0.0
        } else {
            self.mapped_blocks as f64 * 100.0 / self.blocks_total as f64
        };
        let s1 = format!(
            "{} or {:.1}%",
            human_size(self.mapped_blocks * self.block_size),
            percent
        );
        overwrite(&mut x, pos1, &s1);
        overwrite(&mut x, pos2, &self.mapped_blocks.to_string());
        let sum = hex::encode(Sha256::digest(x.as_bytes()));
        overwrite(&mut x, pos3, &sum);
        x
    }

    /// Parse bmaptool XML (format 1.x/2.x with sha256 checksums, or none), verifying
    /// `BmapFileChecksum` when present.
    pub fn parse(xml: &str) -> Result<Bmap> {
        let body = strip_comments(xml);
        let root = find_element(&body, "bmap", 0).context("bmap: no <bmap> element")?;
        let version = attr(root.attrs, "version").context("bmap: <bmap> has no version")?;
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.trim().parse().ok())
            .with_context(|| format!("bmap: bad version {version:?}"))?;
        if major > 2 {
            bail!("bmap: format version {version} is not supported (up to 2.x)");
        }
        let num = |name: &str| -> Result<u64> {
            let e = find_element(root.text, name, 0)
                .with_context(|| format!("bmap: missing <{name}>"))?;
            e.text
                .trim()
                .parse()
                .with_context(|| format!("bmap: <{name}> is not a number: {:?}", e.text.trim()))
        };
        let image_size = num("ImageSize")?;
        let block_size = num("BlockSize")?;
        let blocks_total = num("BlocksCount")?;
        let mapped_declared = num("MappedBlocksCount")?;
        if block_size == 0 || block_size % 512 != 0 {
            bail!("bmap: unsupported block size {block_size}");
        }
        if blocks_total != image_size.div_ceil(block_size) {
            bail!("bmap: BlocksCount {blocks_total} does not match ImageSize {image_size}");
        }
        let cs_type = find_element(root.text, "ChecksumType", 0).map(|e| e.text.trim());
        let has_sums = match cs_type {
            Some("sha256") => true,
            None => false,
            Some(other) => bail!("bmap: checksum type {other:?} is not supported (sha256 only)"),
        };
        if let Some(e) = find_element(root.text, "BmapFileChecksum", 0) {
            let want = e.text.trim();
            if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("bmap: malformed BmapFileChecksum {want:?}");
            }
            // Same procedure as bmaptool: zero the first occurrence of the sum in the raw file.
            let pos = xml.find(want).context("bmap: checksum not found in text")?;
            let mut zeroed = xml.to_string();
            zeroed.replace_range(pos..pos + 64, &"0".repeat(64));
            let got = hex::encode(Sha256::digest(zeroed.as_bytes()));
            if !got.eq_ignore_ascii_case(want) {
                bail!("bmap: file checksum mismatch (calculated {got}, file says {want}): the bmap is corrupted");
            }
        }
        let map = find_element(root.text, "BlockMap", 0).context("bmap: missing <BlockMap>")?;
        let mut ranges: Vec<BmapRange> = Vec::new();
        let mut at = 0;
        let mut mapped = 0u64;
        while let Some(e) = find_element(map.text, "Range", at) {
            at = e.end;
            let t = e.text.trim();
            let (a, b) = match t.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (t, t),
            };
            let first: u64 = a
                .parse()
                .with_context(|| format!("bmap: bad range {t:?}"))?;
            let last: u64 = b
                .parse()
                .with_context(|| format!("bmap: bad range {t:?}"))?;
            if last < first || last >= blocks_total {
                bail!("bmap: range {t:?} outside the image ({blocks_total} blocks)");
            }
            if let Some(prev) = ranges.last() {
                if first <= prev.last {
                    bail!("bmap: range {t:?} overlaps or is out of order");
                }
            }
            let sha = match attr(e.attrs, "chksum") {
                Some(s) if has_sums => {
                    if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
                        bail!("bmap: bad chksum {s:?} for range {t:?}");
                    }
                    s.to_ascii_lowercase()
                }
                _ => String::new(),
            };
            mapped += last - first + 1;
            ranges.push(BmapRange {
                first,
                last,
                sha256: sha,
            });
        }
        if mapped != mapped_declared {
            bail!("bmap: MappedBlocksCount {mapped_declared} but ranges cover {mapped} blocks");
        }
        Ok(Bmap {
            image_size,
            block_size,
            blocks_total,
            mapped_blocks: mapped,
            ranges,
        })
    }
}

/// What a bmap must map. For a disk image, everything its filesystems do not call free
/// (`fsmap`): a hole inside a file or in metadata must still be written as zeros, or a reused
/// stick keeps its old bytes there. A file with no partition table falls back to its data
/// extents, as `bmaptool create` does.
fn mapped_extents(f: &File, size: u64, image: &Path) -> Result<Vec<(u64, u64)>> {
    let mut probe = f
        .try_clone()
        .with_context(|| format!("open image {}", image.display()))?;
    if crate::partition::read_layout(&mut probe, image).is_ok() {
        crate::fsmap::needed_ranges(f, size)
            .with_context(|| format!("reading the filesystems of {}", image.display()))
    } else {
        data_extents(f, size).with_context(|| format!("find data in {}", image.display()))
    }
}

/// Generate the bmap of a (sparse) raw image: filesystem-aware for disk images, data extents
/// (SEEK_DATA/SEEK_HOLE, like `bmaptool create`) otherwise.
pub fn generate(image: &Path) -> Result<Bmap> {
    let f = File::open(image).with_context(|| format!("open image {}", image.display()))?;
    let size = crate::disk::size_of(&f)
        .with_context(|| format!("reading the size of image {}", image.display()))?;
    if size == 0 {
        bail!("cannot generate a bmap for empty image {}", image.display());
    }
    let extents = mapped_extents(&f, size, image)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut src = &f;
    Bmap::from_extents(size, &extents, |off, len| {
        src.seek(SeekFrom::Start(off))
            .with_context(|| format!("seek {}", image.display()))?;
        let mut h = Sha256::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            src.read_exact(&mut buf[..n])
                .with_context(|| format!("read {} at {off}", image.display()))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(hex::encode(h.finalize()))
    })
}

/// Data extents `(offset, len)` of `f` (size `size`) from SEEK_DATA/SEEK_HOLE.
pub fn data_extents(f: &File, size: u64) -> Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom as RSeek};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(f, RSeek::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e).context("lseek SEEK_DATA"),
        };
        if start >= size {
            break;
        }
        let end = match seek(f, RSeek::Hole(start)) {
            Ok(p) => p.min(size),
            Err(e) => return Err(e).context("lseek SEEK_HOLE"),
        };
        if end <= start {
            break;
        }
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

/// Write `bmap` as XML to `path` atomically (temporary file + rename).
pub fn write(bmap: &Bmap, path: &Path) -> Result<()> {
    crate::output::write_atomic(path, bmap.to_xml().as_bytes())
        .with_context(|| format!("writing bmap {}", path.display()))
}

/// Read and parse a bmap file.
pub fn read(path: &Path) -> Result<Bmap> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read bmap {}", path.display()))?;
    Bmap::parse(&text).with_context(|| format!("parse bmap {}", path.display()))
}

/// bmaptool's `human_size` ("%.1f KiB" etc.).
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for m in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {m}");
        }
    }
    format!("{s:.1} EiB")
}

/// Replace bytes at `pos` with `s` (ASCII), as Python's seek+write over the placeholder does.
fn overwrite(x: &mut String, pos: usize, s: &str) {
    let end = (pos + s.len()).min(x.len());
    x.replace_range(pos..end, s);
}

const HEADER: &str = r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"#;

/// A located element: its attribute text, inner text and the offset just past its end tag.
struct Element<'a> {
    attrs: &'a str,
    text: &'a str,
    end: usize,
}

/// Remove `<!-- ... -->` comments and the `<?xml ?>` declaration (replaced by spaces).
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let c = rest.find("<!--");
        let p = rest.find("<?");
        let (idx, close) = match (c, p) {
            (Some(a), Some(b)) if b < a => (b, "?>"),
            (Some(a), _) => (a, "-->"),
            (None, Some(b)) => (b, "?>"),
            (None, None) => break,
        };
        out.push_str(&rest[..idx]);
        match rest[idx..].find(close) {
            Some(e) => rest = &rest[idx + e + close.len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Find the first `<name ...>text</name>` at or after `from` (no nesting of the same name).
fn find_element<'a>(s: &'a str, name: &str, from: usize) -> Option<Element<'a>> {
    let open = format!("<{name}");
    let mut at = from;
    loop {
        let i = at + s.get(at..)?.find(&open)?;
        let after = i + open.len();
        let next = s[after..].chars().next()?;
        if next == '>' || next == '/' || next.is_whitespace() {
            let gt = after + s[after..].find('>')?;
            let attrs = &s[after..gt];
            if attrs.ends_with('/') {
                return Some(Element {
                    attrs: attrs.trim_end_matches('/'),
                    text: "",
                    end: gt + 1,
                });
            }
            let close = format!("</{name}>");
            let c = gt + 1 + s[gt + 1..].find(&close)?;
            return Some(Element {
                attrs,
                text: &s[gt + 1..c],
                end: c + close.len(),
            });
        }
        at = after;
    }
}

/// Value of attribute `name` (single or double quoted) in an attribute string.
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while let Some(i) = rest.find(name) {
        let before_ok = i == 0 || rest[..i].ends_with(|c: char| c.is_whitespace());
        let tail = rest[i + name.len()..].trim_start();
        if before_ok {
            if let Some(t) = tail.strip_prefix('=') {
                let t = t.trim_start();
                let q = t.chars().next()?;
                if q == '"' || q == '\'' {
                    let end = t[1..].find(q)?;
                    return Some(&t[1..1 + end]);
                }
            }
        }
        rest = &rest[i + name.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bmap {
        Bmap {
            image_size: 10 * 1024 * 1024,
            block_size: 4096,
            blocks_total: 2560,
            mapped_blocks: 7,
            ranges: vec![
                BmapRange {
                    first: 3,
                    last: 7,
                    sha256: "a".repeat(64),
                },
                BmapRange {
                    first: 1220,
                    last: 1221,
                    sha256: "b".repeat(64),
                },
            ],
        }
    }

    #[test]
    fn roundtrip_and_checksum() {
        let b = sample();
        let x = b.to_xml();
        assert!(x.contains("<!-- Count of mapped blocks: 28.0 KiB or 0.3%     -->"));
        assert!(x.contains("<MappedBlocksCount> 7    </MappedBlocksCount>"));
        assert_eq!(Bmap::parse(&x).unwrap(), b);
        let bad = x.replace("1220-1221", "1220-1222");
        assert!(Bmap::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }

    #[test]
    fn single_block_range_and_garbage() {
        let mut b = sample();
        b.ranges[1].last = 1220;
        b.mapped_blocks = 6;
        let x = b.to_xml();
        assert!(x.contains("> 1220 </Range>"));
        assert_eq!(Bmap::parse(&x).unwrap(), b);
        for g in [
            "",
            "<bmap>",
            "not xml at all",
            "<bmap version=\"9.0\"></bmap>",
        ] {
            assert!(Bmap::parse(g).is_err());
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(100), "100 bytes");
        assert_eq!(human_size(10 << 20), "10.0 MiB");
        assert_eq!(human_size(2_791_728_742), "2.6 GiB");
    }

    #[test]
    fn extents_merge_and_align() {
        let b = Bmap::from_extents(14_000, &[(0, 100), (4000, 200), (13_000, 5000)], |_, l| {
            Ok(l.to_string())
        })
        .unwrap();
        let r: Vec<_> = b.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(r, vec![(0, 1), (3, 3)]);
        assert_eq!(b.ranges[1].sha256, (14_000 - 3 * 4096).to_string());
        assert_eq!(b.blocks_total, 4);
    }
}
