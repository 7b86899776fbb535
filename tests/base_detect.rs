//! Family detection on fixtures made by mkbase.sh (sfdisk/sgdisk/mkfs.vfat/mke2fs).

mod base_fixtures;

use base_fixtures::{raw, run};
use nodeforge::base::{self, Family, FsKind};
use nodeforge::partition::{guid_string, PartType, TableKind};
use std::process::Command;

fn detect_ok(family: &str) -> base::Detected {
    let p = raw(family);
    base::detect(&p, None).unwrap_or_else(|e| panic!("{family}: {e:#}"))
}

#[test]
fn raspios_detected() {
    let d = detect_ok("raspios");
    assert_eq!(d.family, Family::Raspios);
    assert_eq!(
        d.layout.table,
        TableKind::Mbr {
            disk_signature: 0x6c8f4d2e
        }
    );
    assert_eq!(d.layout.partitions[d.boot].number, 1);
    assert_eq!(d.layout.partitions[d.boot].start, 8 << 20);
    assert_eq!(d.layout.partitions[d.boot].part_type, PartType::Mbr(0x0c));
    assert_eq!(d.layout.partitions[d.root].number, 2);
    assert_eq!(
        d.fs[d.boot],
        FsKind::Fat {
            bits: 32,
            label: "bootfs".into()
        }
    );
    assert_eq!(
        d.fs[d.root],
        FsKind::Ext4 {
            label: "rootfs".into(),
            uuid: "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into()
        }
    );
    let os = d.os_release.expect("os-release read from ext4");
    assert!(os.contains("VERSION_CODENAME=trixie"), "{os}");
}

#[test]
fn ubuntu_raspi_detected() {
    let d = detect_ok("ubuntu-raspi");
    assert_eq!(d.family, Family::UbuntuRaspi);
    assert!(d.layout.partitions[d.boot].bootable);
    assert_eq!(d.fs[d.boot].label(), Some("system-boot"));
    assert_eq!(d.fs[d.root].label(), Some("writable"));
    // /etc/os-release is a symlink to ../usr/lib/os-release there.
    let os = d.os_release.expect("os-release through a symlink");
    assert_eq!(base::os_release_field(&os, "ID").as_deref(), Some("ubuntu"));
}

#[test]
fn debian_raspi_detected() {
    let d = detect_ok("debian-raspi");
    assert_eq!(d.family, Family::DebianRaspi);
    assert_eq!(
        d.fs[d.boot],
        FsKind::Fat {
            bits: 16,
            label: "RASPIFIRM".into()
        }
    );
    assert_eq!(d.fs[d.root].label(), Some("RASPIROOT"));
}

#[test]
fn debian_generic_detected_and_opened() {
    let p = raw("debian-generic");
    let b = base::open(&p, None).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(b.family, Family::DebianGeneric);
    assert!(b.boot_fat.is_none(), "the ESP is kept byte for byte");
    let boot = &b.layout.partitions[b.boot];
    let root = &b.layout.partitions[b.root];
    assert_eq!((boot.number, boot.start), (15, 8192 * 512));
    assert_eq!((root.number, root.start), (1, 49152 * 512));
    assert_eq!(
        guid_string(&root.unique_guid.unwrap()),
        "3C1A2B4D-5E6F-4A7B-8C9D-0E1F2A3B4C5D"
    );
    match b.layout.table {
        TableKind::Gpt { disk_guid } => {
            assert_eq!(
                guid_string(&disk_guid),
                "5B1F0E3A-8C1D-4E2F-9A6B-7C8D9E0F1A2B"
            )
        }
        ref t => panic!("expected GPT, got {t:?}"),
    }
    assert_eq!(b.size, std::fs::metadata(&p).unwrap().len());
    assert!(b.os_release.unwrap().contains("bookworm"));
    let d = base::detect(&p, None).unwrap();
    assert!(
        matches!(&d.fs[d.root], FsKind::Ext4 { uuid, .. } if uuid == "9d2c5b1a-3e4f-4a6b-8c7d-1e2f3a4b5c6d"),
        "{:?}",
        d.fs[d.root]
    );
}

#[test]
fn pi_families_open_with_boot_fat() {
    for fam in ["raspios", "ubuntu-raspi", "debian-raspi"] {
        let b = base::open(&raw(fam), None).unwrap_or_else(|e| panic!("{fam}: {e:#}"));
        let fat = b.boot_fat.expect("Pi families carry the boot FAT");
        assert!(
            fat.files.iter().any(|f| f.path == "cmdline.txt"),
            "{fam}: cmdline.txt missing from the boot FAT"
        );
        assert!(fat.files.iter().any(|f| f.path.starts_with("overlays/")));
    }
}

#[test]
fn family_override_wins() {
    let d = base::detect(&raw("debian-raspi"), Some(Family::Raspios)).unwrap();
    assert_eq!(d.family, Family::Raspios);
    assert_eq!(d.layout.partitions[d.boot].number, 1);
}

/// A copy of a fixture with the boot FAT's label bytes replaced (FAT32 label at 0x47).
fn relabelled(
    dir: &tempfile::TempDir,
    family: &str,
    new: &[u8; 11],
    name: &str,
) -> std::path::PathBuf {
    let out = dir.path().join(name);
    run(
        "cp",
        &[
            "--sparse=always",
            raw(family).to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let d = base::detect(&out, None).unwrap();
    let start = d.layout.partitions[d.boot].start;
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    f.write_all_at(new, start + 0x47).unwrap();
    out
}

#[test]
fn fallback_uses_os_release_when_labels_differ() {
    let dir = tempfile::tempdir().unwrap();
    let p = relabelled(&dir, "raspios", b"BOOT       ", "raspios-relabelled.img");
    let d = base::detect(&p, None).unwrap();
    assert_eq!(d.fs[d.boot].label(), Some("BOOT"));
    assert_eq!(
        d.family,
        Family::Raspios,
        "rpi-issue in the root says Raspberry Pi OS"
    );
    let p = relabelled(
        &dir,
        "ubuntu-raspi",
        b"FIRMWARE   ",
        "ubuntu-relabelled.img",
    );
    assert_eq!(base::detect(&p, None).unwrap().family, Family::UbuntuRaspi);
}

#[test]
fn unknown_layout_says_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    // MBR with one ext4 partition and no FAT.
    let img = dir.path().join("nofat.img");
    let root = dir.path().join("root.img");
    run("truncate", &["-s", "20M", img.to_str().unwrap()]);
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nlabel-id: 0x12345678\nstart=2048, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "data",
            root.to_str().unwrap(),
            "18M",
        ],
    );
    run(
        "dd",
        &[
            &format!("if={}", root.display()),
            &format!("of={}", img.display()),
            "bs=1M",
            "seek=1",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    let e = format!("{:#}", base::detect(&img, None).expect_err("must fail"));
    for want in [
        "nofat.img",
        "unknown layout",
        "MBR",
        "0x12345678",
        "p1 type 0x83",
        "ext4 label \"data\"",
        "no boot FAT",
    ] {
        assert!(e.contains(want), "missing {want:?} in: {e}");
    }
    // Not a disk at all.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let e = format!("{:#}", base::detect(&junk, None).expect_err("must fail"));
    assert!(e.contains("junk.img") && e.contains("no MBR or GPT"), "{e}");
    // Truncated image: the root partition runs past the end of the file.
    let short = dir.path().join("short.img");
    run(
        "cp",
        &[
            "--sparse=always",
            raw("raspios").to_str().unwrap(),
            short.to_str().unwrap(),
        ],
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap();
    f.set_len(90 << 20).unwrap();
    let e = format!("{:#}", base::detect(&short, None).expect_err("must fail"));
    eprintln!("{e}");
    assert!(e.contains("short.img"), "{e}");
}
