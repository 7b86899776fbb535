//! The reused-stick test: an image whose files and metadata contain all-zero 4 KiB blocks is
//! dug into holes; a "used stick" full of old bytes gets only some ranges of the image. With
//! fsmap's needed ranges the filesystems are clean (e2fsck, fsck.vfat) and every file reads
//! back equal (debugfs rdump, mcopy); with plain SEEK_DATA ranges they are not.

mod fsmap_common;

use fsmap_common::*;
use nodeforge::fsmap::{free_ranges, needed_ranges};
use std::fs::File;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// MBR image: p1 FAT32 (512 B clusters), p2 ext4 (4 KiB blocks) starting 2 KiB off a 4 KiB
/// boundary, p3 ext2 with 1 KiB blocks (no checksums), p4 FAT12; 30 MiB unpartitioned tail.
fn build_image(work: &Path) -> std::path::PathBuf {
    let tree = work.join("tree");
    make_tree(&tree);
    let img = work.join("disk.img");
    File::create(&img).unwrap().set_len(256 * MIB).unwrap();
    let script = "label: dos\nlabel-id: 0x0f5a0001\n\
        start=2048, size=131072, type=c\n\
        start=133124, size=196608, type=83\n\
        start=331776, size=49152, type=83\n\
        start=382976, size=16384, type=1\n";
    sfdisk(&img, script, work);
    let s = |x: &Path| x.display().to_string();

    let p1 = work.join("p1.img");
    run_ok(
        "mkfs.vfat",
        &[
            "-F",
            "32",
            "-s",
            "1",
            "-i",
            "0f5a0001",
            "-C",
            &s(&p1),
            "65536",
        ],
    );
    mcopy_tree(&p1, &tree);
    let p2 = work.join("p2.img");
    run_ok(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-d",
            &s(&tree),
            &s(&p2),
            "96M",
        ],
    );
    let p3 = work.join("p3.img");
    run_ok(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext2",
            "-b",
            "1024",
            "-d",
            &s(&tree),
            &s(&p3),
            "24M",
        ],
    );
    let p4 = work.join("p4.img");
    run_ok(
        "mkfs.vfat",
        &[
            "-F",
            "12",
            "-s",
            "8",
            "-i",
            "0f5a0004",
            "-C",
            &s(&p4),
            "8192",
        ],
    );
    mcopy_tree(&p4, &tree);
    for (part, lba) in [(&p1, 2048u64), (&p2, 133124), (&p3, 331776), (&p4, 382976)] {
        place(&img, part, lba * 512);
        std::fs::remove_file(part).unwrap();
    }
    dig_holes(&img);
    img
}

/// Every block the ext filesystems and FATs use lies inside the needed ranges (ext: per
/// dumpe2fs; FAT: everything but the free clusters fsck.vfat counts), and sum(needed) per
/// filesystem stays close to its used size.
fn check_coverage(img: &Path, needed: &[(u64, u64)], work: &Path) {
    for (i, (start, size)) in partitions(img).into_iter().enumerate() {
        let i = i + 1;
        let part = work.join(format!("cov-p{i}.img"));
        extract(img, start, size, &part);
        let kind = fs_type(&part);
        let need = bytes_within(needed, start, size);
        if kind.starts_with("ext") {
            let (bs, blocks, free_blocks, free) = dumpe2fs(&part);
            let mut pos = 0;
            for &(first, count) in free.iter().chain([(blocks, 0)].iter()) {
                if first > pos {
                    assert!(
                        covered(needed, start + pos * bs, (first - pos) * bs),
                        "p{i}: used blocks {pos}..{first} not all needed"
                    );
                }
                pos = pos.max(first + count);
            }
            let used = (blocks - free_blocks) * bs;
            let tail = size - blocks * bs;
            eprintln!(
                "p{i} {kind}: used {used} B, needed {need} B (+{} KiB), tail after fs {tail} B",
                (need as i64 - used as i64) / 1024
            );
            assert!(need >= used, "p{i}: needed {need} < used {used}");
            assert!(
                need <= used + used / 20 + 2 * MIB + tail,
                "p{i}: needed {need} too far above used {used}"
            );
        } else if kind == "vfat" {
            let used = fat_used_bytes(&part);
            eprintln!("p{i} vfat: used {used} B, needed {need} B (partition {size} B)");
            assert!(need >= used, "p{i}: needed {need} < used {used}");
            assert!(
                need <= used + used / 20 + MIB,
                "p{i}: needed {need} too far above used {used}"
            );
        }
        std::fs::remove_file(&part).unwrap();
    }
}

fn well_formed(ranges: &[(u64, u64)], size: u64) {
    let mut end = 0;
    for (k, &(s, l)) in ranges.iter().enumerate() {
        assert!(
            l > 0 && (k == 0 || s > end) && s + l <= size,
            "bad ranges {ranges:?}"
        );
        end = s + l;
    }
}

#[test]
fn reused_stick_needs_filesystem_ranges() {
    let work = tempdir();
    let img = build_image(work.path());
    let f = File::open(&img).unwrap();
    let size = f.metadata().unwrap().len();
    let needed = needed_ranges(&f, size).unwrap();
    let free = free_ranges(&f, size).unwrap();
    well_formed(&needed, size);
    well_formed(&free, size);
    let free_total: u64 = free.iter().map(|r| r.1).sum();
    let need_total: u64 = needed.iter().map(|r| r.1).sum();
    assert_eq!(free_total + need_total, size);
    eprintln!(
        "needed {need_total} B in {} ranges, free {free_total} B",
        needed.len()
    );
    // The unpartitioned tail is free; the tables are not.
    assert!(
        covered(&free, 203 * MIB, 50 * MIB),
        "tail not free: {free:?}"
    );
    assert!(covered(&needed, 0, MIB));
    check_coverage(&img, &needed, work.path());

    let stick = work.path().join("stick.img");
    stick_copy(&img, &needed, &stick);
    let problems = check_stick(&img, &stick, work.path());
    assert!(problems.is_empty(), "needed ranges: {problems:#?}");

    // The wiring into bmaps: 4 KiB blocks touching a needed byte are mapped (rounded outward).
    let bmap =
        nodeforge::bmap::Bmap::from_extents(size, &needed, |_, _| Ok(String::new())).unwrap();
    let mapped: Vec<(u64, u64)> = bmap
        .ranges
        .iter()
        .map(|r| r.byte_span(bmap.block_size, size))
        .collect();
    let mapped_bytes: u64 = mapped.iter().map(|r| r.1).sum();
    eprintln!("bmap from needed ranges: {mapped_bytes} B mapped");
    assert!(mapped_bytes < 30 * MIB);
    stick_copy(&img, &mapped, &stick);
    let problems = check_stick(&img, &stick, work.path());
    assert!(problems.is_empty(), "bmap of needed ranges: {problems:#?}");

    // The same stick with only the data extents must show the damage, or the test proves nothing.
    let naive = seek_data_ranges(&img);
    stick_copy(&img, &naive, &stick);
    let problems = check_stick(&img, &stick, work.path());
    eprintln!("SEEK_DATA-only copy: {} problems", problems.len());
    for pr in &problems {
        eprintln!("  {}", pr.lines().next().unwrap_or(""));
    }
    for part in ["p1 vfat", "p2 ext4", "p3 ext2", "p4 vfat"] {
        assert!(
            problems.iter().any(|p| p.starts_with(part)),
            "{part}: SEEK_DATA-only copy was not detected as corrupt: {problems:#?}"
        );
    }
    // File contents (not just metadata) come back wrong on both kinds of filesystem.
    assert!(problems
        .iter()
        .any(|p| p.starts_with("p2 ext4") && p.contains("pad.bin: content differs")));
    assert!(problems
        .iter()
        .any(|p| p.starts_with("p1 vfat") && p.contains("content differs")));
}

fn fixture(family: &str) {
    let work = tempdir();
    let img = work.path().join(format!("{family}.img"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mkbase.sh");
    run_ok(
        "bash",
        &[
            &script.display().to_string(),
            family,
            &img.display().to_string(),
        ],
    );
    dig_holes(&img);
    let f = File::open(&img).unwrap();
    let size = f.metadata().unwrap().len();
    let needed = needed_ranges(&f, size).unwrap();
    well_formed(&needed, size);
    let need_total: u64 = needed.iter().map(|r| r.1).sum();
    let data_total: u64 = seek_data_ranges(&img).iter().map(|r| r.1).sum();
    eprintln!("{family}: image {size} B, data extents {data_total} B, needed {need_total} B");
    check_coverage(&img, &needed, work.path());
    let stick = work.path().join("stick.img");
    stick_copy(&img, &needed, &stick);
    let problems = check_stick(&img, &stick, work.path());
    assert!(problems.is_empty(), "{family}: {problems:#?}");
}

#[test]
fn fixture_raspios() {
    fixture("raspios");
}

#[test]
fn fixture_debian_generic() {
    fixture("debian-generic");
}

/// One ext partition made with `mke2fs args` (after a 1 MiB head) in a GPT image.
fn single_ext(work: &Path, args: &[&str]) -> std::path::PathBuf {
    let s = |x: &Path| x.display().to_string();
    let tree = work.join("tree");
    if !tree.exists() {
        make_tree(&tree);
    }
    let img = work.join("one.img");
    let _ = std::fs::remove_file(&img);
    File::create(&img).unwrap().set_len(72 * MIB).unwrap();
    run_ok("sgdisk", &["-n", "1:2048:+64M", "-t", "1:8300", &s(&img)]);
    let part = work.join("one-p1.img");
    let _ = std::fs::remove_file(&part);
    let mut a = vec!["-q", "-F"];
    a.extend_from_slice(args);
    let (t, ps) = (s(&tree), s(&part));
    a.extend_from_slice(&["-d", &t, &ps, "64M"]);
    run_ok("mke2fs", &a);
    place(&img, &part, MIB);
    std::fs::remove_file(&part).unwrap();
    dig_holes(&img);
    img
}

#[test]
fn ext_feature_variants() {
    let work = tempdir();
    for args in [
        &["-t", "ext4", "-O", "^metadata_csum,uninit_bg"][..],
        &["-t", "ext4", "-O", "^metadata_csum,uninit_bg,^64bit"],
        &["-t", "ext4", "-O", "^64bit"],
        &["-t", "ext4", "-O", "^flex_bg", "-b", "2048"],
        &["-t", "ext4", "-b", "1024", "-g", "2048"],
        &["-t", "ext3"],
        &["-t", "ext2", "-O", "^sparse_super,^resize_inode"],
        &["-t", "ext4", "-O", "^sparse_super,^resize_inode"],
        &["-t", "ext4", "-O", "sparse_super2"],
        // 128 groups: backups in groups 0, 1 and the powers of 3, 5 and 7 up to 125.
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-g",
            "512",
            "-O",
            "^flex_bg,^64bit,^resize_inode",
        ],
        // meta_bg (descriptors spread over the disk) is not parsed: all needed.
        &["-t", "ext4", "-O", "meta_bg,^resize_inode"],
    ] {
        let img = single_ext(work.path(), args);
        let f = File::open(&img).unwrap();
        let size = f.metadata().unwrap().len();
        let free = free_ranges(&f, size).unwrap();
        let needed = needed_ranges(&f, size).unwrap();
        let in_part = bytes_within(&free, MIB, 64 * MIB);
        eprintln!("{args:?}: {} KiB of 64 MiB free", in_part / 1024);
        if args.iter().any(|a| a.starts_with("meta_bg")) {
            assert_eq!(in_part, 0, "meta_bg must be treated as all needed");
        } else {
            // Not the conservative fallback: most of the mostly empty filesystem is free.
            assert!(in_part > 32 * MIB, "{args:?}: only {in_part} bytes free");
            check_coverage(&img, &needed, work.path());
        }
        // The GPT backup at the end stays needed.
        assert!(covered(&needed, size - 33 * 512, 33 * 512), "{args:?}");
        let stick = work.path().join("stick.img");
        stick_copy(&img, &needed, &stick);
        let problems = check_stick(&img, &stick, work.path());
        assert!(problems.is_empty(), "{args:?}: {problems:#?}");
    }
}

#[test]
fn grown_gpt_keeps_its_backup_table() {
    // An image grown after partitioning still has its backup GPT at the old end.
    let work = tempdir();
    let img = single_ext(work.path(), &["-t", "ext4"]);
    let old = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(old + 64 * MIB)
        .unwrap();
    let f = File::open(&img).unwrap();
    let size = f.metadata().unwrap().len();
    let needed = needed_ranges(&f, size).unwrap();
    let free = free_ranges(&f, size).unwrap();
    assert!(
        covered(&needed, old - 33 * 512, 33 * 512),
        "old backup GPT not needed: {needed:?}"
    );
    assert!(covered(&needed, size - 33 * 512, 33 * 512));
    assert!(
        covered(&free, old, 63 * MIB),
        "grown tail not free: {free:?}"
    );
    assert!(
        covered(&free, 65 * MIB, old - 33 * 512 - 65 * MIB),
        "gap before old backup"
    );
}
