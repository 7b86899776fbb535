//! Device safety against a fake sysfs / mountinfo / dev tree (`--sysroot`), end to end.

use nodeforge::flash::devices::{check_device, list_disks, read_device};
use std::fs;
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn w(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// Add a disk: `devpath` under sys/devices, partitions as (name, majmin).
fn disk(
    root: &Path,
    devpath: &str,
    name: &str,
    majmin: &str,
    sectors: u64,
    removable: bool,
    parts: &[(&str, &str)],
) {
    let d = root
        .join("sys/devices")
        .join(devpath)
        .join("block")
        .join(name);
    w(&d.join("dev"), &format!("{majmin}\n"));
    w(&d.join("size"), &format!("{sectors}\n"));
    w(&d.join("removable"), if removable { "1\n" } else { "0\n" });
    w(&d.join("ro"), "0\n");
    let scsi = root.join("sys/devices").join(devpath);
    w(&scsi.join("model"), &format!("Model {name}   \n"));
    w(&scsi.join("vendor"), "Acme    \n");
    symlink(&scsi, d.join("device")).unwrap();
    fs::create_dir_all(d.join("holders")).unwrap();
    fs::create_dir_all(root.join("sys/class/block")).unwrap();
    symlink(&d, root.join("sys/class/block").join(name)).unwrap();
    fs::create_dir_all(root.join("sys/dev/block")).unwrap();
    symlink(&d, root.join("sys/dev/block").join(majmin)).unwrap();
    for (p, mm) in parts {
        let pd = d.join(p);
        w(&pd.join("dev"), &format!("{mm}\n"));
        w(&pd.join("partition"), "1\n");
        w(&pd.join("size"), "2048\n");
        symlink(&pd, root.join("sys/class/block").join(p)).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        fs::write(root.join("dev").join(p), [0xEEu8; 16]).unwrap();
    }
    // The fake device node is a regular file full of 0xEE.
    w(&root.join("dev").join(name), "");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(root.join("dev").join(name))
        .unwrap();
    f.set_len(sectors * 512).unwrap();
    f.write_all_at(&vec![0xEEu8; 1 << 20], 0).unwrap();
}

fn mountinfo(root: &Path, extra: &str) {
    w(
        &root.join("proc/self/mountinfo"),
        &format!(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
             23 22 0:21 / /proc rw shared:12 - proc proc rw\n{extra}"
        ),
    );
}

/// sda: internal SATA holding /, sdb: USB stick (16 MiB) with sdb1, sdc: USB stick too small,
/// nvme0n1: internal NVMe, not mounted.
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    disk(
        r,
        "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0",
        "sda",
        "8:0",
        1 << 24,
        false,
        &[("sda1", "8:1")],
    );
    let usb = "pci0000:00/0000:00:14.0/usb2/2-1";
    w(&r.join("sys/devices").join(usb).join("idVendor"), "0781\n");
    w(
        &r.join("sys/devices").join(usb).join("serial"),
        "4C530001\n",
    );
    disk(
        r,
        &format!("{usb}/2-1:1.0/host6/target6:0:0/6:0:0:0"),
        "sdb",
        "8:16",
        32768,
        true,
        &[("sdb1", "8:17")],
    );
    disk(
        r,
        "pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0",
        "sdc",
        "8:32",
        64,
        true,
        &[],
    );
    disk(
        r,
        "pci0000:00/0000:00:1d.0/nvme/nvme0",
        "nvme0n1",
        "259:0",
        32768,
        false,
        &[],
    );
    mountinfo(r, "");
    t
}

fn image(dir: &Path) -> PathBuf {
    let img = dir.join("node.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(4 << 20).unwrap();
    f.write_all_at(&[7u8; 8192], 0).unwrap();
    f.write_all_at(&[9u8; 4096], 3 << 20).unwrap();
    img
}

fn flash(root: &Path, img: &Path, dev: &str, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .arg("flash")
        .arg("--sysroot")
        .arg(root)
        .args(extra)
        .arg(img)
        .arg(dev)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn untouched(root: &Path, name: &str) -> bool {
    let mut b = [0u8; 16];
    fs::File::open(root.join("dev").join(name))
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b == [0xEE; 16]
}

#[test]
fn reads_devices_from_fake_sysfs() {
    let t = tree();
    let sdb = read_device(t.path(), "sdb").unwrap();
    assert!(sdb.usb && sdb.removable && !sdb.holds_root && sdb.mounted.is_empty());
    assert_eq!(sdb.size, 32768 * 512);
    assert_eq!(
        (sdb.model.as_str(), sdb.vendor.as_str(), sdb.serial.as_str()),
        ("Model sdb", "Acme", "4C530001")
    );
    let sda = read_device(t.path(), "sda").unwrap();
    assert!(sda.holds_root && !sda.usb && !sda.removable);
    assert_eq!(sda.mounted, vec!["/".to_string()]);
    assert!(check_device(&sda, Some(1), true).is_err());
    let sdb1 = read_device(t.path(), "sdb1").unwrap();
    assert!(sdb1.is_partition);
    assert_eq!(sdb1.whole_disk.as_deref(), Some(Path::new("/dev/sdb")));
    let e = check_device(&sdb1, None, true).unwrap_err().to_string();
    assert!(e.contains("give the whole disk /dev/sdb"), "{e}");
    let tran = |n: &str| read_device(t.path(), n).unwrap().transport;
    assert_eq!(
        [tran("sda"), tran("sdb"), tran("nvme0n1")],
        ["sata", "usb", "nvme"]
    );
    assert!(read_device(t.path(), "nope").is_err());
    // btrfs shows an anonymous 0:N device: the mount source still names the disk.
    mountinfo(
        t.path(),
        "41 22 0:33 /@home /home rw shared:5 - btrfs /dev/nvme0n1 rw\n",
    );
    let nv = read_device(t.path(), "nvme0n1").unwrap();
    assert_eq!(nv.mounted, vec!["/home".to_string()]);
    mountinfo(t.path(), "");
    let listed: Vec<String> = list_disks(t.path(), false)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(listed, vec!["sdb", "sdc"]);
    let all: Vec<String> = list_disks(t.path(), true)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(all, vec!["nvme0n1", "sda", "sdb", "sdc"]);
}

#[test]
fn flashes_a_usb_stick_with_yes() {
    let t = tempfile::tempdir().unwrap();
    let tr = tree();
    let img = image(t.path());
    let (ok, err) = flash(tr.path(), &img, "/dev/sdb", &["--yes"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("Model sdb") && err.contains("4C530001") && err.contains("verify: ok"),
        "{err}"
    );
    let dev = fs::read(tr.path().join("dev/sdb")).unwrap();
    let want = fs::read(&img).unwrap();
    assert_eq!(&dev[..8192], &want[..8192]);
    assert_eq!(
        &dev[3 << 20..(3 << 20) + 4096],
        &want[3 << 20..(3 << 20) + 4096]
    );
    // Only mapped blocks are written: unmapped bytes keep the old content.
    assert_eq!(dev[8192], 0xEE);
}

#[test]
fn refusals() {
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path());
    let tr = tree();
    let r = tr.path();
    let cases: Vec<(&str, &[&str], &str)> = vec![
        ("/dev/sdb", &[], "no terminal"),
        ("/dev/sda", &["--yes", "--force"], "root filesystem"),
        ("/dev/sdc", &["--yes"], "smaller than the image"),
        ("/dev/nvme0n1", &["--yes"], "--force"),
        ("/dev/sdb1", &["--yes"], "partition"),
        ("/dev/sdz", &["--yes"], "not a block device"),
    ];
    for (dev, extra, want) in cases {
        let (ok, err) = flash(r, &img, dev, extra);
        assert!(!ok && err.contains(want), "{dev}: {err}");
        if let Some(n) = dev
            .strip_prefix("/dev/")
            .filter(|n| r.join("dev").join(n).exists())
        {
            assert!(untouched(r, n), "{dev} was written");
        }
    }
    // An .xz image without a bmap: its size comes from the xz index, refused before writing.
    let st = Command::new("xz")
        .args(["-k", "-f"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, err) = flash(r, &t.path().join("node.img.xz"), "/dev/sdc", &["--yes"]);
    assert!(!ok && err.contains("smaller than the image"), "{err}");
    assert!(untouched(r, "sdc"));
    // A mounted partition of the stick.
    mountinfo(r, "40 22 8:17 / /media/user/STICK rw - vfat /dev/sdb1 rw\n");
    let (ok, err) = flash(r, &img, "/dev/sdb", &["--yes", "--force"]);
    assert!(!ok && err.contains("/media/user/STICK"), "{err}");
    assert!(untouched(r, "sdb"));
    // --force allows the internal, unmounted NVMe.
    let (ok, err) = flash(r, &img, "/dev/nvme0n1", &["--yes", "--force"]);
    assert!(ok, "{err}");
}

#[test]
fn devices_json() {
    let tr = tree();
    mountinfo(
        tr.path(),
        "40 22 8:17 / /media/user/STICK rw - vfat /dev/sdb1 rw\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .args(["devices", "--json", "--sysroot"])
        .arg(tr.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["path"], "/dev/sdb");
    assert_eq!(a[0]["mounted"], true);
    assert_eq!(a[0]["transport"], "usb");
    assert_eq!(a[0]["mounted_partitions"][0]["device"], "/dev/sdb1");
    assert_eq!(
        a[0]["mounted_partitions"][0]["mountpoint"],
        "/media/user/STICK"
    );
    assert_eq!(a[0]["size"], 32768 * 512);
    assert_eq!(a[1]["mounted"], false);
}

#[test]
fn asks_on_a_terminal() {
    // `script` (util-linux) gives the child a pseudo-terminal fed from our stdin.
    if Command::new("script").arg("--version").output().is_err() {
        panic!("script (util-linux) is required for this test");
    }
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path());
    let tr = tree();
    let r = tr.path();
    for (answer, ok_expected) in [("no", false), ("yes", true)] {
        let cmd = format!(
            "{} flash --sysroot {} {} /dev/sdb",
            env!("CARGO_BIN_EXE_nodeforge"),
            r.display(),
            img.display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{answer}\n").as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.contains("Type yes to write /dev/sdb"), "{text}");
        assert!(
            text.contains("Model sdb") && text.contains("16.0 MiB"),
            "{text}"
        );
        assert_eq!(o.status.success(), ok_expected, "{answer}: {text}");
        assert_eq!(untouched(r, "sdb"), !ok_expected, "{answer}");
        if !ok_expected {
            assert!(text.contains("not confirmed"), "{text}");
        }
    }
}
