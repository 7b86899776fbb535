//! Garbage in, conservative out: random mutations of partition tables, ext superblocks,
//! descriptor tables, bitmaps, FAT boot sectors and tables, truncated images and random bytes
//! never panic and always give well-formed ranges; on a checksummed ext4 a mutation can only
//! make fewer blocks free, never more.

mod fsmap_common;

use fsmap_common::*;
use nodeforge::fsmap::{free_ranges, needed_ranges};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;
/// (start, size) of the partitions: FAT32, ext4 (metadata_csum), ext2 1 KiB blocks, FAT12.
const PARTS: [(u64, u64); 4] = [
    (MIB, 40 * MIB),
    (41 * MIB, 24 * MIB),
    (65 * MIB, 8 * MIB),
    (73 * MIB, 4 * MIB),
];
const SIZE: u64 = 80 * MIB;

fn build(work: &Path) -> std::path::PathBuf {
    let s = |x: &Path| x.display().to_string();
    let tree = work.join("tree");
    make_tree(&tree);
    let img = work.join("g.img");
    File::create(&img).unwrap().set_len(SIZE).unwrap();
    let mut script = String::from("label: dos\nlabel-id: 0x0f5a0003\n");
    for ((start, size), ty) in PARTS.iter().zip(["c", "83", "83", "1"]) {
        script += &format!("start={}, size={}, type={ty}\n", start / 512, size / 512);
    }
    sfdisk(&img, &script, work);
    let kib = |i: usize| (PARTS[i].1 / 1024).to_string();
    let parts: Vec<_> = (0..4).map(|i| work.join(format!("p{i}.img"))).collect();
    run_ok(
        "mkfs.vfat",
        &["-F", "32", "-s", "1", "-C", &s(&parts[0]), &kib(0)],
    );
    mcopy_tree(&parts[0], &tree);
    let size1 = format!("{}k", kib(1));
    run_ok(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            &s(&tree),
            &s(&parts[1]),
            &size1,
        ],
    );
    let size2 = format!("{}k", kib(2));
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
            &s(&parts[2]),
            &size2,
        ],
    );
    run_ok("mkfs.vfat", &["-F", "12", "-C", &s(&parts[3]), &kib(3)]);
    mcopy_tree(&parts[3], &tree);
    for (i, part) in parts.iter().enumerate() {
        place(&img, part, PARTS[i].0);
    }
    dig_holes(&img);
    img
}

fn well_formed(ranges: &[(u64, u64)], size: u64, what: &str) {
    let mut end = 0;
    for (k, &(s, l)) in ranges.iter().enumerate() {
        assert!(
            l > 0 && (k == 0 || s > end) && s.checked_add(l).is_some_and(|e| e <= size),
            "{what}: bad ranges {ranges:?}"
        );
        end = s + l;
    }
}

fn both(f: &File, size: u64, what: &str) -> Vec<(u64, u64)> {
    let free = free_ranges(f, size).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let needed = needed_ranges(f, size).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    well_formed(&free, size, what);
    well_formed(&needed, size, what);
    let total: u64 = free.iter().chain(&needed).map(|r| r.1).sum();
    assert_eq!(total, size, "{what}: free + needed != image");
    free
}

#[test]
fn mutated_metadata_is_conservative() {
    let work = tempdir();
    let img = build(work.path());
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let base = both(&f, SIZE, "pristine");
    for (i, &(s, l)) in PARTS.iter().enumerate() {
        assert!(
            bytes_within(&base, s, l) > l / 2,
            "partition {i} not parsed: {base:?}"
        );
    }
    let mut r = Rng(0x6a5b_4c3d_2e1f_0001);
    let (mut changed, mut ext4_fallbacks) = (0, 0);
    for iter in 0..600 {
        // Where: the table, or one partition's first 4 KiB / 64 KiB / 2 MiB (metadata lives there).
        let pick = r.next() % 9;
        let (at, span) = if pick == 0 {
            (0, 512)
        } else {
            let (ps, pl) = PARTS[(pick as usize - 1) % 4];
            let span = [4096, 65536, 2 * MIB][(r.next() % 3) as usize].min(pl);
            (ps, span)
        };
        let n = 1 + r.next() % 6;
        let mut saved = Vec::new();
        for _ in 0..n {
            let off = at + r.next() % span;
            let mut old = [0u8];
            f.read_exact_at(&mut old, off).unwrap();
            let new = match r.next() % 4 {
                0 => old[0] ^ (1 << (r.next() % 8)),
                1 => 0,
                2 => 0xFF,
                _ => r.next() as u8,
            };
            f.write_all_at(&[new], off).unwrap();
            saved.push((off, old[0]));
        }
        let what = format!(
            "mutation {iter} at {:?}",
            saved.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        let free = both(&f, SIZE, &what);
        if free != base {
            changed += 1;
        }
        // ext4 with metadata_csum: corruption is detected, so nothing becomes newly free.
        let (ps, pl) = PARTS[1];
        if pick != 0 {
            for &(s, l) in &free {
                let (a, b) = (s.max(ps), (s + l).min(ps + pl));
                if a < b {
                    assert!(
                        covered(&base, a, b - a),
                        "{what}: ext4 bytes {a}..{b} newly free"
                    );
                }
            }
            if bytes_within(&free, ps, pl) == 0 {
                ext4_fallbacks += 1;
            }
        }
        for (off, old) in saved.into_iter().rev() {
            f.write_all_at(&[old], off).unwrap();
        }
    }
    eprintln!("600 mutations: {changed} changed the result, {ext4_fallbacks} made ext4 all-needed");
    assert!(changed > 50, "mutations hardly ever mattered ({changed})");
    assert_eq!(both(&f, SIZE, "restored"), base);
}

#[test]
fn truncated_and_random_images_do_not_panic() {
    let work = tempdir();
    let img = build(work.path());
    let src = File::open(&img).unwrap();
    let cut = work.path().join("cut.img");
    let mut r = Rng(0x1357_9bdf_0246_8ace);
    let mut lens: Vec<u64> = vec![0, 1, 511, 512, 513, 34 * 512, MIB, MIB + 1024, MIB + 2048];
    for &(s, _) in &PARTS {
        lens.extend([s + 600, s + 1100, s + 4096, s + 70_000, s + 1_500_000]);
    }
    lens.extend((0..20).map(|_| r.next() % SIZE));
    for len in lens {
        let d = File::create(&cut).unwrap();
        d.set_len(len).unwrap();
        for (s, l) in seek_data_ranges(&img) {
            if s >= len {
                continue;
            }
            let l = l.min(len - s);
            let mut buf = vec![0u8; l as usize];
            src.read_exact_at(&mut buf, s).unwrap();
            d.write_all_at(&buf, s).unwrap();
        }
        let d = File::open(&cut).unwrap();
        both(&d, len, &format!("truncated to {len}"));
        // A caller passing a size larger than the file must not make reads past the end panic.
        both(
            &d,
            len + 10 * MIB,
            &format!("truncated to {len}, told {}", len + 10 * MIB),
        );
    }
    // Random sectors behind a valid MBR signature, and random tables over the real filesystems.
    for k in 0..40 {
        let d = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&cut)
            .unwrap();
        let mut data = r.bytes(4 * MIB as usize);
        data[510] = 0x55;
        data[511] = 0xAA;
        d.write_all_at(&data, 0).unwrap();
        both(&d, 4 * MIB, &format!("random image {k}"));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0).unwrap();
    for k in 0..100 {
        let entries = r.bytes(64);
        f.write_all_at(&entries, 446).unwrap();
        both(&f, SIZE, &format!("random partition entries {k}"));
    }
    f.write_all_at(&mbr, 0).unwrap();
}

#[test]
fn unpartitioned_filesystems_are_all_needed() {
    let work = tempdir();
    let s = |x: &Path| x.display().to_string();
    let tree = work.path().join("tree");
    make_tree(&tree);
    // A FAT "superfloppy" has 55 AA and boot code where an MBR's entries would be.
    let fat = work.path().join("floppy.img");
    run_ok(
        "mkfs.vfat",
        &["-F", "32", "-C", &s(&fat), &(40 * 1024).to_string()],
    );
    mcopy_tree(&fat, &tree);
    dig_holes(&fat);
    // A whole-disk ext4 has no table at all.
    let ext = work.path().join("whole.img");
    run_ok(
        "mke2fs",
        &["-q", "-F", "-t", "ext4", "-d", &s(&tree), &s(&ext), "32M"],
    );
    dig_holes(&ext);
    // An MBR without partitions.
    let empty = work.path().join("empty.img");
    File::create(&empty).unwrap().set_len(8 * MIB).unwrap();
    let o = std::process::Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(&empty)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"label: dos\n")?;
            c.wait_with_output()
        })
        .expect("cannot run sfdisk (install fdisk)");
    assert!(o.status.success());
    for img in [&fat, &ext, &empty] {
        let f = File::open(img).unwrap();
        let size = f.metadata().unwrap().len();
        let free = both(&f, size, &s(img));
        assert!(free.is_empty(), "{}: {free:?}", img.display());
    }
}
