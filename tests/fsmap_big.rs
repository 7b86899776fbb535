//! Sparsity and speed on 2.6 GiB images: a mostly empty filesystem must stay mostly unmapped,
//! and `free_ranges` must take well under a second, also with thousands of block groups.

mod fsmap_common;

use fsmap_common::*;
use nodeforge::fsmap::{free_ranges, needed_ranges};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

const MIB: u64 = 1 << 20;
const IMAGE: u64 = 2662 * MIB;
const P1: (u64, u64) = (MIB, 256 * MIB);
const P2: (u64, u64) = (257 * MIB, (2662 - 16 - 257) * MIB);

/// Copy only the data extents of `src` into `img` at `offset` (keeps holes).
fn place_sparse(img: &Path, src: &Path, offset: u64) {
    let s = File::open(src).unwrap();
    let d = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for (start, len) in seek_data_ranges(src) {
        let mut done = 0;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            s.read_exact_at(&mut buf[..n], start + done).unwrap();
            d.write_all_at(&buf[..n], offset + start + done).unwrap();
            done += n as u64;
        }
    }
}

/// A 2.6 GiB MBR image: p1 FAT32 256 MiB with a few files, p2 made by `mke2fs mke2fs_args`
/// with a few files, 16 MiB unpartitioned tail. Returns (image, free blocks of p2 in bytes).
fn build(work: &Path, mke2fs_args: &[&str]) -> (std::path::PathBuf, u64) {
    let s = |x: &Path| x.display().to_string();
    let tree = work.join("tree");
    if !tree.exists() {
        make_tree(&tree);
    }
    let img = work.join("big.img");
    let _ = std::fs::remove_file(&img);
    File::create(&img).unwrap().set_len(IMAGE).unwrap();
    let script = format!(
        "label: dos\nlabel-id: 0x0f5a0002\nstart={}, size={}, type=c\nstart={}, size={}, type=83\n",
        P1.0 / 512,
        P1.1 / 512,
        P2.0 / 512,
        P2.1 / 512
    );
    sfdisk(&img, &script, work);

    let p1 = work.join("p1.img");
    let _ = std::fs::remove_file(&p1);
    run_ok(
        "mkfs.vfat",
        &["-F", "32", "-C", &s(&p1), &(P1.1 / 1024).to_string()],
    );
    mcopy_tree(&p1, &tree);
    place_sparse(&img, &p1, P1.0);
    let p2 = work.join("p2.img");
    let mut args = vec!["-q", "-F"];
    args.extend_from_slice(mke2fs_args);
    let tree_s = s(&tree);
    let p2_s = s(&p2);
    let size = format!("{}k", P2.1 / 1024);
    args.extend_from_slice(&["-d", &tree_s, &p2_s, &size]);
    run_ok("mke2fs", &args);
    let (bs, _, free_blocks, _) = dumpe2fs(&p2);
    place_sparse(&img, &p2, P2.0);
    std::fs::remove_file(&p2).unwrap();
    std::fs::remove_file(&p1).unwrap();
    dig_holes(&img);
    (img, free_blocks * bs)
}

/// Time free_ranges twice (first call sees a cold-ish cache) and return the result.
fn timed(img: &Path, label: &str) -> Vec<(u64, u64)> {
    let f = File::open(img).unwrap();
    let size = f.metadata().unwrap().len();
    let t = Instant::now();
    let free = free_ranges(&f, size).unwrap();
    let first = t.elapsed();
    let t = Instant::now();
    let again = free_ranges(&f, size).unwrap();
    let second = t.elapsed();
    assert_eq!(free, again);
    let needed = needed_ranges(&f, size).unwrap();
    let need: u64 = needed.iter().map(|r| r.1).sum();
    eprintln!(
        "{label}: free_ranges {first:?} (again {second:?}), {} free ranges, needed {} MiB of {} MiB",
        free.len(),
        need / MIB,
        size / MIB
    );
    // Timing is reported, never asserted: speed targets belong in `make bench`.
    free
}

#[test]
fn empty_ext4_stays_sparse_and_fast() {
    let work = tempdir();
    let (img, fs_free) = build(work.path(), &["-t", "ext4"]);
    let free = timed(&img, "2.6 GiB, ext4 4 KiB blocks (default features)");
    let in_p2 = bytes_within(&free, P2.0, P2.1);
    eprintln!(
        "ext4: free per dumpe2fs {} MiB, reported free {} MiB",
        fs_free / MIB,
        in_p2 / MIB
    );
    assert!(
        in_p2 * 10 >= fs_free * 8,
        "only {in_p2} of {fs_free} free bytes reported"
    );
    let in_p1 = bytes_within(&free, P1.0, P1.1);
    assert!(in_p1 >= P1.1 * 8 / 10, "FAT32: only {in_p1} bytes free");
    assert!(covered(&free, P2.0 + P2.1, IMAGE - P2.0 - P2.1));
}

#[test]
fn thousands_of_groups_are_fast() {
    let work = tempdir();
    // ~2400 groups of 1 MiB, every block bitmap initialised and read (ext2: no uninit_bg).
    let (img, fs_free) = build(work.path(), &["-t", "ext2", "-b", "1024", "-g", "1024"]);
    let free = timed(&img, "2.6 GiB, ext2 1 KiB blocks, 1024 blocks/group");
    let in_p2 = bytes_within(&free, P2.0, P2.1);
    eprintln!(
        "ext2: free per dumpe2fs {} MiB, reported free {} MiB",
        fs_free / MIB,
        in_p2 / MIB
    );
    assert!(
        in_p2 * 10 >= fs_free * 8,
        "only {in_p2} of {fs_free} free bytes reported"
    );
    // The same geometry with ext4 checksums (metadata_csum verified per bitmap).
    let (img, _) = build(
        work.path(),
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-g",
            "1024",
            "-O",
            "^flex_bg,^resize_inode",
        ],
    );
    let free = timed(&img, "2.6 GiB, ext4 1 KiB blocks, 1024 blocks/group");
    assert!(
        bytes_within(&free, P2.0, P2.1) > 0,
        "ext4 partition reported fully needed"
    );
}
