//! Probing filesystems: FAT and ext4 signatures and labels, the files that identify a boot
//! FAT, and reads from an ext4 root.

use crate::partition::Partition;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What a partition holds, from its first sectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsKind {
    /// FAT12/16/32 (`bits`), with the boot-sector volume label (empty for `NO NAME`).
    Fat { bits: u8, label: String },
    /// ext2/3/4 with its volume label and filesystem UUID (lower-case text).
    Ext4 { label: String, uuid: String },
    /// Anything else (BIOS boot, swap, unformatted...).
    Unknown,
}

impl FsKind {
    /// Volume label, if the filesystem has one.
    pub fn label(&self) -> Option<&str> {
        match self {
            FsKind::Fat { label, .. } | FsKind::Ext4 { label, .. } if !label.is_empty() => {
                Some(label)
            }
            _ => None,
        }
    }
}

/// Identify the filesystem of partition `p` from its boot sector / superblock.
pub fn probe_fs(file: &File, p: &Partition) -> FsKind {
    let mut sb = [0u8; 2048];
    if p.size < 2048 || file.read_exact_at(&mut sb, p.start).is_err() {
        return FsKind::Unknown;
    }
    if let Some((bits, label)) = fat_label(&sb[..512]) {
        return FsKind::Fat { bits, label };
    }
    // ext2/3/4 superblock at byte 1024: magic 0xEF53 at 0x38, UUID at 0x68, label at 0x78.
    let s = &sb[1024..];
    if s[0x38..0x3A] == [0x53, 0xEF] {
        let label = String::from_utf8_lossy(&s[0x78..0x88])
            .trim_end_matches('\0')
            .to_string();
        let u = &s[0x68..0x78];
        let h = hex::encode(u);
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        return FsKind::Ext4 { label, uuid };
    }
    FsKind::Unknown
}

/// FAT type and boot-sector label: FAT32 keeps it at 0x47, FAT12/16 at 0x2B.
fn fat_label(bs: &[u8]) -> Option<(u8, String)> {
    if bs.len() < 512 || bs[510..512] != [0x55, 0xAA] {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([bs[11], bs[12]]);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) || bs[13] == 0 {
        return None;
    }
    let (bits, label) = if &bs[0x52..0x57] == b"FAT32" {
        (32, &bs[0x47..0x52])
    } else if &bs[0x36..0x3B] == b"FAT16" {
        (16, &bs[0x2B..0x36])
    } else if &bs[0x36..0x3B] == b"FAT12" {
        (12, &bs[0x2B..0x36])
    } else {
        return None;
    };
    let label = String::from_utf8_lossy(label).trim_end().to_string();
    let label = if label == "NO NAME" {
        String::new()
    } else {
        label
    };
    Some((bits, label))
}

/// An owned window for ext4-view (which wants `'static` readers).
struct Ext4Window {
    file: File,
    start: u64,
    len: u64,
}

impl ext4_view::Ext4Read for Ext4Window {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        match start_byte.checked_add(dst.len() as u64) {
            Some(end) if end <= self.len => {}
            _ => return Err("read beyond the end of the partition".into()),
        }
        self.file.read_exact_at(dst, self.start + start_byte)?;
        Ok(())
    }
}

/// Which of the files that identify a boot FAT exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootFiles {
    pub cmdline_txt: bool,
    pub config_txt: bool,
    pub efi_dir: bool,
}

/// Look for `cmdline.txt`, `config.txt` and `EFI/` in the FAT at partition `p` (fatfs, read-only).
pub fn boot_files(file: &File, p: &Partition) -> Result<BootFiles> {
    let w = crate::window::FileWindow::read_only(file, p.start, p.size);
    let fs = fatfs::FileSystem::new(w, fatfs::FsOptions::new())
        .with_context(|| format!("reading the FAT of partition {}", p.number))?;
    let root = fs.root_dir();
    let mut found = BootFiles::default();
    for e in root.iter() {
        let e = e.with_context(|| format!("reading the FAT of partition {}", p.number))?;
        let name = e.file_name().to_ascii_lowercase();
        match (name.as_str(), e.is_dir()) {
            ("cmdline.txt", false) => found.cmdline_txt = true,
            ("config.txt", false) => found.config_txt = true,
            ("efi", true) => found.efi_dir = true,
            _ => {}
        }
    }
    Ok(found)
}

/// Read a file from the ext4 filesystem in partition `p` (symlinks followed).
pub fn read_ext4_file(raw: &Path, p: &Partition, path: &str) -> Result<Vec<u8>> {
    read_ext4_file_if_exists(raw, p, path)?.with_context(|| {
        format!(
            "reading {path} from partition {} in {}: file not found",
            p.number,
            raw.display()
        )
    })
}

/// Like [`read_ext4_file`], but `Ok(None)` when `path` does not exist in the filesystem.
pub fn read_ext4_file_if_exists(raw: &Path, p: &Partition, path: &str) -> Result<Option<Vec<u8>>> {
    let file = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let fs = ext4_view::Ext4::load(Box::new(Ext4Window {
        file,
        start: p.start,
        len: p.size,
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| {
        format!(
            "reading the ext4 filesystem of partition {} in {}",
            p.number,
            raw.display()
        )
    })?;
    match fs.read(path) {
        Ok(b) => Ok(Some(b)),
        Err(ext4_view::Ext4Error::NotFound) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{e}")).with_context(|| {
            format!(
                "reading {path} from partition {} in {}",
                p.number,
                raw.display()
            )
        }),
    }
}

/// `/etc/os-release` (or `/usr/lib/os-release`) of the root filesystem.
pub(super) fn read_os_release(raw: &Path, p: &Partition) -> Option<String> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|f| read_ext4_file(raw, p, f).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A key of os-release (`ID`, `VERSION_CODENAME`...) without quotes.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_labels() {
        let mut bs = [0u8; 512];
        bs[11] = 0;
        bs[12] = 2;
        bs[13] = 1;
        bs[510] = 0x55;
        bs[511] = 0xAA;
        bs[0x52..0x57].copy_from_slice(b"FAT32");
        bs[0x47..0x52].copy_from_slice(b"bootfs     ");
        assert_eq!(fat_label(&bs), Some((32, "bootfs".to_string())));
        let mut b16 = bs;
        b16[0x52..0x57].copy_from_slice(b"\0\0\0\0\0");
        b16[0x36..0x3B].copy_from_slice(b"FAT16");
        b16[0x2B..0x36].copy_from_slice(b"NO NAME    ");
        assert_eq!(fat_label(&b16), Some((16, String::new())));
        bs[510] = 0;
        assert_eq!(fat_label(&bs), None);
    }

    #[test]
    fn os_release_fields() {
        let t = "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_CODENAME='noble'\n";
        assert_eq!(os_release_field(t, "ID").as_deref(), Some("ubuntu"));
        assert_eq!(
            os_release_field(t, "VERSION_CODENAME").as_deref(),
            Some("noble")
        );
        assert_eq!(os_release_field(t, "X"), None);
    }
}
