//! Debian-style `.tar.xz` bases whose `disk.raw` is sparse, in every format GNU tar and bsdtar
//! write (GNU old sparse; pax GNU.sparse 0.0, 0.1, 1.0), and the cache's integrity: nothing
//! unverified is ever cached, and a damaged cache entry is discarded and rebuilt.

mod base_fixtures;

use base_fixtures::{raw, run, sha256_file};
use nodeforge::base::unpack_to_cache;
use std::path::{Path, PathBuf};

/// `tar ARGS -cf - disk.raw | xz` of the debian-generic fixture (copied sparse as disk.raw).
fn make_tar(dir: &Path, name: &str, tar_cmd: &str) -> PathBuf {
    let out = dir.join(name);
    let script = format!(
        "set -e; mkdir -p '{d}/src'; cp --sparse=always '{r}' '{d}/src/disk.raw'; \
         cd '{d}/src'; {tar_cmd} -cf - disk.raw | xz -T1 -0 > '{o}'",
        d = dir.display(),
        r = raw("debian-generic").display(),
        o = out.display()
    );
    run("sh", &["-c", &script]);
    out
}

/// Every file in the cache's raw directory.
fn cached(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("raw"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn check_reads(tar_cmd: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = make_tar(dir.path(), name, tar_cmd);
    let cache = tempfile::tempdir().unwrap();
    let out = unpack_to_cache(&input, &sha256_file(&input), cache.path())
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(
        sha256_file(&out),
        sha256_file(&raw("debian-generic")),
        "{name}: unpacked disk differs from the one packed"
    );
    // Holes stay holes.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&out).unwrap();
    assert!(m.blocks() * 512 < m.len() / 2, "{name}: not sparse");
}

#[test]
fn gnu_tar_old_gnu_sparse() {
    check_reads("tar --format=gnu --sparse", "gnu.tar.xz");
}

#[test]
fn gnu_tar_pax_sparse_0_0() {
    check_reads(
        "tar --format=pax --sparse --sparse-version=0.0",
        "pax00.tar.xz",
    );
}

#[test]
fn gnu_tar_pax_sparse_0_1() {
    check_reads(
        "tar --format=pax --sparse --sparse-version=0.1",
        "pax01.tar.xz",
    );
}

#[test]
fn gnu_tar_pax_sparse_1_0() {
    check_reads(
        "tar --format=pax --sparse --sparse-version=1.0",
        "pax10.tar.xz",
    );
}

#[test]
fn gnu_tar_posix_default_sparse() {
    check_reads("tar --format=posix --sparse", "posix.tar.xz");
}

#[test]
fn bsdtar_pax_sparse() {
    // bsdtar (libarchive-tools) writes pax sparse 1.0 for files with holes.
    check_reads("bsdtar --format=pax", "bsdtar.tar.xz");
}

#[test]
fn bsdtar_default_format() {
    check_reads("bsdtar", "bsdtar-default.tar.xz");
}

/// A failing input: the error holds `want`, and the cache holds no entry at all.
fn check_refused(input: &Path, want: &str) {
    let cache = tempfile::tempdir().unwrap();
    let before = sha256_file(input);
    let e = format!(
        "{:#}",
        unpack_to_cache(input, &sha256_file(input), cache.path()).expect_err("must fail")
    );
    assert!(e.contains(want), "missing {want:?} in: {e}");
    assert!(
        e.contains(&input.display().to_string()),
        "file not named: {e}"
    );
    assert_eq!(cached(cache.path()), Vec::<String>::new(), "cache poisoned");
    assert_eq!(sha256_file(input), before, "input modified");
}

#[test]
fn unsupported_pax_sparse_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let tar = dir.path().join("v2.tar");
    let script = format!(
        "set -e; cp --sparse=always '{r}' '{s}/disk.raw'; cd '{s}'; \
         tar --format=pax --sparse --sparse-version=1.0 -cf '{t}' disk.raw",
        r = raw("debian-generic").display(),
        s = src.display(),
        t = tar.display()
    );
    run("sh", &["-c", &script]);
    // Bump the pax record "GNU.sparse.major=1" to 2 (same length: the archive stays valid).
    let mut bytes = std::fs::read(&tar).unwrap();
    let needle = b"GNU.sparse.major=1";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("GNU tar wrote a pax 1.0 header");
    bytes[at + needle.len() - 1] = b'2';
    std::fs::write(&tar, &bytes).unwrap();
    check_refused(&tar, "unsupported sparse tar format (pax 2.0)");
}

#[test]
fn truncated_pax_sparse_is_refused_and_not_cached() {
    for v in ["0.0", "0.1", "1.0"] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let tar = dir.path().join("t.tar");
        let script = format!(
            "set -e; cp --sparse=always '{r}' '{s}/disk.raw'; cd '{s}'; \
             tar --format=pax --sparse --sparse-version={v} -cf '{t}' disk.raw",
            r = raw("debian-generic").display(),
            s = src.display(),
            t = tar.display()
        );
        run("sh", &["-c", &script]);
        let f = std::fs::OpenOptions::new().write(true).open(&tar).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2 / 512 * 512).unwrap();
        drop(f);
        check_refused(&tar, "truncated");
    }
}

#[test]
fn damaged_cache_entry_is_discarded_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let input = make_tar(dir.path(), "pax10.tar.xz", "tar --format=pax --sparse");
    let cache = tempfile::tempdir().unwrap();
    let sha = sha256_file(&input);
    let want = sha256_file(&raw("debian-generic"));
    let out = unpack_to_cache(&input, &sha, cache.path()).unwrap();
    // A full disk truncated it: the next run must not use it.
    let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 4096 * 3).unwrap();
    drop(f);
    let again = unpack_to_cache(&input, &sha, cache.path()).unwrap();
    assert_eq!(
        sha256_file(&again),
        want,
        "truncated cache entry was reused"
    );
    // A cache entry without its .verified record (written by an older nodeforge, or interrupted
    // between the two renames) is not trusted either.
    std::fs::remove_file(cache.path().join("raw").join(format!("{sha}.raw.verified"))).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0u8; 512], 512).unwrap(); // GPT header gone
    drop(f);
    let again = unpack_to_cache(&input, &sha, cache.path()).unwrap();
    assert_eq!(
        sha256_file(&again),
        want,
        "unverified cache entry was reused"
    );
}
