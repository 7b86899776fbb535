//! nodeforge owns the seed: a base that already carries one (here an image built by nodeforge,
//! with an extra `vendor-data` added by mcopy) gives a node whose seed files are exactly what
//! `nodeforge render NODE` writes, byte for byte, for every family. Seed files are read back
//! with mtools, partitions listed with sfdisk.

mod common;

use common::{sha256, stderr, BIN};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEEDS: [&str; 4] = ["user-data", "meta-data", "network-config", "vendor-data"];

fn run(cmd: &mut Command) -> String {
    let o = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (see tests/setup-host.sh)"));
    assert!(o.status.success(), "{cmd:?} failed: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn nodeforge(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn mirror(dir: &Path) -> PathBuf {
    let m = dir.join("mirror");
    fs::create_dir(&m).unwrap();
    fs::write(m.join("k3s"), vec![0x5au8; 200_000]).unwrap();
    fs::write(m.join("k3s-arm64"), vec![0xa5u8; 200_000]).unwrap();
    fs::write(m.join("install.sh"), "#!/bin/sh\necho stand-in\n").unwrap();
    for (arch, bin) in [("amd64", "k3s"), ("arm64", "k3s-arm64")] {
        let line = format!("{}  {bin}\n", sha256(&m.join(bin)));
        fs::write(m.join(format!("sha256sum-{arch}.txt")), line).unwrap();
    }
    m
}

fn cluster(dir: &Path, board: &str, base: &Path, family: &str) {
    cluster_pinned(dir, board, base, family, "sha256", &sha256(base));
}

fn cluster_pinned(dir: &Path, board: &str, base: &Path, family: &str, key: &str, hash: &str) {
    let iface = if board == "x86_64" {
        "interface = \"enp1s0\"\n"
    } else {
        ""
    };
    let text = format!(
        r#"[cluster]
name = "own"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxq me@laptop"]
[boards.{board}]
base = "{}"
{key} = "{hash}"
family = "{family}"
[k3s]
mirror = "file://{}"
[[nodes]]
hostname = "a"
role = "server"
board = "{board}"
address = "10.0.0.10/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
{iface}
[[nodes]]
hostname = "b"
role = "agent"
board = "{board}"
"#,
        base.display(),
        dir.join("mirror").display()
    );
    fs::write(dir.join("cluster.toml"), text).unwrap();
}

/// (start byte, partition number) of every partition, from sfdisk's JSON.
fn partitions(img: &Path) -> Vec<(u64, u64)> {
    let j: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(img))).unwrap();
    let mut out = Vec::new();
    for (i, p) in j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let node = p["node"].as_str().unwrap();
        let n: u64 = node
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap_or(i as u64 + 1);
        out.push((p["start"].as_u64().unwrap() * 512, n));
    }
    out
}

/// Root file names (lower case) and label of the FAT at `off`, or None when it is not FAT.
fn fat_root(img: &Path, off: u64) -> Option<(String, Vec<String>)> {
    let spec = format!("{}@@{off}", img.display());
    let o = Command::new("mdir")
        .args(["-b", "-i", &spec, "::"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("mdir (mtools)");
    if !o.status.success() {
        return None;
    }
    let names = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim_start_matches("::/").to_ascii_lowercase())
        .collect();
    let label = run(Command::new("mlabel").args(["-s", "-i", &spec, "::"]));
    Some((label.trim().to_string(), names))
}

fn check_family(family: &str, board: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mirror(dir);
    let base = dir.join("fixture.img");
    let st = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mkbase.sh"
        ))
        .arg(family)
        .arg(&base)
        .output()
        .unwrap();
    assert!(st.status.success(), "mkbase {family}: {}", stderr(&st));

    // 1. Build node `a` (static 10.0.0.10) and add a vendor-data next to its seed.
    cluster(dir, board, &base, family);
    let o = nodeforge(dir, &["init", "--update", "-c", "cluster.toml"]);
    assert!(o.status.success(), "init: {}", stderr(&o));
    let o = nodeforge(
        dir,
        &["build", "a", "-c", "cluster.toml", "--cache-dir", "cache"],
    );
    assert!(o.status.success(), "build a: {}", stderr(&o));
    let a_img = dir.join("used-as-base.img");
    fs::rename(dir.join("out/a/a.img"), &a_img).unwrap();
    let vendor = dir.join("vendor-data");
    fs::write(&vendor, "#cloud-config\nruncmd: [[echo, not-ours]]\n").unwrap();
    let mut seeded = 0;
    for (off, _) in partitions(&a_img) {
        if let Some((_, names)) = fat_root(&a_img, off) {
            if names.iter().any(|n| n == "user-data") {
                let spec = format!("{}@@{off}", a_img.display());
                run(Command::new("mcopy")
                    .arg("-i")
                    .arg(&spec)
                    .arg(&vendor)
                    .arg("::vendor-data"));
                seeded += 1;
            }
        }
    }
    assert_eq!(seeded, 1, "{family}: the built image has one seed FAT");

    // 2. Build DHCP node `b` from that image.
    cluster(dir, board, &a_img, family);
    let o = nodeforge(
        dir,
        &["build", "b", "-c", "cluster.toml", "--cache-dir", "cache"],
    );
    assert!(o.status.success(), "build b: {}", stderr(&o));
    let b_img = dir.join("out/b/b.img");

    // 3. Its seed files are exactly `nodeforge render b`'s.
    let o = nodeforge(
        dir,
        &[
            "render",
            "b",
            "-c",
            "cluster.toml",
            "--family",
            family,
            "-o",
            "rendered",
        ],
    );
    assert!(o.status.success(), "render: {}", stderr(&o));
    let mut want: Vec<String> = SEEDS
        .iter()
        .filter(|s| dir.join("rendered").join(s).exists())
        .map(|s| s.to_string())
        .collect();
    want.sort();
    let mut seed_fats = 0;
    let mut cidata = 0;
    for (off, number) in partitions(&b_img) {
        let Some((label, names)) = fat_root(&b_img, off) else {
            continue;
        };
        if label.to_ascii_uppercase().contains("CIDATA") {
            cidata += 1;
        }
        let mut found: Vec<String> = names
            .iter()
            .filter(|n| SEEDS.contains(&n.as_str()))
            .cloned()
            .collect();
        if found.is_empty() {
            continue;
        }
        seed_fats += 1;
        found.sort();
        assert_eq!(found, want, "{family}: seed files on partition {number}");
        for name in &found {
            let got = dir.join(format!("got-{name}"));
            let spec = format!("{}@@{off}", b_img.display());
            run(Command::new("mcopy")
                .args(["-n", "-i", &spec])
                .arg(format!("::{name}"))
                .arg(&got));
            assert_eq!(
                fs::read(&got).unwrap(),
                fs::read(dir.join("rendered").join(name)).unwrap(),
                "{family}: {name} differs from `nodeforge render b`"
            );
        }
    }
    assert_eq!(seed_fats, 1, "{family}: exactly one FAT holds seed files");
    let expect_cidata = usize::from(matches!(family, "debian-raspi" | "debian-generic"));
    assert_eq!(cidata, expect_cidata, "{family}: CIDATA partitions");
    // The DHCP node never inherits node a's static address.
    let all = fs::read(&b_img).unwrap();
    let nc_from_a = b"10.0.0.10/24";
    assert!(
        !all.windows(nc_from_a.len()).any(|w| w == nc_from_a),
        "{family}: node a's network-config survived"
    );
    // The result checks clean with the partition tools.
    if family == "debian-generic" {
        run(Command::new("sgdisk").arg("-v").arg(&b_img));
    } else {
        run(Command::new("sfdisk").arg("--verify").arg(&b_img));
    }
}

#[test]
fn raspios_base_with_a_seed() {
    check_family("raspios", "rpi4");
}

#[test]
fn ubuntu_raspi_base_with_a_seed() {
    check_family("ubuntu-raspi", "rpi4");
}

#[test]
fn debian_raspi_base_with_a_seed() {
    check_family("debian-raspi", "rpi4");
}

#[test]
fn debian_generic_base_with_a_seed() {
    check_family("debian-generic", "x86_64");
}

/// A `cmdline.txt` and `config.txt` saved on Windows (UTF-8 BOM, CRLF), placed by mcopy: the
/// built image's files have no BOM, LF line ends, cmdline.txt one line with the flags once.
#[test]
fn bom_and_crlf_boot_files_are_normalised() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mirror(dir);
    let base = dir.join("fixture.img");
    let st = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mkbase.sh"
        ))
        .arg("raspios")
        .arg(&base)
        .output()
        .unwrap();
    assert!(st.status.success(), "mkbase: {}", stderr(&st));
    let boot = format!("{}@@{}", base.display(), 16384 * 512);
    let cmdline = dir.join("cmdline.txt");
    fs::write(
        &cmdline,
        "\u{feff}console=serial0,115200 console=tty1 root=PARTUUID=6c8f4d2e-02 rootfstype=ext4 rootwait\r\n",
    )
    .unwrap();
    let config = dir.join("config.txt");
    fs::write(&config, "\u{feff}arm_64bit=1\r\n[pi4]\r\narm_boost=1\r\n").unwrap();
    for f in [&cmdline, &config] {
        run(Command::new("mcopy")
            .args(["-o", "-i", &boot])
            .arg(f)
            .arg("::"));
    }
    // The base really carries the BOM now.
    let back = dir.join("back.txt");
    run(Command::new("mcopy")
        .args(["-n", "-i", &boot, "::cmdline.txt"])
        .arg(&back));
    assert!(fs::read(&back).unwrap().starts_with(&[0xEF, 0xBB, 0xBF]));

    cluster(dir, "rpi4", &base, "raspios");
    let o = nodeforge(dir, &["init", "--update", "-c", "cluster.toml"]);
    assert!(o.status.success(), "init: {}", stderr(&o));
    let o = nodeforge(
        dir,
        &["build", "b", "-c", "cluster.toml", "--cache-dir", "cache"],
    );
    assert!(o.status.success(), "build: {}", stderr(&o));
    let img = dir.join("out/b/b.img");
    let spec = format!("{}@@{}", img.display(), 16384 * 512);
    for (name, want) in [
        (
            "cmdline.txt",
            "console=serial0,115200 console=tty1 root=PARTUUID=6c8f4d2e-02 rootfstype=ext4 rootwait cgroup_memory=1 cgroup_enable=memory\n",
        ),
        (
            "config.txt",
            "arm_64bit=1\n[pi4]\narm_boost=1\n\n# added by nodeforge\n[all]\nenable_uart=1\n",
        ),
    ] {
        let got = dir.join(format!("got-{name}"));
        run(Command::new("mcopy")
            .args(["-n", "-i", &spec])
            .arg(format!("::{name}"))
            .arg(&got));
        assert_eq!(fs::read_to_string(&got).unwrap(), want, "{name}");
    }
}

/// A base pinned by `sha512` in `[boards.x86_64]` builds, and the lock records both hashes.
#[test]
fn base_pinned_by_sha512() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    mirror(dir);
    let base = dir.join("disk.tar.xz");
    let st = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mkbase.sh"
        ))
        .arg("debian-generic")
        .arg(&base)
        .output()
        .unwrap();
    assert!(st.status.success(), "mkbase: {}", stderr(&st));
    let s512 = run(Command::new("sha512sum").arg(&base));
    let s512 = s512.split_whitespace().next().unwrap();
    cluster_pinned(dir, "x86_64", &base, "debian-generic", "sha512", s512);
    let o = nodeforge(dir, &["init", "--update", "-c", "cluster.toml"]);
    assert!(o.status.success(), "init: {}", stderr(&o));
    let o = nodeforge(
        dir,
        &["build", "b", "-c", "cluster.toml", "--cache-dir", "cache"],
    );
    assert!(o.status.success(), "build: {}", stderr(&o));
    let lock = fs::read_to_string(dir.join("nodeforge.lock")).unwrap();
    assert!(lock.contains(&format!("sha512 = \"{s512}\"")), "{lock}");
    assert!(
        lock.contains(&format!("sha256 = \"{}\"", sha256(&base))),
        "{lock}"
    );
    let o = nodeforge(
        dir,
        &[
            "build",
            "b",
            "-c",
            "cluster.toml",
            "--cache-dir",
            "cache",
            "--locked",
            "--offline",
        ],
    );
    assert!(o.status.success(), "locked offline build: {}", stderr(&o));
    // A wrong sha512 is refused naming the key's kind.
    cluster_pinned(
        dir,
        "x86_64",
        &base,
        "debian-generic",
        "sha512",
        &"0".repeat(128),
    );
    let o = nodeforge(
        dir,
        &["build", "b", "-c", "cluster.toml", "--cache-dir", "cache2"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sha512 mismatch"), "{}", stderr(&o));
}
