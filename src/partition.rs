//! Partition tables: read and write MBR (mbrman) and GPT (gptman) layouts.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fs::File;
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Logical sector size; every supported base uses 512-byte sectors.
pub const SECTOR: u64 = 512;

/// Which table a disk has, with the identity that must survive a rebuild.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TableKind {
    /// MBR with its 32-bit disk signature (PARTUUID prefix on Raspberry Pi OS).
    Mbr { disk_signature: u32 },
    /// GPT with its disk GUID (bytes as stored on disk).
    Gpt { disk_guid: [u8; 16] },
}

/// A partition type: an MBR type byte or a GPT type GUID (bytes as on disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PartType {
    Mbr(u8),
    Gpt([u8; 16]),
}

/// One partition; offsets in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based partition number (MBR slot or GPT entry index).
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub part_type: PartType,
    /// GPT unique partition GUID (bytes as on disk).
    pub unique_guid: Option<[u8; 16]>,
    /// GPT partition name (empty on MBR).
    pub name: String,
    /// MBR boot flag.
    pub bootable: bool,
    /// GPT attribute bits.
    pub attributes: u64,
}

impl Partition {
    /// First byte after the partition.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// A whole disk layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskLayout {
    pub table: TableKind,
    /// Sorted by partition number.
    pub partitions: Vec<Partition>,
}

impl DiskLayout {
    /// The partition with number `number`, if any.
    pub fn by_number(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

/// Parse a GUID in its text form (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`) into on-disk bytes
/// (first three groups little-endian). Usable in `const` items.
pub const fn guid(text: &str) -> [u8; 16] {
    let t = text.as_bytes();
    assert!(t.len() == 36, "GUID text must have 36 characters");
    // Byte order on disk: groups 1-3 reversed, groups 4-5 as written.
    const ORDER: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    // Text offset of each byte in written order.
    const POS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let hi = hex_digit(t[POS[i]]);
        let lo = hex_digit(t[POS[i] + 1]);
        out[ORDER[i]] = hi << 4 | lo;
        i += 1;
    }
    out
}

const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("invalid hex digit in GUID"),
    }
}

/// Parse GUID text at run time (for user input); errors instead of panicking.
pub fn parse_guid(text: &str) -> Result<[u8; 16]> {
    let t = text.trim();
    let ok = t.len() == 36
        && t.bytes().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if !ok {
        bail!("invalid GUID {text:?} (expected XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)");
    }
    Ok(guid(t))
}

/// GUID bytes as stored on disk → the usual upper-case text form (mixed-endian).
pub fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

/// EFI System Partition type GUID.
pub const ESP_TYPE: [u8; 16] = guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// BIOS boot partition type GUID (GRUB core.img).
pub const BIOS_BOOT_TYPE: [u8; 16] = guid("21686148-6449-6E6F-744E-656564454649");
/// Generic Linux filesystem data type GUID.
pub const LINUX_FS_TYPE: [u8; 16] = guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
/// Microsoft basic data type GUID (a FAT data partition such as `CIDATA`).
pub const BASIC_DATA_TYPE: [u8; 16] = guid("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
/// Discoverable-partitions root types (x86-64, arm64).
pub const ROOT_X86_64_TYPE: [u8; 16] = guid("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
pub const ROOT_ARM64_TYPE: [u8; 16] = guid("B921B045-1DF0-41C3-AF44-4C6F280D3FAE");

/// GPT entries we write (the usual 128 × 128 bytes = 32 sectors).
const GPT_ENTRIES: u64 = 128;
/// Sectors taken by the GPT entry array.
const GPT_ARRAY_SECTORS: u64 = GPT_ENTRIES * 128 / SECTOR;
/// First usable LBA with a 128-entry array: MBR + header + 32 array sectors.
pub const GPT_FIRST_USABLE_LBA: u64 = 2 + GPT_ARRAY_SECTORS;
/// Sectors at the end of the disk taken by the backup array + backup header.
pub const GPT_BACKUP_SECTORS: u64 = GPT_ARRAY_SECTORS + 1;

/// Read the partition table of `file` (`path` only names it in errors).
pub fn read_layout(file: &mut File, path: &Path) -> Result<DiskLayout> {
    let len = crate::disk::size_of(file)
        .with_context(|| format!("reading partition table of {}: size", path.display()))?;
    if len < SECTOR {
        bail!(
            "reading partition table of {}: the file has {len} bytes, too small for a partition table",
            path.display()
        );
    }
    let mut sector0 = [0u8; 512];
    file.read_exact_at(&mut sector0, 0)
        .with_context(|| format!("reading partition table of {}: sector 0", path.display()))?;
    if sector0[510..512] != [0x55, 0xAA] {
        bail!(
            "reading partition table of {}: no MBR or GPT found (sector 0 has no 55 AA boot signature)",
            path.display()
        );
    }
    let header = mbrman::MBRHeader::read_from(&mut Cursor::new(&sector0[..]))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the MBR of {}", path.display()))?;
    if header.iter().any(|(_, p)| p.is_used() && p.sys == 0xEE) {
        return read_gpt(file, path);
    }
    let disk_signature = u32::from_le_bytes(header.disk_signature);
    let mut partitions = Vec::new();
    for (i, p) in header.iter() {
        if p.is_unused() {
            continue;
        }
        if p.is_extended() {
            bail!(
                "reading the MBR of {}: partition {i} is an extended partition (type 0x{:02x}); \
                 logical partitions are not supported",
                path.display(),
                p.sys
            );
        }
        partitions.push(Partition {
            number: i as u32,
            start: u64::from(p.starting_lba) * SECTOR,
            size: u64::from(p.sectors) * SECTOR,
            part_type: PartType::Mbr(p.sys),
            unique_guid: None,
            name: String::new(),
            bootable: p.is_active(),
            attributes: 0,
        });
    }
    Ok(DiskLayout {
        table: TableKind::Mbr { disk_signature },
        partitions,
    })
}

fn read_gpt(file: &mut File, path: &Path) -> Result<DiskLayout> {
    let gpt = gptman::GPT::read_from(file, SECTOR)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the GPT of {}", path.display()))?;
    let partitions = gpt
        .iter()
        .filter(|(_, e)| e.is_used())
        .map(|(i, e)| {
            if e.ending_lba < e.starting_lba {
                bail!(
                    "reading the GPT of {}: partition {i} ends (LBA {}) before it starts (LBA {})",
                    path.display(),
                    e.ending_lba,
                    e.starting_lba
                );
            }
            Ok(Partition {
                number: i,
                start: e.starting_lba * SECTOR,
                size: (e.ending_lba - e.starting_lba + 1) * SECTOR,
                part_type: PartType::Gpt(e.partition_type_guid),
                unique_guid: Some(e.unique_partition_guid),
                name: e.partition_name.as_str().to_string(),
                bootable: false,
                attributes: e.attribute_bits,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DiskLayout {
        table: TableKind::Gpt {
            disk_guid: gpt.header.disk_guid,
        },
        partitions,
    })
}

/// Check `layout` for a disk of `disk_size` bytes: numbers, alignment, overlaps, bounds.
pub fn validate_layout(layout: &DiskLayout, disk_size: u64) -> Result<()> {
    if !disk_size.is_multiple_of(SECTOR) {
        bail!("disk size {disk_size} is not a multiple of {SECTOR} bytes");
    }
    let (max_number, first, last_end) = match layout.table {
        TableKind::Mbr { .. } => (4u32, SECTOR, disk_size.min(u64::from(u32::MAX) * SECTOR)),
        TableKind::Gpt { .. } => {
            let sectors = disk_size / SECTOR;
            if sectors < GPT_FIRST_USABLE_LBA + GPT_BACKUP_SECTORS + 1 {
                bail!("disk size {disk_size} is too small for a GPT");
            }
            (
                GPT_ENTRIES as u32,
                GPT_FIRST_USABLE_LBA * SECTOR,
                (sectors - GPT_BACKUP_SECTORS) * SECTOR,
            )
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for p in &layout.partitions {
        let n = p.number;
        if n == 0 || n > max_number {
            bail!("partition number {n} is out of range 1..={max_number}");
        }
        if !seen.insert(n) {
            bail!("partition number {n} is used twice");
        }
        if p.start % SECTOR != 0 || p.size % SECTOR != 0 {
            bail!(
                "partition {n} is misaligned: start {} and size {} must be multiples of {SECTOR}",
                p.start,
                p.size
            );
        }
        if p.size == 0 {
            bail!("partition {n} has size 0");
        }
        if p.start < first {
            bail!(
                "partition {n} starts at byte {} inside the partition table area (first usable byte {first})",
                p.start
            );
        }
        if p.end() > last_end {
            bail!(
                "partition {n} ends at byte {} beyond the end of the usable disk (byte {last_end}, disk size {disk_size})",
                p.end()
            );
        }
        match (&layout.table, &p.part_type) {
            (TableKind::Mbr { .. }, PartType::Mbr(t)) => {
                if *t == 0 {
                    bail!("partition {n} has MBR type 0x00 (means an empty slot)");
                }
                if matches!(t, 0x05 | 0x0f | 0x85 | 0xc5 | 0xd5) {
                    bail!("partition {n} has an extended partition type 0x{t:02x}: not supported");
                }
            }
            (TableKind::Gpt { .. }, PartType::Gpt(t)) => {
                if *t == [0; 16] {
                    bail!("partition {n} has the all-zero GPT type (means an unused entry)");
                }
                if p.name.encode_utf16().count() > 36 {
                    bail!(
                        "partition {n}: name {:?} is longer than 36 UTF-16 units",
                        p.name
                    );
                }
            }
            _ => bail!("partition {n}: its type does not match the table kind"),
        }
    }
    if let TableKind::Gpt { .. } = layout.table {
        let mut guids = std::collections::BTreeSet::new();
        for p in &layout.partitions {
            let Some(g) = p.unique_guid else {
                bail!(
                    "partition {}: a GPT partition needs a unique GUID",
                    p.number
                );
            };
            if g == [0; 16] || !guids.insert(g) {
                bail!(
                    "partition {}: unique GUID {} is zero or used twice",
                    p.number,
                    guid_string(&g)
                );
            }
        }
    }
    let mut by_start: Vec<&Partition> = layout.partitions.iter().collect();
    by_start.sort_by_key(|p| p.start);
    for w in by_start.windows(2) {
        if w[0].end() > w[1].start {
            bail!(
                "partitions {} (bytes {}..{}) and {} (bytes {}..{}) overlap",
                w[0].number,
                w[0].start,
                w[0].end(),
                w[1].number,
                w[1].start,
                w[1].end()
            );
        }
    }
    Ok(())
}

/// Write `layout` to `file` for a disk of `disk_size` bytes (GPT: primary, backup and protective MBR).
///
/// The file is grown to `disk_size` if shorter. Bytes 0..440 of sector 0 (boot code, e.g. GRUB's
/// boot.img on BIOS images) are left as they are, so a caller may copy them from the base first.
pub fn write_layout(file: &mut File, layout: &DiskLayout, disk_size: u64) -> Result<()> {
    validate_layout(layout, disk_size).context("writing the partition table")?;
    let len =
        crate::disk::size_of(file).context("writing the partition table: size of the output")?;
    if len < disk_size {
        file.set_len(disk_size)
            .context("writing the partition table: growing the output")?;
    }
    match &layout.table {
        TableKind::Mbr { disk_signature } => write_mbr(file, layout, *disk_signature),
        TableKind::Gpt { disk_guid } => write_gpt(file, layout, *disk_guid, disk_size),
    }
}

/// CHS tuple as sfdisk writes it on a disk without real geometry (255 heads, 63 sectors):
/// addresses beyond cylinder 1023 become 1023/254/63 (bytes FE FF FF).
fn chs(lba: u64) -> mbrman::CHS {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cyl = lba / (HEADS * SECTORS);
    if cyl > 1023 {
        return mbrman::CHS::new(1023, 254, 63);
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    mbrman::CHS::new(cyl as u16, head as u8, sector as u8)
}

fn write_mbr(file: &mut File, layout: &DiskLayout, disk_signature: u32) -> Result<()> {
    let mut sector0 = [0u8; 512];
    file.read_exact_at(&mut sector0, 0)
        .context("writing the MBR: reading sector 0")?;
    let mut header = mbrman::MBRHeader::new(disk_signature.to_le_bytes());
    header.bootstrap_code.copy_from_slice(&sector0[..440]);
    for p in &layout.partitions {
        let PartType::Mbr(sys) = p.part_type else {
            bail!(
                "partition {}: its type does not match the table kind",
                p.number
            );
        };
        let first = p.start / SECTOR;
        let last = p.end() / SECTOR - 1;
        let entry = mbrman::MBRPartitionEntry {
            boot: if p.bootable { 0x80 } else { 0x00 },
            first_chs: chs(first),
            sys,
            last_chs: chs(last),
            starting_lba: u32::try_from(first).context("MBR partition start beyond 2 TiB")?,
            sectors: u32::try_from(p.size / SECTOR).context("MBR partition size beyond 2 TiB")?,
        };
        let slot = header
            .get_mut(p.number as usize)
            .with_context(|| format!("MBR partition number {} out of range", p.number))?;
        *slot = entry;
    }
    let mut buf = Cursor::new(Vec::with_capacity(512));
    header
        .write_into(&mut buf)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("writing the MBR: encoding")?;
    let bytes = buf.into_inner();
    if bytes.len() != 512 {
        bail!(
            "writing the MBR: encoded {} bytes instead of 512",
            bytes.len()
        );
    }
    file.write_all_at(&bytes, 0)
        .context("writing the MBR: sector 0")?;
    Ok(())
}

fn write_gpt(
    file: &mut File,
    layout: &DiskLayout,
    disk_guid: [u8; 16],
    disk_size: u64,
) -> Result<()> {
    // The window claims to be exactly `disk_size` long, so gptman puts the backup header there
    // whatever the file's current length.
    let mut view = crate::window::FileWindow::read_write(file, 0, disk_size);
    let mut gpt = gptman::GPT::new_from(&mut view, SECTOR, disk_guid)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("writing the GPT: new header")?;
    for p in &layout.partitions {
        let PartType::Gpt(type_guid) = p.part_type else {
            bail!(
                "partition {}: its type does not match the table kind",
                p.number
            );
        };
        let unique = p.unique_guid.with_context(|| {
            format!(
                "partition {}: a GPT partition needs a unique GUID",
                p.number
            )
        })?;
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: type_guid,
            unique_partition_guid: unique,
            starting_lba: p.start / SECTOR,
            ending_lba: p.end() / SECTOR - 1,
            attribute_bits: p.attributes,
            partition_name: p.name.as_str().into(),
        };
    }
    gpt.write_into(&mut view)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("writing the GPT: headers and entries")?;
    gptman::GPT::write_protective_mbr_into(&mut view, SECTOR)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("writing the GPT: protective MBR")?;
    // gptman writes FF FF FF as the ending CHS; sgdisk computes it like sfdisk. Do the same.
    let c = chs(disk_size / SECTOR - 1);
    let end_chs = [
        c.head,
        c.sector | ((c.cylinder >> 2) as u8 & 0xC0),
        (c.cylinder & 0xFF) as u8,
    ];
    file.write_all_at(&end_chs, 446 + 5)
        .context("writing the GPT: protective MBR")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip() {
        let t = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        let g = guid(t);
        assert_eq!(&g[..4], &[0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(guid_string(&g), t);
        assert_eq!(parse_guid(&t.to_lowercase()).unwrap(), g);
        assert!(parse_guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93").is_err());
        assert!(parse_guid("C12A7328xF81F-11D2-BA4B-00A0C93EC93B").is_err());
    }

    #[test]
    fn chs_like_sfdisk() {
        let c = chs(2048);
        assert_eq!((c.cylinder, c.head, c.sector), (0, 32, 33));
        let c = chs(100_000_000);
        assert_eq!((c.cylinder, c.head, c.sector), (1023, 254, 63));
    }

    fn mbr_layout() -> DiskLayout {
        DiskLayout {
            table: TableKind::Mbr {
                disk_signature: 0x6c8f4d2e,
            },
            partitions: vec![
                Partition {
                    number: 1,
                    start: 1 << 20,
                    size: 4 << 20,
                    part_type: PartType::Mbr(0x0c),
                    unique_guid: None,
                    name: String::new(),
                    bootable: false,
                    attributes: 0,
                },
                Partition {
                    number: 2,
                    start: 5 << 20,
                    size: 3 << 20,
                    part_type: PartType::Mbr(0x83),
                    unique_guid: None,
                    name: String::new(),
                    bootable: false,
                    attributes: 0,
                },
            ],
        }
    }

    #[test]
    fn validation_errors() {
        let l = mbr_layout();
        assert!(validate_layout(&l, 8 << 20).is_ok());
        let e = validate_layout(&l, 7 << 20).unwrap_err().to_string();
        assert!(e.contains("beyond the end"), "{e}");
        let mut o = l.clone();
        o.partitions[1].start = 4 << 20;
        let e = validate_layout(&o, 16 << 20).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
        let mut m = l.clone();
        m.partitions[1].start += 100;
        let e = validate_layout(&m, 16 << 20).unwrap_err().to_string();
        assert!(e.contains("misaligned"), "{e}");
        let mut n = l.clone();
        n.partitions[1].number = 5;
        assert!(validate_layout(&n, 16 << 20).is_err());
        let mut t = l;
        t.partitions[0].part_type = PartType::Gpt(ESP_TYPE);
        assert!(validate_layout(&t, 16 << 20).is_err());
    }

    #[test]
    fn mbr_round_trip_in_memory_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(8 << 20).unwrap();
        let l = mbr_layout();
        write_layout(&mut f, &l, 8 << 20).unwrap();
        assert_eq!(read_layout(&mut f, &p).unwrap(), l);
    }
}
