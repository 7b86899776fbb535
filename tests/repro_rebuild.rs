//! Rebuilding a node from the same inputs and secrets gives the same bytes, whatever the
//! working directory, cache directory, output directory and time; other secrets do not.
//! Also: a node's token sits only inside its image, never in the files published beside it.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// Build cp1 with xz from `cwd`, with its own cache and output directory.
fn build_cp1(lab: &Lab, cwd: &str, cache: &str, out: &str, secrets: &str) -> std::path::PathBuf {
    let cluster = lab.path("cluster.toml");
    let secrets = lab.path(secrets);
    let cache = lab.path(cache);
    let out = lab.path(out);
    let args: Vec<&str> = vec![
        "build",
        "cp1",
        "-c",
        cluster.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--compress",
        "xz",
    ];
    let o = lab.run_in(&lab.path(cwd), &args);
    assert!(o.status.success(), "build from {cwd}: {}", stderr(&o));
    out.join("cp1")
}

fn same(a: &Path, b: &Path, file: &str) {
    let (x, y) = (
        fs::read(a.join(file)).unwrap(),
        fs::read(b.join(file)).unwrap(),
    );
    assert!(
        x == y,
        "{file} differs between {} and {}",
        a.display(),
        b.display()
    );
}

#[test]
fn rebuild_is_byte_identical_elsewhere_and_later_and_differs_with_other_secrets() {
    let lab = Lab::new();
    let a = build_cp1(&lab, "wd-a", "cache-a", "out-a", "nodeforge-secrets.toml");
    // Another second on the clock (file times, a clock read anywhere would show).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let b = build_cp1(
        &lab,
        "wd-b/deeper",
        "cache-b",
        "elsewhere/out-b",
        "nodeforge-secrets.toml",
    );
    for f in [
        "cp1.img",
        "cp1.img.xz",
        "cp1.img.bmap",
        "manifest.json",
        "SHA256SUMS",
    ] {
        same(&a, &b, f);
    }
    // The caches were really separate (each fetched and unpacked its own inputs).
    assert!(fs::read_dir(lab.path("cache-b")).unwrap().count() > 0);

    // Secrets are an input: another token gives another image (so the check above can fail).
    let text = fs::read_to_string(lab.path("nodeforge-secrets.toml")).unwrap();
    let token = lab.secrets()[0].clone();
    let other: String = token
        .chars()
        .map(|c| {
            if c == 'a' {
                'b'
            } else if c == 'b' {
                'a'
            } else {
                c
            }
        })
        .collect();
    assert_ne!(token, other);
    fs::write(lab.path("other-secrets.toml"), text.replace(&token, &other)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        lab.path("other-secrets.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let c = build_cp1(&lab, "wd-a", "cache-a", "out-c", "other-secrets.toml");
    let (ia, ic) = (
        fs::read(a.join("cp1.img")).unwrap(),
        fs::read(c.join("cp1.img")).unwrap(),
    );
    assert_ne!(ia, ic, "a different token must change the image");
    assert!(contains(&ic, other.as_bytes()) && !contains(&ic, token.as_bytes()));
    assert_ne!(
        fs::read(a.join("cp1.img.xz")).unwrap(),
        fs::read(c.join("cp1.img.xz")).unwrap()
    );

    // The seed carries the token and cp1's node password: in the raw image and in the xz
    // (decoded with xz-utils); in no other file of the build, nor in the lock file.
    let s = nodeforge::secrets::Secrets::load(&lab.path("nodeforge-secrets.toml")).unwrap();
    let cp1_pw = s.node_passwords["cp1"].clone();
    let w1_pw = s.node_passwords["w1"].clone();
    let unpacked = unxz(&a.join("cp1.img.xz"));
    assert_eq!(unpacked, ia);
    for needle in [&token, &cp1_pw] {
        assert!(contains(&ia, needle.as_bytes()), "the seed lacks a secret");
    }
    assert!(
        !contains(&ia, w1_pw.as_bytes()),
        "w1's password is in cp1's image"
    );
    for f in names(&a) {
        if f == "cp1.img" || f == "cp1.img.xz" {
            continue;
        }
        let bytes = fs::read(a.join(&f)).unwrap();
        for needle in [&token, &cp1_pw, &w1_pw] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "a secret leaked into {f}"
            );
        }
    }
    let lock = fs::read(lab.path("nodeforge.lock")).unwrap();
    for needle in [&token, &cp1_pw, &w1_pw] {
        assert!(
            !contains(&lock, needle.as_bytes()),
            "a secret leaked into nodeforge.lock"
        );
    }
}

#[test]
fn release_is_reproducible_elsewhere_and_later() {
    let lab = Lab::new();
    let cluster = lab.path("cluster.toml");
    let run = |cwd: &str, cache: &str, out: &str| {
        let (cache, out) = (lab.path(cache), lab.path(out));
        let o = lab.run_in(
            &lab.path(cwd),
            &[
                "release",
                "-c",
                cluster.to_str().unwrap(),
                "--cache-dir",
                cache.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "release from {cwd}: {}", stderr(&o));
        out
    };
    let a = run("wd-a", "cache-a", "dist-a");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let b = run("wd-b/x", "cache-b", "y/dist-b");
    assert_eq!(names(&a), names(&b));
    // SHA256SUMS covers every asset: equal sums, equal releases.
    same(&a, &b, "SHA256SUMS");
    for f in names(&a) {
        same(&a, &b, &f);
    }
}
