//! End-to-end `nodeforge build` through the binary: outputs, bad input, offline and locked modes.
//! Bases come from tests/fixtures/mkbase.sh, k3s from a tiny file:// mirror made here.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{sha256, Lab};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Files directly under `dir` whose name ends in `.partial`, or final images.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(leftovers(&p));
            } else {
                v.push(p.display().to_string());
            }
        }
    }
    v
}

#[test]
fn builds_outputs_and_keeps_secrets_out_of_them() {
    let lab = Lab::new();
    let o = lab.build(&["--all", "--compress", "gz"]);
    assert!(o.status.success(), "build: {}", stderr(&o));
    for node in ["cp1", "w1"] {
        let d = lab.dir.join("out").join(node);
        for f in ["img", "img.gz", "img.bmap"] {
            assert!(
                d.join(format!("{node}.{f}")).is_file(),
                "{node}.{f} missing"
            );
        }
        // SHA256SUMS verifies with coreutils.
        let st = Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "sha256sum -c: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        // bmaptool accepts the bmap and the copy equals the image.
        let copy = d.join("copy.img");
        let st = Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(d.join(format!("{node}.img.bmap")))
            .arg(d.join(format!("{node}.img")))
            .arg(&copy)
            .output()
            .expect("bmaptool (bmap-tools)");
        assert!(
            st.status.success(),
            "bmaptool copy: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert_eq!(sha256(&copy), sha256(&d.join(format!("{node}.img"))));
        fs::remove_file(&copy).unwrap();
        // Secrets appear in no output file other than the image itself (the seed).
        for s in lab.secrets() {
            for f in ["manifest.json", "SHA256SUMS"] {
                let text = fs::read_to_string(d.join(f)).unwrap();
                assert!(!text.contains(&s), "a secret leaked into {node}/{f}");
            }
            let bmap = fs::read_to_string(d.join(format!("{node}.img.bmap"))).unwrap();
            assert!(!bmap.contains(&s));
        }
    }
    let lock = fs::read_to_string(lab.dir.join("nodeforge.lock")).unwrap();
    for s in lab.secrets() {
        assert!(!lock.contains(&s));
        assert!(!stderr(&o).contains(&s), "a secret was printed");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains(&s),
            "a secret was printed"
        );
    }
    // The token is in the server's seed: the image really carries it.
    let img = fs::read(lab.dir.join("out/cp1/cp1.img")).unwrap();
    let token = lab.secrets().into_iter().next().unwrap();
    assert!(img.windows(token.len()).any(|w| w == token.as_bytes()));

    // inspect sees the family, the seed and the bundled k3s.
    for (node, family, seed_part) in [("cp1", "Raspios", 1), ("w1", "DebianGeneric", 2)] {
        let o = lab.run(&["inspect", "--json", &format!("out/{node}/{node}.img")]);
        assert!(o.status.success(), "inspect: {}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["family"], family);
        assert_eq!(r["seed_partition"], seed_part);
        assert_eq!(r["bundle"]["k3s_version"], "v1.33.5+k3s1");
        let seeds = r["seed_files"].to_string();
        assert!(
            seeds.contains("user-data") && seeds.contains("meta-data"),
            "{seeds}"
        );
    }

    // Offline from the warm cache works; --locked accepts the same inputs.
    let o = lab.build(&["cp1", "--offline", "--locked"]);
    assert!(o.status.success(), "offline locked build: {}", stderr(&o));
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn outputs_holding_secrets_are_private_and_generic_ones_are_not() {
    let lab = Lab::new();
    let o = lab.build(&["--all", "--compress", "gz", "--compress", "xz"]);
    assert!(o.status.success(), "build: {}", stderr(&o));
    for node in ["cp1", "w1"] {
        let d = lab.dir.join("out").join(node);
        assert_eq!(mode(&d), 0o700, "out/{node}/");
        for f in ["img", "img.gz", "img.xz"] {
            assert_eq!(mode(&d.join(format!("{node}.{f}"))), 0o600, "{node}.{f}");
        }
        // What holds no secret keeps the usual mode (readable inside the private directory).
        for f in [
            format!("{node}.img.bmap"),
            "manifest.json".into(),
            "SHA256SUMS".into(),
        ] {
            assert_eq!(mode(&d.join(&f)), 0o644, "{node}/{f}");
        }
        // inspect names what the image carries, never the values.
        let o = lab.run(&["inspect", "--json", &format!("out/{node}/{node}.img")]);
        assert!(o.status.success(), "inspect: {}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            r["secrets"],
            serde_json::json!(["cluster token", "node password"]),
            "{node}"
        );
        let o = lab.run(&["inspect", &format!("out/{node}/{node}.img")]);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            text.contains("secrets: cluster token, node password"),
            "{text}"
        );
        for s in lab.secrets() {
            assert!(!text.contains(&s), "inspect printed a secret");
        }
    }
    // A directory left world-readable by an older build becomes private; --no-raw too.
    let d = lab.dir.join("out/cp1");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = lab.build(&["cp1", "--compress", "xz", "--no-raw"]);
    assert!(o.status.success(), "build: {}", stderr(&o));
    assert_eq!(mode(&d), 0o700);
    assert_eq!(mode(&d.join("cp1.img.xz")), 0o600);

    // Generic images carry no secret and are meant to be published.
    let o = lab.build_to("gen", &["--generic", "--compress", "xz"]);
    assert!(o.status.success(), "generic build: {}", stderr(&o));
    let gen = lab.dir.join("gen");
    let mut n = 0;
    for e in fs::read_dir(&gen).unwrap().flatten() {
        let dir = e.path();
        assert_eq!(mode(&dir) & 0o055, 0o055, "{}", dir.display());
        for f in fs::read_dir(&dir).unwrap().flatten() {
            assert_eq!(mode(&f.path()), 0o644, "{}", f.path().display());
            n += 1;
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let o = lab.run(&["inspect", "--json", &format!("gen/{name}/{name}.img")]);
        assert!(o.status.success(), "inspect: {}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["secrets"], serde_json::json!([]), "{name}");
    }
    assert!(n >= 8, "{n} generic outputs");
}

#[test]
fn offline_with_a_cold_cache_names_the_missing_input() {
    let lab = Lab::new();
    fs::remove_file(lab.dir.join("rpi.img.xz")).unwrap();
    let o = lab.build(&["cp1", "--offline"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("rpi.img.xz") || e.contains("base image"), "{e}");
    assert!(!lab.dir.join("out/cp1/cp1.img").exists());
}

#[test]
fn locked_refuses_a_changed_input() {
    let lab = Lab::new();
    assert!(lab
        .run(&["fetch", "-c", "cluster.toml", "--cache-dir", "cache"])
        .status
        .success());
    // Replace the base by another one (a different family even) with its own valid pin.
    let mk = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkbase.sh");
    let st = Command::new("bash")
        .arg(mk)
        .arg("ubuntu-raspi")
        .arg(lab.dir.join("rpi.img.xz"))
        .status()
        .unwrap();
    assert!(st.success());
    lab.write_cluster(&sha256(&lab.dir.join("rpi.img.xz")));
    let o = lab.build(&["cp1", "--locked"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("base-rpi4"), "{}", stderr(&o));
}

#[test]
fn corrupt_base_fails_cleanly_and_does_not_poison_the_cache() {
    let lab = Lab::new();
    let good = fs::read(lab.dir.join("rpi.img.xz")).unwrap();
    // A truncated .xz pinned by its own hash: fetch accepts it, decompression must fail.
    fs::write(lab.dir.join("rpi.img.xz"), &good[..good.len() / 2]).unwrap();
    let cluster_before = fs::read(lab.dir.join("cluster.toml")).unwrap();
    lab.write_cluster(&sha256(&lab.dir.join("rpi.img.xz")));
    let cluster_bad = fs::read(lab.dir.join("cluster.toml")).unwrap();
    let o = lab.build(&["cp1"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("rpi.img.xz") && e.contains("decompress"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(
        leftovers(&lab.dir.join("out")).is_empty(),
        "{:?}",
        leftovers(&lab.dir.join("out"))
    );
    // Inputs untouched.
    assert_eq!(fs::read(lab.dir.join("cluster.toml")).unwrap(), cluster_bad);
    assert_ne!(cluster_before, cluster_bad);
    // The good base builds afterwards.
    fs::write(lab.dir.join("rpi.img.xz"), &good).unwrap();
    lab.write_cluster(&sha256(&lab.dir.join("rpi.img.xz")));
    let o = lab.build(&["cp1"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn unknown_layouts_and_bad_paths_are_clear_errors() {
    let lab = Lab::new();
    // A "base" of random bytes: no partition table.
    let junk: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(lab.dir.join("junk.img"), &junk).unwrap();
    let text = fs::read_to_string(lab.dir.join("cluster.toml"))
        .unwrap()
        .replace("rpi.img.xz", "junk.img");
    let text = text.replacen(
        &text
            .lines()
            .find(|l| l.starts_with("sha256"))
            .unwrap()
            .to_string(),
        &format!("sha256 = \"{}\"", sha256(&lab.dir.join("junk.img"))),
        1,
    );
    fs::write(lab.dir.join("cluster.toml"), text).unwrap();
    let o = lab.build(&["cp1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("junk.img"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));

    // The output path is a file.
    let lab = Lab::new();
    fs::write(lab.dir.join("out"), "not a dir").unwrap();
    let o = lab.build(&["cp1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("out"), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(lab.dir.join("out")).unwrap(),
        "not a dir"
    );

    // No secrets file: the build creates one (mode 0600) and says so, without printing values.
    fs::remove_file(lab.dir.join("nodeforge-secrets.toml")).unwrap();
    fs::remove_file(lab.dir.join("out")).unwrap();
    let o = lab.build(&["cp1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = fs::metadata(lab.dir.join("nodeforge-secrets.toml")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    for s in lab.secrets() {
        assert!(!stderr(&o).contains(&s), "a secret was printed");
    }
}

#[test]
fn a_full_disk_leaves_no_image_under_its_final_name() {
    let lab = Lab::new();
    let full = lab.dir.join("small");
    fs::create_dir(&full).unwrap();
    // Needs root to mount a small tmpfs: as root, else through password-less sudo (GitHub's
    // runner); with neither it fails loudly unless NODEFORGE_SKIP_ROOT_TESTS=1 (README, Tests).
    let sudo: &[&str] = if euid_is_root() { &[] } else { &["sudo", "-n"] };
    let cmd = |args: &[&str]| {
        let all: Vec<&str> = sudo.iter().chain(args).copied().collect();
        Command::new(all[0]).args(&all[1..]).arg(&full).output()
    };
    let m = cmd(&["mount", "-t", "tmpfs", "-o", "size=6m,mode=1777", "tmpfs"]);
    if !matches!(&m, Ok(o) if o.status.success()) {
        if std::env::var_os("NODEFORGE_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
            eprintln!("skipped (NODEFORGE_SKIP_ROOT_TESTS=1): cannot mount a tmpfs here");
            return;
        }
        panic!(
            "cannot mount a tmpfs (needs root or password-less sudo): {m:?}; \
             set NODEFORGE_SKIP_ROOT_TESTS=1 to skip this test"
        );
    }
    let o = lab.build_to("small", &["w1", "--size", "1G"]);
    let files = leftovers(&full);
    let _ = cmd(&["umount"]);
    eprintln!("build on a full disk: {}", stderr(&o));
    assert!(!o.status.success(), "a 6 MiB disk cannot hold the image");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("w1.img"),
        "the error names the file: {}",
        stderr(&o)
    );
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(".img") || f.ends_with(".partial")),
        "left behind: {files:?}\n{}",
        stderr(&o)
    );
}

/// Whether this process runs as root (`id -u` is 0).
fn euid_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
