//! `nodeforge release`: the asset set, checksums, splitting with a working JOIN.txt, no
//! secrets anywhere in the published files, and clean failures.

mod common;

use common::*;
use std::fs;
use std::process::Command;

const IMAGES: [&str; 2] = ["lab-server-rpi4", "lab-agent-x86_64"];

fn sha256sum_check(dir: &std::path::Path) {
    let o = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

#[test]
fn release_publishes_generic_images_and_splits_big_ones() {
    let lab = Lab::new();
    let o = lab.run(&[
        "release",
        "-c",
        "cluster.toml",
        "--cache-dir",
        "cache",
        "-o",
        "dist",
    ]);
    assert!(o.status.success(), "release: {}", stderr(&o));
    let dist = lab.path("dist");
    let mut want: Vec<String> = vec![
        "SHA256SUMS".into(),
        "manifest.json".into(),
        "nodeforge.lock".into(),
    ];
    for n in IMAGES {
        for s in ["img.xz", "img.bmap", "manifest.json", "spdx.json"] {
            want.push(format!("{n}.{s}"));
        }
    }
    want.sort();
    // Exactly the assets: no raw image, no scratch directory, no temporary names.
    assert_eq!(names(&dist), want);
    // Release assets are meant to be published: world-readable, unlike a node's image.
    for n in &want {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dist.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044, "{n} has mode {mode:o}");
    }
    sha256sum_check(&dist);
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), want.len() - 1, "{sums}");
    // Small assets: no warning about GitHub's limit.
    assert!(!stderr(&o).contains("2 GiB"), "{}", stderr(&o));

    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dist.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(index["cluster"], "lab");
    assert_eq!(index["images"].as_array().unwrap().len(), 2);
    let lock = fs::read_to_string(dist.join("nodeforge.lock")).unwrap();
    assert_eq!(
        lock,
        fs::read_to_string(lab.path("nodeforge.lock")).unwrap()
    );
    assert!(
        lock.contains("base-rpi4") && lock.contains("base-x86_64"),
        "{lock}"
    );

    let secrets = lab.secrets();
    for n in IMAGES {
        let m: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(dist.join(format!("{n}.manifest.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(m["generic"], true);
        assert!(m["node"].is_null() && m["instance_id"].is_null());
        // The xz decodes (with xz-utils) to the image the manifest describes.
        let raw = unxz(&dist.join(format!("{n}.img.xz")));
        assert_eq!(raw.len() as u64, m["image"]["size"].as_u64().unwrap());
        let tmp = lab.path(&format!("{n}.raw"));
        fs::write(&tmp, &raw).unwrap();
        assert_eq!(sha256(&tmp), m["image"]["sha256"].as_str().unwrap());
        // bmaptool accepts the block map with the compressed image.
        let copy = lab.path(&format!("{n}.copy"));
        let b = Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(dist.join(format!("{n}.img.bmap")))
            .arg(dist.join(format!("{n}.img.xz")))
            .arg(&copy)
            .output()
            .expect("bmaptool (bmap-tools)");
        assert!(b.status.success(), "bmaptool copy: {}", stderr(&b));
        assert_eq!(sha256(&copy), sha256(&tmp));
        fs::remove_file(&copy).unwrap();
        fs::remove_file(&tmp).unwrap();
        // A generic image carries no secret, not even in its raw bytes.
        for s in &secrets {
            assert!(!contains(&raw, s.as_bytes()), "a secret is inside {n}.img");
        }
    }
    // No secret in any published file, nor in what the command printed.
    for f in names(&dist) {
        let bytes = fs::read(dist.join(&f)).unwrap();
        for s in &secrets {
            assert!(!contains(&bytes, s.as_bytes()), "a secret leaked into {f}");
        }
    }
    for s in &secrets {
        assert!(!contains(&o.stdout, s.as_bytes()) && !contains(&o.stderr, s.as_bytes()));
    }

    // Again into the same directory with --split: the old whole .img.xz files go, parts come.
    let before = sums.clone();
    // Parts of a third of the smallest image: every image splits into at least three.
    let chunk = IMAGES
        .iter()
        .map(|n| {
            fs::metadata(dist.join(format!("{n}.img.xz")))
                .unwrap()
                .len()
        })
        .min()
        .unwrap()
        / 3;
    let chunk_arg = chunk.to_string();
    let o = lab.run(&[
        "release",
        "-c",
        "cluster.toml",
        "--cache-dir",
        "cache",
        "-o",
        "dist",
        "--offline",
        "--locked",
        "--split",
        &chunk_arg,
    ]);
    assert!(o.status.success(), "release --split: {}", stderr(&o));
    let files = names(&dist);
    for n in IMAGES {
        assert!(!files.contains(&format!("{n}.img.xz")), "{files:?}");
        assert!(files.contains(&format!("{n}.img.xz.part-00")), "{files:?}");
        assert!(files.contains(&format!("{n}.img.xz.part-02")), "{files:?}");
        for f in files
            .iter()
            .filter(|f| f.starts_with(n) && f.contains(".part-"))
        {
            assert!(fs::metadata(dist.join(f)).unwrap().len() <= chunk);
        }
    }
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    // The joined files keep the hashes of the unsplit release: same inputs, same bytes.
    for n in IMAGES {
        let line = |t: &str| {
            t.lines()
                .find(|l| l.ends_with(&format!("  {n}.img.xz")))
                .map(str::to_string)
        };
        assert_eq!(line(&sums), line(&before), "{n}.img.xz");
        assert!(line(&sums).is_some());
    }
    // Every part is listed too.
    for f in files.iter().filter(|f| f.contains(".part-")) {
        assert!(sums.contains(&format!("  {f}\n")), "{f} not in SHA256SUMS");
    }
    // JOIN.txt's command, run as written, rebuilds the files and verifies everything.
    let join = fs::read_to_string(dist.join("JOIN.txt")).unwrap();
    let cmd = join
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cat "))
        .unwrap_or_else(|| panic!("no join command in JOIN.txt:\n{join}"));
    assert!(cmd.ends_with("sha256sum -c SHA256SUMS"), "{cmd}");
    let j = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(&dist)
        .output()
        .unwrap();
    assert!(
        j.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&j.stdout),
        stderr(&j)
    );
    for n in IMAGES {
        assert!(!unxz(&dist.join(format!("{n}.img.xz"))).is_empty());
    }
    // A corrupted part is caught by the same check.
    let part = dist.join(format!("{}.img.xz.part-00", IMAGES[0]));
    let mut b = fs::read(&part).unwrap();
    b[100] ^= 1;
    fs::write(&part, b).unwrap();
    let j = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(&dist)
        .output()
        .unwrap();
    assert!(!j.status.success(), "a corrupted part must fail the check");
}

#[test]
fn release_failures_are_clean() {
    let lab = Lab::new();
    // --split 0 is refused before anything is built.
    let o = lab.run(&[
        "release",
        "-c",
        "cluster.toml",
        "--cache-dir",
        "cache",
        "-o",
        "d0",
        "--split",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--split"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));

    // The output path is a file: named, and left alone.
    fs::write(lab.path("dfile"), "keep").unwrap();
    let o = lab.run(&[
        "release",
        "-c",
        "cluster.toml",
        "--cache-dir",
        "cache",
        "-o",
        "dfile",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("dfile"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(lab.path("dfile")).unwrap(), "keep");

    // A base that cannot be fetched offline: the error names it and dist/ gets nothing
    // (not even the scratch directory).
    fs::remove_file(lab.path("deb.tar.xz")).unwrap();
    let o = lab.run(&[
        "release",
        "-c",
        "cluster.toml",
        "--cache-dir",
        "cold",
        "-o",
        "dist",
        "--offline",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("deb.tar.xz") || e.contains("base image"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(names(&lab.path("dist")), Vec::<String>::new());
}
