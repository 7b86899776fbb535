//! Sparse copies: holes stay holes, bytes are equal, sub-ranges land at the right offsets.

use nodeforge::sparse::{copy_range, data_ranges, SparseWriter};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MIB: u64 = 1 << 20;

/// 64 MiB file with data at 1..3 MiB, 20 MiB (one block) and 60..61 MiB; the rest holes.
fn holey(dir: &Path) -> File {
    let p = dir.join("src.img");
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(64 * MIB).unwrap();
    let pattern: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8 + 1).collect();
    f.write_all_at(&pattern, MIB).unwrap();
    f.write_all_at(&[0xAB; 4096], 20 * MIB).unwrap();
    f.write_all_at(&pattern[..MIB as usize], 60 * MIB).unwrap();
    f.sync_all().unwrap();
    f
}

fn read_all(f: &File, off: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

#[test]
fn data_ranges_find_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let f = holey(dir.path());
    let r = data_ranges(&f, 0, 64 * MIB).unwrap();
    let covered: u64 = r.iter().map(|(_, n)| n).sum();
    assert!((3 * MIB + 4096..=8 * MIB).contains(&covered), "{r:?}");
    assert!(
        r.iter().any(|&(s, n)| s <= MIB && s + n >= 3 * MIB),
        "{r:?}"
    );
    assert!(
        r.iter().any(|&(s, n)| s <= 20 * MIB && s + n > 20 * MIB),
        "{r:?}"
    );
    // A window: ranges are clipped to it.
    let w = data_ranges(&f, 2 * MIB, 10 * MIB).unwrap();
    assert!(
        w.iter().all(|&(s, n)| s >= 2 * MIB && s + n <= 12 * MIB),
        "{w:?}"
    );
    assert_eq!(w.first().map(|r| r.0), Some(2 * MIB));
}

#[test]
fn copy_keeps_holes_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = holey(dir.path());
    let dst_path = dir.path().join("dst.img");
    let dst = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&dst_path)
        .unwrap();
    dst.set_len(64 * MIB).unwrap();
    let mut last = 0;
    copy_range(&src, 0, &dst, 0, 64 * MIB, &mut |n| {
        assert!(n >= last, "progress went backwards");
        last = n;
    })
    .unwrap();
    assert_eq!(last, 64 * MIB);
    assert!(
        read_all(&src, 0, 64 * MIB) == read_all(&dst, 0, 64 * MIB),
        "bytes differ"
    );
    dst.sync_all().unwrap();
    let (sb, db) = (
        src.metadata().unwrap().blocks(),
        dst.metadata().unwrap().blocks(),
    );
    assert!(db <= sb + 64, "dst has {db} blocks, src {sb}");
}

#[test]
fn copy_sub_range_to_another_offset() {
    let dir = tempfile::tempdir().unwrap();
    let src = holey(dir.path());
    let dst = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("dst2.img"))
        .unwrap();
    dst.set_len(100 * MIB).unwrap();
    // Source 16..64 MiB (a partition) to destination 40 MiB.
    copy_range(&src, 16 * MIB, &dst, 40 * MIB, 48 * MIB, &mut |_| {}).unwrap();
    assert!(read_all(&src, 16 * MIB, 48 * MIB) == read_all(&dst, 40 * MIB, 48 * MIB));
    assert!(read_all(&dst, 0, 40 * MIB).iter().all(|&b| b == 0));
    assert!(dst.metadata().unwrap().blocks() * 512 <= 4 * MIB);
}

#[test]
fn copy_across_filesystems_falls_back() {
    // /dev/shm is tmpfs: copy_file_range from there to the temp dir may be refused (EXDEV).
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm, skipping");
        return;
    }
    let a = tempfile::tempdir_in(shm).unwrap();
    let src = holey(a.path());
    let b = tempfile::tempdir().unwrap();
    let dst = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(b.path().join("x"))
        .unwrap();
    dst.set_len(64 * MIB).unwrap();
    copy_range(&src, 0, &dst, 0, 64 * MIB, &mut |_| {}).unwrap();
    assert!(read_all(&src, 0, 64 * MIB) == read_all(&dst, 0, 64 * MIB));
}

#[test]
fn copy_beyond_source_end_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = holey(dir.path());
    let dst = File::create(dir.path().join("d")).unwrap();
    let e = copy_range(&src, 60 * MIB, &dst, 0, 8 * MIB, &mut |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("beyond"), "{e:#}");
}

#[test]
fn sparse_writer_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w");
    let mut w = SparseWriter::new(File::create(&p).unwrap());
    let mut data = vec![0u8; 10 * MIB as usize + 123];
    data[3] = 1;
    data[5 * MIB as usize..5 * MIB as usize + 10_000].fill(9);
    // Odd-sized writes must not break 4 KiB block alignment.
    for c in data.chunks(77_777) {
        w.write_all(c).unwrap();
    }
    let (_f, n) = w.finish().unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(&p).unwrap() == data);
    assert!(std::fs::metadata(&p).unwrap().blocks() * 512 <= 256 * 1024);
}
