//! Unpacking base images into the cache: formats, sparseness, reuse, bad input.

mod base_fixtures;

use base_fixtures::{base, raw, run, sha256_file};
use nodeforge::base::unpack_to_cache;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn blocks(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks()
}

/// Unpack `input` into a fresh cache; the result equals the raw fixture and stays sparse.
fn check_unpack(family: &str, file_name: &str) {
    let input = base(family, file_name);
    let want = raw(family);
    let cache = tempfile::tempdir().unwrap();
    let sha = sha256_file(&input);
    let out = unpack_to_cache(&input, &sha, cache.path()).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(out, cache.path().join("raw").join(format!("{sha}.raw")));
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(&want).unwrap().len(),
        "{file_name}: size"
    );
    assert_eq!(
        sha256_file(&out),
        sha256_file(&want),
        "{file_name}: bytes differ"
    );
    // Sparse: no more allocated than the reference (+ a little), well below the apparent size.
    let (got, reference) = (blocks(&out), blocks(&want));
    assert!(
        got <= reference + 256,
        "{file_name}: {got} blocks vs {reference} in the reference"
    );
    assert!(
        got * 512 < std::fs::metadata(&out).unwrap().len() / 2,
        "{file_name}: not sparse"
    );
    let mut leftovers: Vec<_> = std::fs::read_dir(cache.path().join("raw"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    leftovers.sort();
    assert_eq!(
        leftovers,
        vec![format!("{sha}.raw"), format!("{sha}.raw.verified")]
    );
}

#[test]
fn unpack_raw() {
    check_unpack("raspios", "base.img");
}

#[test]
fn unpack_xz() {
    check_unpack("raspios", "base.img.xz");
}

#[test]
fn unpack_gz() {
    check_unpack("ubuntu-raspi", "base.img.gz");
}

#[test]
fn unpack_tar_xz_gnu_sparse() {
    // Like Debian's cloud images: one GNU sparse member disk.raw.
    check_unpack("debian-generic", "disk.tar.xz");
}

#[test]
fn unpack_tar_gz() {
    check_unpack("debian-generic", "disk.tar.gz");
}

#[test]
fn unpack_concatenated_xz_streams() {
    let img = raw("debian-raspi");
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.img.xz");
    let half = std::fs::metadata(&img).unwrap().len() / 2;
    let script = format!(
        "set -e; head -c {half} '{i}' | xz -T1 > '{o}'; tail -c +{} '{i}' | xz -T1 >> '{o}'",
        half + 1,
        i = img.display(),
        o = two.display()
    );
    run("sh", &["-c", &script]);
    let cache = tempfile::tempdir().unwrap();
    let out = unpack_to_cache(&two, &sha256_file(&two), cache.path()).unwrap();
    assert_eq!(sha256_file(&out), sha256_file(&img));
}

#[test]
fn cached_file_is_reused() {
    let input = base("debian-raspi", "base.img.xz");
    let cache = tempfile::tempdir().unwrap();
    let sha = sha256_file(&input);
    let out = unpack_to_cache(&input, &sha, cache.path()).unwrap();
    // Mark the cached file: a second call must return it untouched, not decompress again.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    f.write_all_at(b"MARK", 0).unwrap();
    let again = unpack_to_cache(&input, &sha, cache.path()).unwrap();
    assert_eq!(again, out);
    let mut b = [0u8; 4];
    std::fs::File::open(&again)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    assert_eq!(&b, b"MARK");
}

/// A bad input fails naming the file and the step, leaves nothing in the cache, and the next
/// run with the good input (same sha256 key) succeeds.
fn check_bad_then_good(bad: &Path, good: &Path, want_in_error: &[&str]) {
    let cache = tempfile::tempdir().unwrap();
    let sha = sha256_file(good);
    let before = sha256_file(bad);
    let e = format!(
        "{:#}",
        unpack_to_cache(bad, &sha, cache.path()).expect_err("bad input must fail")
    );
    eprintln!("{e}");
    assert!(
        e.contains(&bad.display().to_string()),
        "error does not name the file: {e}"
    );
    for w in want_in_error {
        assert!(e.contains(w), "missing {w:?} in: {e}");
    }
    let raw_dir = cache.path().join("raw");
    let left: Vec<_> = std::fs::read_dir(&raw_dir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cache poisoned: {left:?}");
    assert_eq!(sha256_file(bad), before, "input modified");
    let out = unpack_to_cache(good, &sha, cache.path()).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(sha256_file(&out), sha256_file(&raw("raspios")));
}

#[test]
fn truncated_xz_fails_cleanly() {
    let good = base("raspios", "base.img.xz");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("truncated.img.xz");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() * 2 / 3]).unwrap();
    check_bad_then_good(&bad, &good, &["decompressing base image"]);
}

#[test]
fn corrupt_gz_fails_cleanly() {
    let good_gz = base("raspios", "base.img.gz");
    let good = base("raspios", "base.img.xz");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.img.gz");
    let mut bytes = std::fs::read(&good_gz).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5A;
    }
    std::fs::write(&bad, &bytes).unwrap();
    check_bad_then_good(&bad, &good, &["decompressing base image"]);
}

#[test]
fn corrupt_xz_fails_cleanly() {
    let good = base("raspios", "base.img.xz");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.img.xz");
    let mut bytes = std::fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xA5;
    }
    std::fs::write(&bad, &bytes).unwrap();
    check_bad_then_good(&bad, &good, &["decompressing base image"]);
}

#[test]
fn not_an_image_fails_cleanly() {
    let good = base("raspios", "base.img.xz");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.txt");
    std::fs::write(&bad, "hello\n".repeat(200)).unwrap();
    check_bad_then_good(&bad, &good, &["not a disk image"]);
    // A tar without disk.raw names what it found.
    let tar = dir.path().join("other.tar.gz");
    let script = format!(
        "set -e; cd '{d}'; echo x > readme.txt; tar -czf '{t}' readme.txt",
        d = dir.path().display(),
        t = tar.display()
    );
    run("sh", &["-c", &script]);
    check_bad_then_good(&tar, &good, &["no disk.raw", "readme.txt"]);
}

#[test]
fn invalid_sha_is_rejected() {
    let input = base("raspios", "base.img.xz");
    let cache = tempfile::tempdir().unwrap();
    assert!(unpack_to_cache(&input, "../../etc/passwd", cache.path()).is_err());
}

#[test]
fn concurrent_unpacks_share_one_result() {
    let input = base("debian-raspi", "base.img.gz");
    let cache = tempfile::tempdir().unwrap();
    let sha = sha256_file(&input);
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| unpack_to_cache(&input, &sha, cache.path()).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outs.iter().all(|o| *o == outs[0]));
    assert_eq!(sha256_file(&outs[0]), sha256_file(&raw("debian-raspi")));
    let names: Vec<_> = std::fs::read_dir(cache.path().join("raw"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the raw and its .verified record: {names:?}"
    );
}

#[test]
fn truncated_plain_tar_fails_cleanly() {
    let good = base("raspios", "base.img.xz");
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("disk.tar");
    let script = format!(
        "set -e; cp --sparse=always '{r}' '{d}/disk.raw'; tar --sparse --format=gnu -C '{d}' -cf '{t}' disk.raw",
        r = raw("raspios").display(),
        d = dir.path().display(),
        t = tar.display()
    );
    run("sh", &["-c", &script]);
    let f = std::fs::OpenOptions::new().write(true).open(&tar).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    check_bad_then_good(&tar, &good, &["base image", "truncated"]);
}
