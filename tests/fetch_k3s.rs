//! k3s bundle from file:// and HTTP mirrors, verified by the release's sha256sum files.

mod fetch_support;

use std::path::Path;
use std::time::Duration;

use fetch_support::{content, sha256_hex, Route, Server};
use nodeforge::fetch::{k3s_bundle, Arch, Fetcher};
use nodeforge::lock::Lock;

const VERSION: &str = "v1.31.4+k3s1";

fn fetcher(cache: &Path, offline: bool) -> Fetcher {
    let mut f = Fetcher::new(cache.to_path_buf(), offline).unwrap();
    f.set_retry_policy(2, Duration::from_millis(10));
    f
}

/// The files of one fake release: (name, bytes).
fn release_files() -> Vec<(String, Vec<u8>)> {
    let amd = content(40_000, 1);
    let arm = content(41_000, 2);
    let air_amd = content(30_000, 3);
    let air_arm = content(31_000, 4);
    let sig = b"signature".to_vec();
    let sums_amd = format!(
        "{}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n",
        sha256_hex(&amd),
        sha256_hex(&air_amd)
    );
    // A decoy line whose name starts like the asset: only the exact name may match.
    let sums_arm = format!(
        "{}  k3s-arm64.sig\n{}  k3s-arm64\n{}  k3s-airgap-images-arm64.tar.zst\n",
        sha256_hex(&sig),
        sha256_hex(&arm),
        sha256_hex(&air_arm)
    );
    vec![
        ("k3s".into(), amd),
        ("k3s-arm64".into(), arm),
        ("k3s-arm64.sig".into(), sig),
        ("k3s-airgap-images-amd64.tar.zst".into(), air_amd),
        ("k3s-airgap-images-arm64.tar.zst".into(), air_arm),
        ("sha256sum-amd64.txt".into(), sums_amd.into_bytes()),
        ("sha256sum-arm64.txt".into(), sums_arm.into_bytes()),
        (
            "install.sh".into(),
            b"#!/bin/sh\necho fake k3s installer\n".to_vec(),
        ),
    ]
}

fn write_release(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, data) in release_files() {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

fn file_of(name: &str) -> Vec<u8> {
    release_files()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

#[test]
fn bundle_from_a_versioned_file_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    write_release(&mirror.join(VERSION));
    let f = fetcher(&dir.path().join("cache"), false);
    let url = format!("file://{}", mirror.display());
    let b = k3s_bundle(&f, &url, VERSION, Arch::Arm64, true, &Lock::new()).unwrap();
    assert_eq!(b.version, VERSION);
    assert_eq!(std::fs::read(&b.binary.path).unwrap(), file_of("k3s-arm64"));
    assert_eq!(b.binary.size, 41_000);
    assert_eq!(b.binary.source.sha256, sha256_hex(&file_of("k3s-arm64")));
    assert_eq!(
        std::fs::read(&b.install_sh.path).unwrap(),
        file_of("install.sh")
    );
    let air = b.airgap.as_ref().unwrap();
    assert_eq!(
        std::fs::read(&air.path).unwrap(),
        file_of("k3s-airgap-images-arm64.tar.zst")
    );
    assert_eq!(
        b.sums.source.sha256,
        sha256_hex(&file_of("sha256sum-arm64.txt"))
    );

    let names: Vec<String> = b.lock_entries().into_iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "k3s/v1.31.4+k3s1/sha256sum-arm64.txt",
            "k3s/v1.31.4+k3s1/k3s-arm64",
            "k3s/v1.31.4+k3s1/install.sh",
            "k3s/v1.31.4+k3s1/k3s-airgap-images-arm64.tar.zst",
        ]
    );
}

#[test]
fn bundle_from_a_flat_folder_given_as_a_plain_path() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("release");
    write_release(&mirror);
    let f = fetcher(&dir.path().join("cache"), false);
    let b = k3s_bundle(
        &f,
        mirror.to_str().unwrap(),
        VERSION,
        Arch::Amd64,
        false,
        &Lock::new(),
    )
    .unwrap();
    assert_eq!(std::fs::read(&b.binary.path).unwrap(), file_of("k3s"));
    assert!(b.airgap.is_none());
    assert_eq!(b.lock_entries().len(), 3);
}

#[test]
fn mirror_with_a_wrong_binary_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("release");
    write_release(&mirror);
    std::fs::write(mirror.join("k3s-arm64"), b"tampered").unwrap();
    let cache = dir.path().join("cache");
    let f = fetcher(&cache, false);
    let err = k3s_bundle(
        &f,
        mirror.to_str().unwrap(),
        VERSION,
        Arch::Arm64,
        false,
        &Lock::new(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("mismatch") && msg.contains("k3s-arm64"),
        "{msg}"
    );
    assert!(msg.contains(&sha256_hex(b"tampered")), "{msg}");
    assert!(!cache.join("blobs").join(sha256_hex(b"tampered")).exists());
}

#[test]
fn sums_file_without_the_asset_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("release");
    write_release(&mirror);
    std::fs::write(mirror.join("sha256sum-arm64.txt"), "0000  other\n").unwrap();
    let f = fetcher(&dir.path().join("cache"), false);
    let err = k3s_bundle(
        &f,
        mirror.to_str().unwrap(),
        VERSION,
        Arch::Arm64,
        false,
        &Lock::new(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no line for k3s-arm64"), "{msg}");
}

#[test]
fn lock_pins_install_sh_and_the_sums_file() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("release");
    write_release(&mirror);
    let f = fetcher(&dir.path().join("cache"), false);
    let m = mirror.to_str().unwrap();
    let b = k3s_bundle(&f, m, VERSION, Arch::Arm64, false, &Lock::new()).unwrap();
    let mut lock = Lock::new();
    for e in b.lock_entries() {
        lock.upsert(e);
    }
    // Same files: accepted, and --locked agrees.
    let again = k3s_bundle(&f, m, VERSION, Arch::Arm64, false, &lock).unwrap();
    lock.check_locked(&again.lock_entries()).unwrap();

    // install.sh changed upstream after it was recorded. The pinned copy in the cache is still
    // used; a fresh cache (another machine) refuses the changed file.
    std::fs::write(mirror.join("install.sh"), b"#!/bin/sh\necho evil\n").unwrap();
    let cached = k3s_bundle(&f, m, VERSION, Arch::Arm64, false, &lock).unwrap();
    assert_eq!(
        std::fs::read(&cached.install_sh.path).unwrap(),
        file_of("install.sh")
    );
    let f = fetcher(&dir.path().join("cache2"), false);
    let err = k3s_bundle(&f, m, VERSION, Arch::Arm64, false, &lock).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("install.sh") && msg.contains("mismatch"),
        "{msg}"
    );
    // Without the pin it is trusted on first use, and --locked names what differs.
    let tofu = k3s_bundle(&f, m, VERSION, Arch::Arm64, false, &Lock::new()).unwrap();
    let msg = format!("{:#}", lock.check_locked(&tofu.lock_entries()).unwrap_err());
    assert!(
        msg.contains("install.sh") && msg.contains("sha256"),
        "{msg}"
    );
}

#[test]
fn bundle_over_http_then_offline_from_the_lock() {
    let srv = Server::start();
    // `+` in the version is percent-encoded in release URLs.
    let prefix = "/k3s/v1.31.4%2Bk3s1";
    for (name, data) in release_files() {
        srv.add(&format!("{prefix}/{name}"), Route::new(data));
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mirror = srv.url("/k3s/");
    let b = k3s_bundle(
        &fetcher(&cache, false),
        &mirror,
        VERSION,
        Arch::Arm64,
        true,
        &Lock::new(),
    )
    .unwrap();
    assert_eq!(
        b.binary.source.url,
        srv.url("/k3s/v1.31.4%2Bk3s1/k3s-arm64")
    );
    assert_eq!(
        b.install_sh.source.url,
        srv.url("/k3s/v1.31.4%2Bk3s1/install.sh")
    );
    let requests = srv.all_requests();
    assert_eq!(requests, 4, "sums, binary, install.sh, airgap");

    // Offline without a lock: the unpinned sums file cannot be found in the cache.
    let off = fetcher(&cache, true);
    let msg = format!(
        "{:#}",
        k3s_bundle(&off, &mirror, VERSION, Arch::Arm64, true, &Lock::new()).unwrap_err()
    );
    assert!(
        msg.contains("offline") && msg.contains("sha256sum-arm64.txt"),
        "{msg}"
    );

    // Offline with the lock written by the online run: everything from the cache.
    let mut lock = Lock::new();
    for e in b.lock_entries() {
        lock.upsert(e);
    }
    let path = dir.path().join("nodeforge.lock");
    lock.write(&path).unwrap();
    let lock = Lock::read(&path).unwrap();
    let ob = k3s_bundle(&off, &mirror, VERSION, Arch::Arm64, true, &lock).unwrap();
    assert_eq!(ob.binary.path, b.binary.path);
    assert_eq!(srv.all_requests(), requests, "offline made no request");

    // Offline, a different architecture is not cached: the error names it.
    let msg = format!(
        "{:#}",
        k3s_bundle(&off, &mirror, VERSION, Arch::Amd64, false, &lock).unwrap_err()
    );
    assert!(msg.contains("sha256sum-amd64.txt"), "{msg}");
}

#[test]
fn bundle_over_http_from_a_mirror_holding_one_release() {
    // `http://mirror/k3s-arm64`, `http://mirror/sha256sum-arm64.txt`: no version folder.
    let srv = Server::start();
    for (name, data) in release_files() {
        srv.add(&format!("/one/{name}"), Route::new(data));
    }
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(&dir.path().join("cache"), false);
    let b = k3s_bundle(
        &f,
        &srv.url("/one"),
        VERSION,
        Arch::Arm64,
        false,
        &Lock::new(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(b.binary.source.url, srv.url("/one/k3s-arm64"));
    assert_eq!(b.install_sh.source.url, srv.url("/one/install.sh"));
    assert_eq!(std::fs::read(&b.binary.path).unwrap(), file_of("k3s-arm64"));
    // The versioned place was asked once for the sums file (404), then the flat one.
    assert_eq!(
        srv.requests("/one/v1.31.4%2Bk3s1/sha256sum-arm64.txt")
            .len(),
        1
    );

    // With the lock, the same layout is used again without probing the other one.
    let mut lock = Lock::new();
    for e in b.lock_entries() {
        lock.upsert(e);
    }
    let before = srv.all_requests();
    let again = k3s_bundle(&f, &srv.url("/one"), VERSION, Arch::Arm64, false, &lock).unwrap();
    assert_eq!(again.binary.path, b.binary.path);
    assert_eq!(srv.all_requests(), before, "all from the cache");
}

#[test]
fn mirror_404_lists_the_urls_tried_and_the_layout() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(&dir.path().join("cache"), false);
    let msg = format!(
        "{:#}",
        k3s_bundle(
            &f,
            &srv.url("/empty"),
            VERSION,
            Arch::Arm64,
            false,
            &Lock::new()
        )
        .unwrap_err()
    );
    for want in [
        srv.url("/empty/v1.31.4%2Bk3s1/sha256sum-arm64.txt"),
        srv.url("/empty/sha256sum-arm64.txt"),
        "laid out like GitHub's release downloads".to_string(),
        "<mirror>/k3s-arm64".to_string(),
    ] {
        assert!(msg.contains(&want), "missing {want:?} in: {msg}");
    }
    // A folder mirror says the same.
    let empty = dir.path().join("mirror");
    std::fs::create_dir(&empty).unwrap();
    let msg = format!(
        "{:#}",
        k3s_bundle(
            &f,
            &empty.display().to_string(),
            VERSION,
            Arch::Arm64,
            false,
            &Lock::new()
        )
        .unwrap_err()
    );
    assert!(
        msg.contains("tried file://") && msg.contains("laid out like"),
        "{msg}"
    );
    // Sums there but the binary missing: the URL and the layout are named.
    let srv2 = Server::start();
    srv2.add(
        "/half/sha256sum-arm64.txt",
        Route::new(file_of("sha256sum-arm64.txt")),
    );
    let msg = format!(
        "{:#}",
        k3s_bundle(
            &f,
            &srv2.url("/half"),
            VERSION,
            Arch::Arm64,
            false,
            &Lock::new()
        )
        .unwrap_err()
    );
    assert!(
        msg.contains(&srv2.url("/half/k3s-arm64")) && msg.contains("laid out like"),
        "{msg}"
    );
}
