//! Fetcher against a loopback HTTP server and file:// sources.

mod fetch_support;

use std::path::Path;
use std::time::{Duration, Instant};

use fetch_support::{content, list, sha256_hex, Route, Server};
use nodeforge::fetch::{Fetcher, Source};
use nodeforge::hash::sha256_file;

fn fetcher(cache: &Path, offline: bool) -> Fetcher {
    let mut f = Fetcher::new(cache.to_path_buf(), offline).unwrap();
    f.set_retry_policy(3, Duration::from_millis(20));
    f.set_idle_timeout(Duration::from_secs(10));
    f
}

fn src(url: String, data: &[u8]) -> Source {
    Source::new(&url, &sha256_hex(data)).unwrap()
}

/// Nothing but complete blobs (and no `.partial`) in the cache's blob directory.
fn assert_no_partials(cache: &Path) {
    let names = list(&cache.join("blobs"));
    assert!(
        names.iter().all(|n| !n.ends_with(".partial")),
        "leftover partial files: {names:?}"
    );
    assert!(list(&cache.join("tmp")).is_empty(), "leftover temporaries");
}

#[test]
fn plain_download_then_cache_hit() {
    let srv = Server::start();
    let data = content(300_000, 1);
    srv.add("/a.bin", Route::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let s = src(srv.url("/a.bin"), &data);
    let p = f.fetch(&s, "test input a").unwrap();
    assert_eq!(p, dir.path().join("blobs").join(&s.sha256));
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(sha256_file(&p).unwrap(), s.sha256);
    // Second fetch: from the cache, no request.
    f.fetch(&s, "test input a").unwrap();
    assert_eq!(srv.requests("/a.bin").len(), 1);
    assert_no_partials(dir.path());
}

#[test]
fn uppercase_sha_is_accepted_and_bad_sha_rejected() {
    assert!(Source::new("https://x/y", "abc").is_err());
    assert!(Source::new("ftp://x/y", &"a".repeat(64)).is_err());
    let s = Source::new("https://x/y", &"AB".repeat(32)).unwrap();
    assert_eq!(s.sha256, "ab".repeat(32));
}

#[test]
fn resume_after_dropped_connection_with_range() {
    let srv = Server::start();
    let data = content(500_000, 2);
    let mut r = Route::new(data.clone());
    r.ranges = true;
    r.drop_after = Some(200_000);
    srv.add("/r.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let p = f
        .fetch(&src(srv.url("/r.bin"), &data), "resumable")
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let reqs = srv.requests("/r.bin");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range, Some(200_000), "second request resumes");
    assert_no_partials(dir.path());
}

#[test]
fn dropped_connection_without_range_support_restarts() {
    let srv = Server::start();
    let data = content(400_000, 3);
    let mut r = Route::new(data.clone());
    r.drop_after = Some(150_000);
    srv.add("/n.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let p = f.fetch(&src(srv.url("/n.bin"), &data), "no-range").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let reqs = srv.requests("/n.bin");
    assert_eq!(reqs.len(), 2);
    // The client asked to resume; the server answered 200 and the download restarted at 0.
    assert_eq!(reqs[1].range, Some(150_000));
    assert_no_partials(dir.path());
}

#[test]
fn partial_from_an_earlier_run_is_rehashed_and_resumed() {
    let srv = Server::start();
    let data = content(256_000, 4);
    let mut r = Route::new(data.clone());
    r.ranges = true;
    srv.add("/p.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let s = src(srv.url("/p.bin"), &data);
    let partial = dir
        .path()
        .join("blobs")
        .join(format!("{}.partial", s.sha256));
    std::fs::write(&partial, &data[..100_000]).unwrap();
    let p = f.fetch(&s, "resumed").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let reqs = srv.requests("/p.bin");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].range, Some(100_000));
}

#[test]
fn corrupt_partial_is_caught_by_the_hash_and_discarded() {
    let srv = Server::start();
    let data = content(256_000, 5);
    let mut r = Route::new(data.clone());
    r.ranges = true;
    srv.add("/c.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let s = src(srv.url("/c.bin"), &data);
    let partial = dir
        .path()
        .join("blobs")
        .join(format!("{}.partial", s.sha256));
    std::fs::write(&partial, vec![0xAAu8; 50_000]).unwrap();
    let err = format!("{:#}", f.fetch(&s, "corrupt partial").unwrap_err());
    assert!(err.contains("mismatch"), "{err}");
    assert!(!partial.exists());
    // The next try starts from scratch and succeeds.
    let p = f.fetch(&s, "corrupt partial").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
}

#[test]
fn wrong_checksum_is_rejected_and_nothing_is_cached() {
    let srv = Server::start();
    let data = content(100_000, 6);
    srv.add("/w.bin", Route::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let wrong = "0123456789abcdef".repeat(4);
    let s = Source::new(&srv.url("/w.bin"), &wrong).unwrap();
    let err = format!("{:#}", f.fetch(&s, "bad pin").unwrap_err());
    assert!(err.contains(&wrong), "expected hash in: {err}");
    assert!(err.contains(&sha256_hex(&data)), "actual hash in: {err}");
    assert!(err.contains(&srv.url("/w.bin")), "URL in: {err}");
    assert!(err.contains("bad pin"), "input name in: {err}");
    let blobs = list(&dir.path().join("blobs"));
    assert!(blobs.is_empty(), "cache not empty: {blobs:?}");
    assert_no_partials(dir.path());
    assert_eq!(srv.requests("/w.bin").len(), 1, "a mismatch is not retried");
}

#[test]
fn not_found_fails_once_without_retry() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut f = fetcher(dir.path(), false);
    f.set_retry_policy(3, Duration::from_secs(5));
    let t = Instant::now();
    let s = Source::new(&srv.url("/missing.img"), &"1".repeat(64)).unwrap();
    let err = format!("{:#}", f.fetch(&s, "base image").unwrap_err());
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("/missing.img"), "{err}");
    assert_eq!(srv.requests("/missing.img").len(), 1);
    assert!(t.elapsed() < Duration::from_secs(4), "no backoff on 4xx");
    assert!(list(&dir.path().join("blobs")).is_empty());
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let srv = Server::start();
    let data = content(80_000, 7);
    let mut r = Route::new(data.clone());
    r.statuses = [500, 503].into_iter().collect();
    srv.add("/flaky.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let p = f
        .fetch(&src(srv.url("/flaky.bin"), &data), "flaky")
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(srv.requests("/flaky.bin").len(), 3);
}

#[test]
fn persistent_server_errors_give_up_after_bounded_retries() {
    let srv = Server::start();
    let mut r = Route::new(vec![1, 2, 3]);
    r.statuses = vec![502; 100].into_iter().collect();
    srv.add("/down.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let err = f
        .fetch(&src(srv.url("/down.bin"), &[1, 2, 3]), "down")
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("502") && msg.contains("4 attempts"), "{msg}");
    assert_eq!(srv.requests("/down.bin").len(), 4, "1 try + 3 retries");
}

#[test]
fn connection_refused_is_retried_and_reported() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher(dir.path(), false);
    let url = format!("http://127.0.0.1:{port}/x.bin");
    let err = format!(
        "{:#}",
        f.fetch(&src(url.clone(), b"x"), "refused").unwrap_err()
    );
    assert!(err.contains(&url) && err.contains("attempts"), "{err}");
}

#[test]
fn stalled_body_hits_the_idle_timeout_and_resumes() {
    let srv = Server::start();
    let data = content(200_000, 8);
    let mut r = Route::new(data.clone());
    r.ranges = true;
    r.stall_after = Some((64 * 1024, Duration::from_secs(3)));
    srv.add("/stall.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let mut f = fetcher(dir.path(), false);
    f.set_idle_timeout(Duration::from_millis(400));
    let t = Instant::now();
    let p = f
        .fetch(&src(srv.url("/stall.bin"), &data), "stalled")
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let reqs = srv.requests("/stall.bin");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range, Some(64 * 1024));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn slow_download_longer_than_the_idle_timeout_is_not_cut() {
    // 8 chunks 150 ms apart: 1.2 s in total with a 500 ms idle timeout.
    let srv = Server::start();
    let data = content(8 * 16 * 1024, 9);
    let mut r = Route::new(data.clone());
    r.chunk_delay = Some(Duration::from_millis(150));
    srv.add("/slow.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let mut f = fetcher(dir.path(), false);
    f.set_idle_timeout(Duration::from_millis(500));
    let p = f.fetch(&src(srv.url("/slow.bin"), &data), "slow").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(srv.requests("/slow.bin").len(), 1, "no timeout, no retry");
}

#[test]
fn file_sources_are_verified_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = dir.path().join("base image.img");
    let mut data = content(70_000, 10);
    data.extend(vec![0u8; 3 * 1024 * 1024]);
    data.extend(content(5_000, 11));
    std::fs::write(&input, &data).unwrap();
    let sha = sha256_hex(&data);
    let f = fetcher(&cache, false);
    let url = reqwest::Url::from_file_path(&input).unwrap().to_string();
    assert!(url.contains("%20"));
    // Not on removable media: used where it is, nothing copied into blobs/.
    let p = f
        .fetch(&Source::new(&url, &sha).unwrap(), "file input")
        .unwrap();
    assert_eq!(p, input);
    assert!(
        list(&cache.join("blobs")).is_empty(),
        "copied although it stays"
    );
    // A plain absolute path works too, and the verification is remembered (same identity).
    let p2 = f
        .fetch(
            &Source::new(input.to_str().unwrap(), &sha).unwrap(),
            "path input",
        )
        .unwrap();
    assert_eq!(p, p2);
    assert_eq!(list(&cache.join("local")), vec![sha.clone()]);
    // Changed in place: hashed again, and the change is caught.
    std::fs::write(&input, b"changed").unwrap();
    let err = format!(
        "{:#}",
        f.fetch(&Source::new(&url, &sha).unwrap(), "file input")
            .unwrap_err()
    );
    assert!(err.contains("mismatch"), "{err}");
    // Gone: the error names it (the rule: files that stay put are not copied).
    std::fs::remove_file(&input).unwrap();
    let off = fetcher(&cache, true);
    let err = format!(
        "{:#}",
        off.fetch(&Source::new(&url, &sha).unwrap(), "gone")
            .unwrap_err()
    );
    assert!(
        err.contains("base image.img") && err.contains("no such file"),
        "{err}"
    );
    assert_no_partials(&cache);
}

#[test]
fn file_source_with_wrong_hash_or_missing_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = dir.path().join("in.bin");
    std::fs::write(&input, b"hello").unwrap();
    let f = fetcher(&cache, false);
    let err = format!(
        "{:#}",
        f.fetch(
            &Source::new(input.to_str().unwrap(), &"2".repeat(64)).unwrap(),
            "local"
        )
        .unwrap_err()
    );
    assert!(
        err.contains("mismatch") && err.contains(&sha256_hex(b"hello")),
        "{err}"
    );
    assert!(list(&cache.join("blobs")).is_empty());
    let missing = dir.path().join("nope.img");
    let err = format!(
        "{:#}",
        f.fetch(
            &Source::new(missing.to_str().unwrap(), &"2".repeat(64)).unwrap(),
            "missing local"
        )
        .unwrap_err()
    );
    assert!(
        err.contains("nope.img") && err.contains("missing local"),
        "{err}"
    );
}

#[test]
fn offline_uses_only_the_cache() {
    let srv = Server::start();
    let data = content(50_000, 12);
    srv.add("/o.bin", Route::new(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let s = src(srv.url("/o.bin"), &data);
    // Cold cache: a clear error, no request.
    let off = fetcher(dir.path(), true);
    let err = format!("{:#}", off.fetch(&s, "k3s binary").unwrap_err());
    assert!(
        err.contains("offline") && err.contains("k3s binary"),
        "{err}"
    );
    assert!(err.contains(&srv.url("/o.bin")), "{err}");
    assert_eq!(srv.all_requests(), 0);
    // Warm the cache online, then offline works without the network.
    fetcher(dir.path(), false).fetch(&s, "k3s binary").unwrap();
    let p = off.fetch(&s, "k3s binary").unwrap();
    assert_eq!(std::fs::read(p).unwrap(), data);
    assert_eq!(srv.all_requests(), 1);
}

#[test]
fn concurrent_fetches_in_threads_download_once() {
    let srv = Server::start();
    let data = content(6 * 16 * 1024, 13);
    let mut r = Route::new(data.clone());
    r.chunk_delay = Some(Duration::from_millis(40));
    srv.add("/t.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let s = src(srv.url("/t.bin"), &data);
    let paths: Vec<_> = (0..4)
        .map(|_| {
            let cache = dir.path().to_path_buf();
            let s = s.clone();
            std::thread::spawn(move || fetcher(&cache, false).fetch(&s, "shared").unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(std::fs::read(&paths[0]).unwrap(), data);
    assert_eq!(srv.requests("/t.bin").len(), 1);
    assert_no_partials(dir.path());
}

const CHILD_URL: &str = "NODEFORGE_TEST_CHILD_URL";
const CHILD_SHA: &str = "NODEFORGE_TEST_CHILD_SHA";
const CHILD_CACHE: &str = "NODEFORGE_TEST_CHILD_CACHE";

/// Runs only as a child process of `concurrent_fetches_in_processes_download_once`.
#[test]
fn child_fetch_process() {
    let (Ok(url), Ok(sha), Ok(cache)) = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_SHA),
        std::env::var(CHILD_CACHE),
    ) else {
        return;
    };
    let p = fetcher(Path::new(&cache), false)
        .fetch(&Source::new(&url, &sha).unwrap(), "child")
        .unwrap();
    assert_eq!(sha256_file(&p).unwrap(), sha);
}

#[test]
fn concurrent_fetches_in_processes_download_once() {
    let srv = Server::start();
    let data = content(6 * 16 * 1024, 14);
    let mut r = Route::new(data.clone());
    r.chunk_delay = Some(Duration::from_millis(60));
    srv.add("/proc.bin", r);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["child_fetch_process", "--exact", "--test-threads=1"])
                .env(CHILD_URL, srv.url("/proc.bin"))
                .env(CHILD_SHA, sha256_hex(&data))
                .env(CHILD_CACHE, dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(srv.requests("/proc.bin").len(), 1);
    let blob = dir.path().join("blobs").join(sha256_hex(&data));
    assert_eq!(std::fs::read(blob).unwrap(), data);
    assert_no_partials(dir.path());
}

#[test]
fn default_cache_dir_follows_xdg() {
    // Read-only check of the rule (no env mutation in a threaded test binary).
    let d = Fetcher::default_cache_dir();
    assert!(d.ends_with("nodeforge"), "{}", d.display());
    match std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        Some(x) if Path::new(&x).is_absolute() => assert_eq!(d, Path::new(&x).join("nodeforge")),
        _ => assert!(d.ends_with(".cache/nodeforge")),
    }
}
