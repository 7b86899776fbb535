//! flash, flash --node, inspect and devices on real block devices: loop devices (as root) over
//! sparse files standing in for USB sticks, checked with cmp, sha256sum, partx and mcopy.
//!
//! Needs root and loop devices (`losetup -f --show -P`); when they cannot be attached the tests
//! FAIL with a message saying so. `NODEFORGE_SKIP_DEVICE_TESTS=1` skips them (README "Tests").
//! Every loop device attached here is detached (and its mounts unmounted) by a guard, also when
//! a test fails.

mod common;

use common::{stderr, Lab, BIN};
use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SKIP_ENV: &str = "NODEFORGE_SKIP_DEVICE_TESTS";

fn skip() -> bool {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("{SKIP_ENV}=1: skipping the block-device tests");
        return true;
    }
    false
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(o.status.success(), "{cmd} {args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn nodeforge(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// A loop device attached over a file; detached (after unmounting what was mounted through
/// it) when dropped, panics included.
struct Loop {
    dev: String,
    mounts: RefCell<Vec<PathBuf>>,
}

impl Loop {
    fn attach(backing: &Path) -> Loop {
        let o = run(
            "losetup",
            &["-f", "--show", "-P", backing.to_str().unwrap()],
        );
        assert!(
            o.status.success(),
            "cannot attach a loop device over {} (these tests need root and loop devices; \
             set {SKIP_ENV}=1 to skip them): {}",
            backing.display(),
            stderr(&o)
        );
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Loop {
            dev,
            mounts: RefCell::new(Vec::new()),
        }
    }

    /// Attach a new sparse file of `size` bytes.
    fn sparse(dir: &Path, name: &str, size: u64) -> Loop {
        let p = dir.join(name);
        fs::File::create(&p).unwrap().set_len(size).unwrap();
        Loop::attach(&p)
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }

    /// Make the kernel's partitions match the table on the device (`partx -u` reads the table
    /// itself, so it works on kernels without partition parsers too).
    fn rescan(&self) {
        ok("partx", &["-u", &self.dev]);
    }

    fn mount(&self, part: &str, at: &Path) {
        fs::create_dir_all(at).unwrap();
        ok("mount", &[part, at.to_str().unwrap()]);
        self.mounts.borrow_mut().push(at.to_path_buf());
    }

    fn sha256(&self) -> String {
        ok("sha256sum", &[&self.dev])
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for m in self.mounts.borrow().iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A raspios-shaped 120 MiB image (tests/fixtures/mkbase.sh) as .img, .img.xz and .img.gz with
/// one .bmap, plus copies of the compressed forms without a bmap; made once per run under
/// target/.
struct Images {
    dir: PathBuf,
}

impl Images {
    fn get() -> &'static Images {
        static I: OnceLock<Images> = OnceLock::new();
        I.get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flash_device");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("nobmap")).unwrap();
            let mk = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkbase.sh");
            let img = dir.join("pi.img");
            ok("bash", &[mk, "raspios", img.to_str().unwrap()]);
            ok("xz", &["-k", "-T1", "-0", img.to_str().unwrap()]);
            ok("gzip", &["-k", "-n", "-1", img.to_str().unwrap()]);
            let o = nodeforge(&[
                "flash",
                img.to_str().unwrap(),
                "--emit-bmap",
                dir.join("pi.img.bmap").to_str().unwrap(),
            ]);
            assert!(o.status.success(), "emit bmap: {}", stderr(&o));
            for f in ["pi.img.xz", "pi.img.gz"] {
                fs::copy(dir.join(f), dir.join("nobmap").join(f)).unwrap();
            }
            Images { dir }
        })
    }
    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_str().unwrap().to_string()
    }
    fn size(&self) -> u64 {
        fs::metadata(self.dir.join("pi.img")).unwrap().len()
    }
}

fn flash(image: &str, dev: &str, extra: &[&str]) -> Output {
    let mut a = vec!["flash", "--yes", "--force", image, dev];
    a.extend_from_slice(extra);
    nodeforge(&a)
}

/// The inspect JSON of `path` without the fields that name the path and its size.
fn inspect(path: &str) -> serde_json::Value {
    let o = nodeforge(&["inspect", "--json", path]);
    assert!(o.status.success(), "inspect {path}: {}", stderr(&o));
    let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v.as_object_mut().unwrap();
    m.remove("image");
    m.remove("size");
    v
}

#[test]
fn every_image_form_is_written_byte_for_byte_to_a_loop_device() {
    if skip() {
        return;
    }
    let im = Images::get();
    let tmp = tempfile::tempdir().unwrap();
    let size = im.size();
    for (i, form) in [
        "pi.img",
        "pi.img.xz",
        "pi.img.gz",
        "nobmap/pi.img.xz",
        "nobmap/pi.img.gz",
    ]
    .iter()
    .enumerate()
    {
        let lo = Loop::sparse(tmp.path(), &format!("stick{i}"), size + (64 << 20));
        let o = flash(&im.path(form), &lo.dev, &[]);
        assert!(o.status.success(), "flash {form}: {}", stderr(&o));
        assert!(stderr(&o).contains("verify: ok"), "{form}: {}", stderr(&o));
        let c = run(
            "cmp",
            &["-n", &size.to_string(), &im.path("pi.img"), &lo.dev],
        );
        assert!(
            c.status.success(),
            "{form}: the device differs from the image: {}",
            String::from_utf8_lossy(&c.stdout)
        );
        if i == 0 {
            // inspect reads the device like the image file.
            let dev = inspect(&lo.dev);
            assert_eq!(dev, inspect(&im.path("pi.img")), "inspect device vs image");
            assert_eq!(dev["family"], "Raspios");
            // devices --all lists it with its real size and transport.
            let o = nodeforge(&["devices", "--all", "--json"]);
            assert!(o.status.success(), "{}", stderr(&o));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let me = v
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["path"] == lo.dev.as_str())
                .unwrap_or_else(|| panic!("{} not in devices --all: {v}", lo.dev));
            assert_eq!(me["size"], size + (64 << 20));
            assert_eq!(me["transport"], "loop");
            assert_eq!(me["mounted"], false);
        }
    }
}

#[test]
fn a_device_smaller_than_the_image_is_refused_for_every_form_and_left_unchanged() {
    if skip() {
        return;
    }
    let im = Images::get();
    let tmp = tempfile::tempdir().unwrap();
    let back = tmp.path().join("small");
    // 64 MiB of non-zero bytes, so any write would show in the sha256.
    let f = fs::File::create(&back).unwrap();
    f.write_all_at(&vec![0x5au8; 64 << 20], 0).unwrap();
    drop(f);
    let lo = Loop::attach(&back);
    let before = lo.sha256();
    for form in [
        "pi.img",
        "pi.img.xz",
        "pi.img.gz",
        "nobmap/pi.img.xz",
        "nobmap/pi.img.gz",
    ] {
        let o = flash(&im.path(form), &lo.dev, &[]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{form} was written to a 64 MiB device");
        assert!(e.contains("smaller than the image"), "{form}: {e}");
        assert!(!e.contains("wrote"), "{form}: {e}");
        assert_eq!(lo.sha256(), before, "{form}: the device changed");
    }
}

#[test]
fn mounted_busy_and_partition_targets_are_refused_and_left_unchanged() {
    if skip() {
        return;
    }
    let im = Images::get();
    let tmp = tempfile::tempdir().unwrap();
    let lo = Loop::sparse(tmp.path(), "disk", 256 << 20);
    let mut sf = Command::new("sfdisk")
        .args(["-q", &lo.dev])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=200MiB, type=83\n")
        .unwrap();
    assert!(sf.wait().unwrap().success());
    lo.rescan();
    // Inode tables initialised now, not by a kernel thread after mounting.
    ok(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            &lo.part(1),
        ],
    );
    let before = lo.sha256();

    // A partition node as TARGET: refused, naming the whole disk.
    let o = flash(&im.path("pi.img"), &lo.part(1), &[]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains(&format!("give the whole disk {}", lo.dev)),
        "{e}"
    );

    // Something else holding the device exclusively (as a mount or another writer would):
    // flash's O_EXCL open fails before any write.
    {
        let _held = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&lo.dev)
            .expect("open the loop device with O_EXCL");
        let o = flash(&im.path("pi.img"), &lo.dev, &[]);
        let e = stderr(&o);
        assert!(!o.status.success(), "written while held exclusively");
        assert!(e.contains("exclusively"), "{e}");
    }
    assert_eq!(lo.sha256(), before, "changed while held exclusively");

    // A mounted partition: refused by the mount table rule, naming the mount point.
    let mnt = tmp.path().join("mnt");
    lo.mount(&lo.part(1), &mnt);
    ok("sync", &[]);
    let mounted = lo.sha256();
    let o = flash(&im.path("pi.img"), &lo.dev, &[]);
    let e = stderr(&o);
    assert!(
        !o.status.success(),
        "a device with a mounted partition was written"
    );
    assert!(e.contains(mnt.to_str().unwrap()), "{e}");
    let o = nodeforge(&["devices", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let me = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == lo.dev.as_str())
        .unwrap_or_else(|| panic!("{} not listed: {v}", lo.dev));
    assert_eq!(me["mounted_partitions"][0]["device"], lo.part(1).as_str());
    assert_eq!(
        me["mounted_partitions"][0]["mountpoint"],
        mnt.to_str().unwrap()
    );
    assert_eq!(lo.sha256(), mounted, "the mounted device changed");
}

#[test]
fn read_back_verify_reads_the_device_not_the_page_cache() {
    if skip() {
        return;
    }
    let im = Images::get();
    let tmp = tempfile::tempdir().unwrap();
    // The test seam flips one byte in the loop device's backing file after it was written and
    // synced: the device's page cache still holds what was written, the medium does not.
    for form in ["pi.img", "pi.img.xz", "nobmap/pi.img.gz"] {
        let lo = Loop::sparse(tmp.path(), "stick", 256 << 20);
        let o = Command::new(BIN)
            .args(["flash", "--yes", "--force", &im.path(form), &lo.dev])
            .env(
                "NODEFORGE_TEST_CORRUPT_AFTER_WRITE",
                ((8 << 20) + 4100).to_string(),
            )
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(
            e.contains("flipped the byte"),
            "{form}: seam not reached: {e}"
        );
        assert!(
            !o.status.success(),
            "{form}: verify passed over a changed byte: {e}"
        );
        assert!(e.contains("verify failed"), "{form}: {e}");
    }
}

#[test]
fn flash_node_on_a_loop_device_writes_the_seed_of_nodeforge_build() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    let o = lab.build(&["cp1"]);
    assert!(o.status.success(), "build cp1: {}", stderr(&o));
    let o = lab.build_to(
        "gen",
        &["--generic", "--role", "server", "--compress", "xz"],
    );
    assert!(o.status.success(), "build --generic: {}", stderr(&o));
    let generic = lab.path("gen/lab-server-rpi4/lab-server-rpi4.img.xz");
    assert!(generic.is_file(), "{}", generic.display());
    let per_node = lab.path("out/cp1/cp1.img");
    let size = fs::metadata(&per_node).unwrap().len();
    // Where the seed FAT (partition 1) starts, by sfdisk.
    let table: serde_json::Value =
        serde_json::from_str(&ok("sfdisk", &["-J", per_node.to_str().unwrap()])).unwrap();
    let p1 = table["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
        * 512;
    let lo = Loop::sparse(&lab.dir, "stick", size + (32 << 20));
    let before = lo.sha256();
    let g = generic.to_str().unwrap();
    let node = |name: &str, extra: &[(&str, String)]| -> Output {
        let mut c = Command::new(BIN);
        c.current_dir(&lab.dir)
            .args([
                "flash",
                "--yes",
                "--force",
                "--node",
                name,
                "-c",
                "cluster.toml",
                g,
            ])
            .arg(&lo.dev)
            .env_remove("SOURCE_DATE_EPOCH");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    // Checked before the first byte: unknown node, a node of another board, missing secrets.
    for (name, want) in [("nope", "nope"), ("w1", "x86_64")] {
        let o = node(name, &[]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{name}: {e}");
        assert!(e.contains(want), "{name}: {e}");
        assert!(!e.contains("wrote"), "{name} wrote before failing: {e}");
        assert_eq!(lo.sha256(), before, "{name}: the device changed");
    }
    let secrets = lab.path("nodeforge-secrets.toml");
    let full = fs::read_to_string(&secrets).unwrap();
    let cut: String = full
        .lines()
        .filter(|l| !l.trim_start().starts_with("cp1"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(cut, full, "no cp1 line in the secrets file");
    fs::write(&secrets, &cut).unwrap();
    let o = node("cp1", &[]);
    fs::write(&secrets, &full).unwrap();
    let e = stderr(&o);
    assert!(!o.status.success() && !e.contains("wrote"), "{e}");
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(lo.sha256(), before, "missing secret: the device changed");

    // Written twice (idempotent), the second time over an already seeded stick.
    for round in 0..2 {
        let o = node("cp1", &[]);
        let e = stderr(&o);
        assert!(o.status.success(), "round {round}: {e}");
        assert!(e.contains("seeded"), "{e}");
        lo.rescan();
        // The seed FAT read by mtools from the device's partition node equals the per-node
        // build's, file for file.
        let dev_files = tmp_copy(&lab.dir, &format!("dev{round}"), &lo.part(1));
        let img_files = tmp_copy(
            &lab.dir,
            &format!("img{round}"),
            &format!("{}@@{p1}", per_node.display()),
        );
        let d = run("diff", &["-r", &dev_files, &img_files]);
        assert!(
            d.status.success(),
            "seed FAT on {} differs from nodeforge build: {}",
            lo.part(1),
            String::from_utf8_lossy(&d.stdout)
        );
        for f in ["user-data", "meta-data", "network-config"] {
            assert!(Path::new(&dev_files).join(f).is_file(), "{f} missing");
        }
    }

    // A seed write that does not reach the medium fails the run and says what to do.
    let o = node(
        "cp1",
        &[(
            "NODEFORGE_TEST_CORRUPT_AFTER_WRITE",
            format!("seed:{}", p1 + 100),
        )],
    );
    let e = stderr(&o);
    assert!(e.contains("flipped the byte"), "seed seam not reached: {e}");
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("verification failed"), "{e}");
    assert!(e.contains("Re-run the same command"), "{e}");
    // Re-running finishes the stick.
    let o = node("cp1", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(lo);

    // The x86 agent: a GPT image whose seed is on a CIDATA partition, from a .img.gz without
    // a bmap (its size and partitions are learned from the stream before writing).
    let o = lab.build(&["w1"]);
    assert!(o.status.success(), "build w1: {}", stderr(&o));
    let o = lab.build_to("gen", &["--generic", "--role", "agent", "--compress", "gz"]);
    assert!(o.status.success(), "build --generic agent: {}", stderr(&o));
    let gz = lab.path("alone/agent.img.gz");
    fs::create_dir_all(gz.parent().unwrap()).unwrap();
    fs::copy(
        lab.path("gen/lab-agent-x86_64/lab-agent-x86_64.img.gz"),
        &gz,
    )
    .unwrap();
    let per_node = lab.path("out/w1/w1.img");
    let size = fs::metadata(&per_node).unwrap().len();
    let lo = Loop::sparse(&lab.dir, "stick-x86", size + (32 << 20));
    let o = Command::new(BIN)
        .current_dir(&lab.dir)
        .args([
            "flash",
            "--yes",
            "--force",
            "--node",
            "w1",
            "-c",
            "cluster.toml",
        ])
        .arg(&gz)
        .arg(&lo.dev)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(o.status.success(), "flash --node w1: {}", stderr(&o));
    lo.rescan();
    let table: serde_json::Value =
        serde_json::from_str(&ok("sfdisk", &["-J", per_node.to_str().unwrap()])).unwrap();
    let cidata = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| {
            let off = p["start"].as_u64().unwrap() * 512;
            let o = Command::new("mdir")
                .args(["-i", &format!("{}@@{off}", per_node.display()), "::"])
                .env("MTOOLS_SKIP_CHECK", "1")
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).contains("CIDATA")
        })
        .expect("a CIDATA partition in w1.img");
    let p = &table["partitiontable"]["partitions"][cidata];
    let num: u32 = p["node"]
        .as_str()
        .unwrap()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let dev_files = tmp_copy(&lab.dir, "dev-w1", &lo.part(num));
    let img_files = tmp_copy(
        &lab.dir,
        "img-w1",
        &format!(
            "{}@@{}",
            per_node.display(),
            p["start"].as_u64().unwrap() * 512
        ),
    );
    let d = run("diff", &["-r", &dev_files, &img_files]);
    assert!(
        d.status.success(),
        "w1's CIDATA on {} differs from nodeforge build: {}",
        lo.part(num),
        String::from_utf8_lossy(&d.stdout)
    );
    assert!(Path::new(&dev_files).join("user-data").is_file());
}

/// Copy every file of the FAT at `src` (an mtools image spec) into `base/name`; returns the dir.
fn tmp_copy(base: &Path, name: &str, src: &str) -> String {
    let d = base.join(name);
    fs::create_dir_all(&d).unwrap();
    let o = Command::new("mcopy")
        .args(["-s", "-n", "-i", src, "::*"])
        .arg(&d)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "mcopy -i {src}: {}", stderr(&o));
    d.to_str().unwrap().to_string()
}
