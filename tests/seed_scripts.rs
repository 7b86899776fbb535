//! The first-boot helper scripts, run for real in a temporary root (`NODEFORGE_ROOT`):
//! the data disk is formatted only when empty, Pi boot settings persist idempotently, and the
//! install step copies the bundle and calls install.sh with the right environment.

use nodeforge::seed::SCRIPTS;
use std::path::Path;
use std::process::{Command, Output};

fn script(dir: &Path, name: &str) -> std::path::PathBuf {
    let text = SCRIPTS.iter().find(|(n, _)| *n == name).unwrap().1;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(root: &Path, script: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .arg(script)
        .args(args)
        .env("NODEFORGE_ROOT", root)
        .output()
        .expect("run sh")
}

fn need(tool: &str) {
    let ok = Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x /sbin/{tool} || test -x /usr/sbin/{tool}"),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{tool} is missing: install e2fsprogs, util-linux, dosfstools and fdisk (tests/setup-host.sh)");
}

fn blkid(dev: &Path, tag: &str) -> String {
    let o = Command::new("blkid")
        .args(["-p", "-s", tag, "-o", "value"])
        .arg(dev)
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn data_disk_formats_only_when_empty() {
    for t in ["blkid", "mkfs.ext4", "mkfs.vfat", "sfdisk"] {
        need(t);
    }
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "data-disk.sh");
    let root = d.path().join("root");
    let fstab = root.join("etc/fstab");

    // empty disk: formatted, mounted by UUID
    let disk = d.path().join("empty.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let o = run(&root, &s, &[disk.to_str().unwrap(), "/var/lib/longhorn"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let uuid = blkid(&disk, "UUID");
    assert_eq!(blkid(&disk, "TYPE"), "ext4");
    let line = format!("UUID={uuid} /var/lib/longhorn ext4 defaults,nofail 0 2\n");
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), line);
    assert!(root.join("var/lib/longhorn").is_dir());

    // second run (a rebuilt node): same filesystem, no duplicate fstab line
    let o = run(&root, &s, &[disk.to_str().unwrap(), "/var/lib/longhorn"]);
    assert!(o.status.success());
    assert_eq!(blkid(&disk, "UUID"), uuid, "the disk was reformatted");
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), line);

    // a disk with someone else's filesystem is kept
    let vfat = d.path().join("vfat.img");
    std::fs::File::create(&vfat)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    assert!(Command::new("mkfs.vfat")
        .arg(&vfat)
        .output()
        .unwrap()
        .status
        .success());
    let before = std::fs::read(&vfat).unwrap();
    let o = run(&root, &s, &[vfat.to_str().unwrap(), "/data"]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&vfat).unwrap(), before);
    assert!(std::fs::read_to_string(&fstab)
        .unwrap()
        .contains(" /data vfat "));

    // a disk with a partition table is never touched and the step fails
    let pt = d.path().join("pt.img");
    std::fs::File::create(&pt)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut c = Command::new("sfdisk")
        .arg("-q")
        .arg(&pt)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let before = std::fs::read(&pt).unwrap();
    let o = run(&root, &s, &[pt.to_str().unwrap(), "/other"]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&pt).unwrap(), before);

    // a missing device fails without formatting anything
    let o = run(&root, &s, &["/nonexistent/dev", "/x"]);
    assert!(!o.status.success());
}

#[test]
fn pi_boot_persist_is_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "pi-boot-persist.sh");
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("etc/default")).unwrap();
    std::fs::write(
        root.join("etc/default/raspi-extra-cmdline"),
        "quiet usb-storage.quirks=0bda:9210:u\n",
    )
    .unwrap();
    let want = "cgroup_memory=1 cgroup_enable=memory usb-storage.quirks=152d:0578:u";
    for _ in 0..2 {
        let o = run(&root, &s, &[want, "enable_uart=1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/default/raspi-extra-cmdline")).unwrap(),
            "quiet cgroup_memory=1 cgroup_enable=memory usb-storage.quirks=152d:0578:u\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/default/raspi-firmware-custom")).unwrap(),
            "enable_uart=1\n"
        );
    }
}

#[test]
fn install_step_copies_bundle_and_runs_installer() {
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "install-k3s.sh");
    let root = d.path().join("root");
    let seed = d.path().join("seedfat");
    let b = seed.join("nodeforge");
    std::fs::create_dir_all(b.join("images")).unwrap();
    std::fs::write(b.join("k3s"), b"fake k3s binary").unwrap();
    std::fs::write(b.join("images/k3s-airgap-images-arm64.tar.zst"), b"images").unwrap();
    let log = d.path().join("install.log");
    std::fs::write(
        b.join("install.sh"),
        format!(
            "echo \"skip=$INSTALL_K3S_SKIP_DOWNLOAD exec=$INSTALL_K3S_EXEC\" > {}\n",
            log.display()
        ),
    )
    .unwrap();
    let o = run(&root, &s, &["agent", seed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "skip=true exec=agent\n"
    );
    let k3s = root.join("usr/local/bin/k3s");
    assert_eq!(std::fs::read(&k3s).unwrap(), b"fake k3s binary");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&k3s).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(root
        .join("var/lib/rancher/k3s/agent/images/k3s-airgap-images-arm64.tar.zst")
        .exists());

    // no bundle: a clear failure
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&root, &s, &["server", empty.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no k3s bundle"));
}

#[test]
fn scripts_parse_with_sh_n() {
    let d = tempfile::tempdir().unwrap();
    for (name, _) in SCRIPTS {
        let p = script(d.path(), name);
        let o = Command::new("sh").arg("-n").arg(&p).output().unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
