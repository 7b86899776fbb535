//! Bases nodeforge cannot use are refused by name before anything is cached: 4Kn disks (made
//! with `fdisk -b 4096`), logical partitions (sfdisk), an unknown family, a raw file that is not
//! a whole number of sectors. After each, the cache holds no entry.

mod base_fixtures;

use base_fixtures::{raw, run, sha256_file};
use nodeforge::base::unpack_to_cache;
use std::path::Path;

fn check_refused(input: &Path, want: &[&str]) {
    let cache = tempfile::tempdir().unwrap();
    let before = sha256_file(input);
    let e = format!(
        "{:#}",
        unpack_to_cache(input, &sha256_file(input), cache.path()).expect_err("must be refused")
    );
    eprintln!("{e}");
    for w in want {
        assert!(e.contains(w), "missing {w:?} in: {e}");
    }
    assert!(
        e.contains(&input.display().to_string()),
        "file not named: {e}"
    );
    let left: Vec<_> = std::fs::read_dir(cache.path().join("raw"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cache holds an entry: {left:?}");
    assert_eq!(sha256_file(input), before, "input modified");
}

/// A 64 MiB disk partitioned by `fdisk -b 4096` (`label` "o" = MBR, "g" = GPT) with a FAT
/// (4096-byte sectors) and an ext4 placed at the 4096-byte LBAs fdisk chose.
fn disk_4kn(dir: &Path, label: &str) -> std::path::PathBuf {
    let img = dir.join(format!("4kn-{label}.img"));
    let script = format!(
        "set -e; cd '{d}'; truncate -s 64M '{i}'; \
         printf '{label}\\nn\\n{p}1\\n256\\n+16M\\nn\\n{p}2\\n4352\\n\\nw\\n' | fdisk -b 4096 '{i}' >/dev/null; \
         mkfs.vfat -S 4096 -n BOOTFS -C fat.img 16384 >/dev/null; \
         mke2fs -q -F -t ext4 -b 4096 root.img 40M; \
         dd if=fat.img of='{i}' bs=4096 seek=256 conv=notrunc status=none; \
         dd if=root.img of='{i}' bs=4096 seek=4352 conv=notrunc status=none",
        d = dir.display(),
        i = img.display(),
        p = if label == "o" { "p\\n" } else { "" },
    );
    run("sh", &["-c", &script]);
    img
}

#[test]
fn mbr_4kn_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk_4kn(dir.path(), "o");
    check_refused(
        &img,
        &[
            "4096-byte sectors",
            "512-byte sectors only",
            "nothing was cached",
        ],
    );
}

#[test]
fn gpt_4kn_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk_4kn(dir.path(), "g");
    check_refused(&img, &["4096-byte sectors", "GPT header is at byte 4096"]);
    // Compressed, it is refused the same way.
    run("xz", &["-k", "-T1", "-0", &img.display().to_string()]);
    check_refused(&dir.path().join("4kn-g.img.xz"), &["4096-byte sectors"]);
}

#[test]
fn logical_partitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("logical.img");
    let script = format!(
        "set -e; cp --sparse=always '{r}' '{i}'; \
         printf 'label: dos\\nstart=16384, size=131072, type=c\\nstart=147456, type=5\\nstart=149504, type=83\\n' | sfdisk -q '{i}'",
        r = raw("raspios").display(),
        i = img.display()
    );
    run("sh", &["-c", &script]);
    check_refused(
        &img,
        &["extended partition", "logical partitions are not supported"],
    );
}

#[test]
fn unknown_family_is_refused() {
    // One ext4 partition and nothing else: no boot FAT, no family.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("plain.img");
    let script = format!(
        "set -e; cd '{d}'; mke2fs -q -F -t ext4 root.img 24M; truncate -s 32M '{i}'; \
         printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q '{i}'; \
         dd if=root.img of='{i}' bs=512 seek=2048 conv=notrunc,sparse status=none",
        d = dir.path().display(),
        i = img.display()
    );
    run("sh", &["-c", &script]);
    check_refused(
        &img,
        &[
            "unknown layout",
            "no boot FAT partition found",
            "Known: raspios",
        ],
    );
}

#[test]
fn raw_not_whole_sectors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("odd.img");
    let script = format!(
        "set -e; cp --sparse=always '{r}' '{i}'; printf 'tail' >> '{i}'",
        r = raw("raspios").display(),
        i = img.display()
    );
    run("sh", &["-c", &script]);
    check_refused(
        &img,
        &["not a whole number of 512-byte sectors", "4 bytes over"],
    );
    // A .gz of it too (the declared size is the decoded length).
    run("gzip", &["-k", "-n", &img.display().to_string()]);
    check_refused(&dir.path().join("odd.img.gz"), &["not a whole number"]);
}
