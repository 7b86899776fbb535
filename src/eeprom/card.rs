//! The bootloader update card: MBR + FAT32 holding recovery.bin, pieeprom.bin and pieeprom.sig,
//! laid out like rpi-eeprom's recovery images (`imager/make-release`, `imager/make-recovery-images`).

use crate::fat::{FatFile, FatImage, FatOptions, FileData};
use crate::partition::{DiskLayout, PartType, Partition, TableKind, SECTOR};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// MBR disk signature of rpi-eeprom's recovery images (`label-id: 0x0a7b5ac5`).
pub const CARD_DISK_SIGNATURE: u32 = 0x0a7b_5ac5;
/// First sector of the FAT partition.
pub const CARD_PART_START_SECTOR: u64 = 2048;
/// The FAT32 volume is at least this big (FAT32 needs > ~33 MiB with 512-byte clusters).
pub const CARD_FAT_MIN_SIZE: u64 = 64 * 1024 * 1024;
/// Volume label of the card's FAT.
pub const CARD_LABEL: &str = "RPI-EEPROM";

/// `pieeprom.sig` as rpi-eeprom-digest writes it: lowercase hex sha256, then `ts: <unix seconds>`.
pub fn sig_file(image: &[u8], ts: i64) -> String {
    format!("{}\nts: {ts}\n", hex::encode(Sha256::digest(image)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds at 00:00 UTC of a `YYYY-MM-DD` date.
pub fn date_epoch(date: &str) -> Option<i64> {
    let mut it = date.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if date.len() != 10
        || !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400)
}

/// The card's one timestamp (`ts:` in pieeprom.sig and every FAT time), never the clock:
/// SOURCE_DATE_EPOCH when set; else the date in an EEPROM file name like `pieeprom-2026-09-23.bin`;
/// else the pinned release date.
pub fn card_epoch(
    source_date_epoch: Option<&str>,
    eeprom_file_name: Option<&str>,
    pinned_release_date: &str,
) -> Result<i64> {
    // An empty SOURCE_DATE_EPOCH counts as unset, as in most reproducible-build tools.
    if let Some(s) = source_date_epoch.filter(|s| !s.trim().is_empty()) {
        return match s.trim().parse::<i64>() {
            Ok(v) if v >= 0 => Ok(v),
            _ => bail!("SOURCE_DATE_EPOCH={s:?} is not a non-negative integer"),
        };
    }
    if let Some(d) = eeprom_file_name
        .and_then(|n| n.strip_prefix("pieeprom-"))
        .and_then(|n| n.get(..10))
        .and_then(date_epoch)
    {
        return Ok(d);
    }
    match date_epoch(pinned_release_date) {
        Some(d) => Ok(d),
        None => bail!("pinned release_date {pinned_release_date:?} is not YYYY-MM-DD"),
    }
}

/// What goes on the card.
pub struct CardInputs {
    /// The EEPROM image with its new bootconf.txt embedded.
    pub eeprom: Vec<u8>,
    pub recovery: Vec<u8>,
    /// The embedded config, repeated in README.txt for humans.
    pub bootconf: String,
    /// Unix seconds for pieeprom.sig and FAT timestamps.
    pub timestamp: i64,
    /// Where the EEPROM image came from (README.txt).
    pub eeprom_source: String,
}

/// README.txt: what the card does and how to use it (CRLF, for any OS that opens the card).
fn readme(inp: &CardInputs) -> String {
    let sha = hex::encode(Sha256::digest(&inp.eeprom));
    let mut lines = vec![
        "Raspberry Pi 4 bootloader (EEPROM) update card, made by nodeforge".to_string(),
        String::new(),
        format!("EEPROM image: {}", inp.eeprom_source),
        format!("sha256 of pieeprom.bin: {sha}"),
        String::new(),
        "Embedded bootloader config (bootconf.txt):".to_string(),
    ];
    lines.extend(inp.bootconf.lines().map(|l| format!("    {l}")));
    for l in [
        "",
        "To update the EEPROM:",
        "1. Power off the Raspberry Pi 4 and remove any USB drives.",
        "2. Insert this SD card and power on.",
        "3. Wait at least 10 seconds: the green LED blinks rapidly forever on success",
        "   (an HDMI screen turns green; red means failure).",
        "4. Power off, remove the card, attach the USB drive with the node image, power on.",
        "",
        "recovery.bin renames itself to recovery.000 after a successful update so it",
        "does not run again; reflash this image to use the card a second time.",
    ] {
        lines.push(l.to_string());
    }
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out
}

/// The card's files, sorted by name.
pub fn card_files(inp: &CardInputs) -> Vec<FatFile> {
    let bytes = |path: &str, data: Vec<u8>| FatFile {
        path: path.to_string(),
        data: FileData::Bytes(data),
    };
    vec![
        bytes("README.txt", readme(inp).into_bytes()),
        bytes("pieeprom.bin", inp.eeprom.clone()),
        bytes(
            "pieeprom.sig",
            sig_file(&inp.eeprom, inp.timestamp).into_bytes(),
        ),
        bytes("recovery.bin", inp.recovery.clone()),
    ]
}

/// Write the card image to `out` (via `out.partial`, renamed when complete).
pub fn write_card(out: &Path, inp: &CardInputs) -> Result<()> {
    let digest = Sha256::digest(&inp.eeprom);
    let volume_id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut fat = FatImage::new(
        card_files(inp),
        FatOptions {
            label: CARD_LABEL.to_string(),
            volume_id,
            timestamp: inp.timestamp,
            min_size: CARD_FAT_MIN_SIZE,
        },
    )
    .context("planning the card's FAT32 volume")?;
    // As mkfs.fat on a partition device would: the BPB records where the partition starts.
    fat.set_hidden_sectors(CARD_PART_START_SECTOR as u32);
    let start = CARD_PART_START_SECTOR * SECTOR;
    let disk_size = start + fat.size();
    let layout = DiskLayout {
        table: TableKind::Mbr {
            disk_signature: CARD_DISK_SIGNATURE,
        },
        partitions: vec![Partition {
            number: 1,
            start,
            size: fat.size(),
            part_type: PartType::Mbr(0x0c),
            unique_guid: None,
            name: String::new(),
            bootable: false,
            attributes: 0,
        }],
    };

    let partial = partial_path(out);
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        f.set_len(disk_size)
            .with_context(|| format!("sizing {}", partial.display()))?;
        fat.write_at(&f, start)
            .with_context(|| format!("writing the FAT32 volume into {}", partial.display()))?;
        crate::partition::write_layout(&mut f, &layout, disk_size)
            .with_context(|| format!("writing the MBR of {}", partial.display()))?;
        sync(&f, &partial)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))
}

fn sync(f: &File, path: &Path) -> Result<()> {
    f.sync_all()
        .with_context(|| format!("flushing {}", path.display()))
}

/// `card.img` → `card.img.partial`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_format() {
        let s = sig_file(b"abc", 1700000000);
        assert_eq!(
            s,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\nts: 1700000000\n"
        );
    }

    #[test]
    fn files_and_readme() {
        let inp = CardInputs {
            eeprom: vec![1, 2, 3],
            recovery: vec![4],
            bootconf: "[all]\nBOOT_ORDER=0xf14\n".into(),
            timestamp: 5,
            eeprom_source: "local file pieeprom-2025-05-08.bin".into(),
        };
        let files = card_files(&inp);
        let names: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            ["README.txt", "pieeprom.bin", "pieeprom.sig", "recovery.bin"]
        );
        let FileData::Bytes(readme) = &files[0].data else {
            panic!("README.txt should be bytes")
        };
        let readme = String::from_utf8(readme.clone()).unwrap();
        assert!(readme.contains("\r\n    BOOT_ORDER=0xf14\r\n"));
        assert!(readme.contains("\r\n   (an HDMI"));
        assert!(readme.contains(&hex::encode(Sha256::digest([1u8, 2, 3]))));
        assert_eq!(
            partial_path(Path::new("a/card.img")),
            Path::new("a/card.img.partial")
        );
    }

    #[test]
    fn epoch_sources() {
        assert_eq!(date_epoch("1970-01-01"), Some(0));
        assert_eq!(date_epoch("2026-09-23"), Some(1790121600));
        assert_eq!(date_epoch("2026-9-23"), None);
        assert_eq!(
            card_epoch(Some("42"), Some("pieeprom-2025-01-01.bin"), "2026-09-23").unwrap(),
            42
        );
        assert!(card_epoch(Some("soon"), None, "2026-09-23").is_err());
        assert_eq!(
            card_epoch(Some(""), None, "2026-09-23").unwrap(),
            1790121600
        );
        assert_eq!(
            card_epoch(None, Some("pieeprom-2024-01-22.bin"), "2026-09-23").unwrap(),
            date_epoch("2024-01-22").unwrap()
        );
        assert_eq!(
            card_epoch(None, Some("my.bin"), "2026-09-23").unwrap(),
            1790121600
        );
    }
}
