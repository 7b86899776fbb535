//! Inputs pinned by sha512 (Debian publishes only SHA512SUMS): fetched, verified, cached under
//! their sha256 with a `sha512-<hex>` index, recorded in the lock with both hashes; a mismatch
//! leaves nothing in the cache. Hashes are computed here with coreutils' sha512sum/sha256sum.

mod fetch_support;

use fetch_support::{Route, Server};
use nodeforge::fetch::{fetch_source, Fetcher, Source};
use std::path::Path;
use std::process::Command;

fn sum(tool: &str, p: &Path) -> String {
    let o = Command::new(tool).arg(p).output().expect("coreutils");
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn blobs(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn sha512_pinned_download_is_indexed() {
    let data = b"pretend this is a Debian cloud image".repeat(1000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("base.tar.xz");
    std::fs::write(&file, &data).unwrap();
    let (s256, s512) = (sum("sha256sum", &file), sum("sha512sum", &file));
    let srv = Server::start();
    srv.add("/base.tar.xz", Route::new(data.clone()));
    let url = srv.url("/base.tar.xz");

    let cache = tempfile::tempdir().unwrap();
    let f = Fetcher::new(cache.path().to_path_buf(), false).unwrap();
    let src = Source::pinned(&url, None, Some(&s512.to_uppercase())).unwrap();
    let got = fetch_source(&f, &src, "base image").unwrap();
    assert_eq!(got.source.sha256, s256, "sha256 filled in from the content");
    assert_eq!(got.source.sha512.as_deref(), Some(s512.as_str()));
    assert_eq!(std::fs::read(&got.path).unwrap(), data);
    assert_eq!(
        blobs(cache.path()),
        vec![s256.clone(), format!("sha512-{s512}")]
    );
    let e = got.lock_entry("base-x86_64");
    assert_eq!(
        (e.sha256.as_str(), e.sha512.as_deref()),
        (s256.as_str(), Some(s512.as_str()))
    );

    // Offline, the index finds the blob without a request.
    let before = srv.all_requests();
    let off = Fetcher::new(cache.path().to_path_buf(), true).unwrap();
    let again = fetch_source(&off, &src, "base image").unwrap();
    assert_eq!(again.path, got.path);
    assert_eq!(again.source.sha256, s256);
    assert_eq!(srv.all_requests(), before);
}

#[test]
fn sha512_pinned_file_is_verified_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("base.img");
    std::fs::write(&file, b"some bytes".repeat(100)).unwrap();
    let (s256, s512) = (sum("sha256sum", &file), sum("sha512sum", &file));
    let cache = tempfile::tempdir().unwrap();
    let f = Fetcher::new(cache.path().to_path_buf(), false).unwrap();
    let url = format!("file://{}", file.display());
    let got = fetch_source(&f, &Source::pinned(&url, None, Some(&s512)).unwrap(), "b").unwrap();
    assert_eq!(
        (got.path.as_path(), got.source.sha256.as_str()),
        (file.as_path(), s256.as_str())
    );
    assert_eq!(blobs(cache.path()), Vec::<String>::new(), "not copied");
}

#[test]
fn sha512_mismatch_caches_nothing() {
    let data = b"some bytes".repeat(100);
    let srv = Server::start();
    srv.add("/base.img", Route::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("base.img");
    std::fs::write(&file, &data).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = Fetcher::new(cache.path().to_path_buf(), false).unwrap();
    let wrong = "e".repeat(128);
    let url = srv.url("/base.img");
    let src = Source::pinned(&url, None, Some(&wrong)).unwrap();
    let err = format!("{:#}", fetch_source(&f, &src, "base image").unwrap_err());
    assert!(
        err.contains("sha512 mismatch") && err.contains(&wrong),
        "{err}"
    );
    assert_eq!(blobs(cache.path()), Vec::<String>::new());
    // Both pins given: both must match.
    let s256 = sum("sha256sum", &file);
    let src = Source::pinned(&url, Some(&s256), Some(&wrong)).unwrap();
    assert!(fetch_source(&f, &src, "base image").is_err());
    assert_eq!(blobs(cache.path()), Vec::<String>::new());
    // A local file with a wrong sha512 is refused too, and nothing is cached.
    let local = Source::pinned(&format!("file://{}", file.display()), None, Some(&wrong)).unwrap();
    let err = format!("{:#}", fetch_source(&f, &local, "local").unwrap_err());
    assert!(err.contains("sha512 mismatch"), "{err}");
    let s512 = sum("sha512sum", &file);
    let src = Source::pinned(&url, Some(&s256), Some(&s512)).unwrap();
    fetch_source(&f, &src, "base image").unwrap();
    assert_eq!(blobs(cache.path()), vec![s256, format!("sha512-{s512}")]);
}
