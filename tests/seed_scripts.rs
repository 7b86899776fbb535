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

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A stub command on `PATH` (a shell script body).
fn stub(bin: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).unwrap();
    let p = bin.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn scrub_replaces_user_data_keeps_meta_data_and_needs_the_secrets_on_root() {
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "scrub-seed.sh");
    let root = d.path().join("root");
    let seed = d.path().join("seedfat");
    std::fs::create_dir_all(&seed).unwrap();
    let full =
        "#cloud-config\nwrite_files:\n- path: /etc/rancher/node/password\n  content: SECRET-PW\n";
    std::fs::write(seed.join("user-data"), full).unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: nodeforge-0123\n").unwrap();
    let scrubbed = d.path().join("user-data.scrubbed");
    std::fs::write(&scrubbed, "#cloud-config\nhostname: cp1\n").unwrap();
    let args = [seed.to_str().unwrap(), scrubbed.to_str().unwrap()];

    // The secrets are not on root yet: the seed keeps them (nothing could bring them back).
    let o = run(&root, &s, &args);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("keeps its secrets"));
    assert_eq!(
        std::fs::read_to_string(seed.join("user-data")).unwrap(),
        full
    );

    for (f, c) in [
        ("etc/rancher/k3s/config.yaml", "token: SECRET-TOKEN\n"),
        ("etc/rancher/node/password", "SECRET-PW"),
    ] {
        std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
        std::fs::write(root.join(f), c).unwrap();
    }
    for _ in 0..2 {
        let o = run(&root, &s, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            std::fs::read(seed.join("user-data")).unwrap(),
            std::fs::read(&scrubbed).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(seed.join("meta-data")).unwrap(),
            "instance-id: nodeforge-0123\n",
            "the instance-id must not change"
        );
        let mut names: Vec<String> = std::fs::read_dir(&seed)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["meta-data", "user-data"]);
    }
}

#[test]
fn time_wait_sets_the_floor_and_bounds_the_first_wait() {
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "time-wait.sh");
    let root = d.path().join("root");
    let bin = d.path().join("bin");
    let log = d.path().join("date.log");
    // `date`: a clock at 1000 s; `date -s` is recorded, never applied to the host.
    stub(
        &bin,
        "date",
        &format!(
            "case \"$*\" in *-s*) echo \"$*\" >>{};; *) echo ${{FAKE_NOW:-1000}};; esac",
            log.display()
        ),
    );
    // The family's waiter finds no NTP server: it would wait forever.
    let waiter = root.join("lib/systemd/systemd-time-wait-sync");
    stub(
        waiter.parent().unwrap(),
        "systemd-time-wait-sync",
        "sleep 600",
    );
    let state = root.join("var/lib/nodeforge/time-sync");
    let go_at = |epoch: &str, now: &str| {
        let t = std::time::Instant::now();
        let o = Command::new("sh")
            .arg(&s)
            .args([epoch, "2"])
            .env("FAKE_NOW", now)
            .env("NODEFORGE_ROOT", &root)
            .env("PATH", path_with(&bin))
            .output()
            .unwrap();
        (o, t.elapsed())
    };
    let go = |epoch: &str| go_at(epoch, "1000");
    let (o, took) = go("5000");
    assert!(o.status.success(), "k3s must start anyway");
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("WARNING: the clock is not synchronised"),
        "{err}"
    );
    assert!(err.contains("earlier than the image's build time"), "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "-u -s @5000\n");
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .starts_with("not synchronised"));
    // Later starts do not wait again; a clock past the floor is left alone.
    std::fs::remove_file(&log).unwrap();
    let (o, took) = go("500");
    assert!(o.status.success());
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    assert!(
        !log.exists(),
        "the clock was set although it is past the floor"
    );

    // A clock set from a battery-backed RTC is trusted without waiting, unless it was behind
    // the build time (a flat battery): then the wait happens as without an RTC.
    let rtc = root.join("sys/class/rtc/rtc0");
    std::fs::create_dir_all(&rtc).unwrap();
    std::fs::write(rtc.join("hctosys"), "1\n").unwrap();
    std::fs::write(rtc.join("since_epoch"), "1000\n").unwrap();
    std::fs::remove_file(&state).unwrap();
    let (o, took) = go("500");
    assert!(o.status.success());
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("real-time clock"));
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .starts_with("set from the real-time clock"));
    std::fs::remove_file(&state).unwrap();
    let (o, took) = go("5000");
    assert!(o.status.success());
    assert!(took >= std::time::Duration::from_secs(2), "{took:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("WARNING"));
    // The flat battery seen after bootcmd already moved the system clock up to the floor: the
    // system clock is past EPOCH, the RTC itself is not, so the first start still waits.
    std::fs::remove_file(&state).unwrap();
    let (o, took) = go_at("5000", "6000");
    assert!(o.status.success());
    assert!(took >= std::time::Duration::from_secs(2), "{took:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("WARNING"));
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .starts_with("not synchronised"));
    std::fs::remove_dir_all(root.join("sys")).unwrap();

    // A synchronised clock: the first start goes on at once and says so.
    std::fs::remove_file(&state).unwrap();
    stub(waiter.parent().unwrap(), "systemd-time-wait-sync", "exit 0");
    let (o, _) = go("500");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("clock synchronised"));
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .starts_with("synchronised"));
}

/// The gpu-worker's real first-boot sequence (write_files + runcmd of its rendered seed) in a
/// temporary root with the network cut (`unshare -n`): the GPU setup fails and records it, the
/// k3s install still runs (the join is not blocked), no reboot is asked for, and the seed is
/// scrubbed at the end.
#[test]
fn gpu_first_boot_without_network_records_the_failure_and_still_joins() {
    use nodeforge::base::Family;
    let cluster = nodeforge::config::parse_cluster(
        r#"
[cluster]
name = "t"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0000000000000000000 me@laptop"]
[boards.x86_64]
base = "debian-13-generic-amd64"
[[nodes]]
hostname = "cp1"
role = "server"
board = "x86_64"
[[nodes]]
hostname = "gpu1"
role = "gpu-worker"
board = "x86_64"
"#,
        None,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut pw = std::collections::BTreeMap::new();
    pw.insert("cp1".to_string(), "FAKE-NODEPW-cp1".to_string());
    pw.insert("gpu1".to_string(), "FAKE-NODEPW-gpu1".to_string());
    let secrets = nodeforge::secrets::Secrets {
        token: "FAKE-TOKEN-gpu".into(),
        datastore_password: None,
        node_passwords: pw,
        agent_token: None,
        ca: None,
        ..Default::default()
    };
    let seed = nodeforge::seed::render(
        &cluster,
        cluster.node("gpu1").unwrap(),
        Some(&secrets),
        Family::DebianGeneric,
        1_767_225_600,
    )
    .unwrap();
    let ud: serde_json::Value =
        serde_saphyr::from_str(std::str::from_utf8(seed.file("user-data").unwrap()).unwrap())
            .unwrap();

    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let bin = d.path().join("bin");
    let log = d.path().join("calls.log");
    // The seed FAT (a directory here) with the k3s bundle; its install.sh records that it ran.
    let seedfat = d.path().join("seedfat");
    std::fs::create_dir_all(seedfat.join("nodeforge")).unwrap();
    for (n, b) in &seed.files {
        std::fs::write(seedfat.join(n), b).unwrap();
    }
    std::fs::write(seedfat.join("nodeforge/k3s"), b"fake k3s").unwrap();
    std::fs::write(
        seedfat.join("nodeforge/install.sh"),
        format!(
            "echo \"k3s install $INSTALL_K3S_EXEC\" >>{}\n",
            log.display()
        ),
    )
    .unwrap();
    // write_files, as cloud-init writes them, under the temporary root.
    for f in ud["write_files"].as_array().unwrap() {
        let p = root.join(f["path"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f["content"].as_str().unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = u32::from_str_radix(f["permissions"].as_str().unwrap(), 8).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    assert_eq!(mode(&root.join("etc/rancher/k3s/config.yaml")), 0o600);
    assert_eq!(mode(&root.join("etc/rancher/node/password")), 0o600);
    // The machine: Debian with an NVIDIA card on its PCI bus.
    std::fs::create_dir_all(root.join("etc/apt/sources.list.d")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_CODENAME=trixie\n",
    )
    .unwrap();
    let dev = root.join("sys/bus/pci/devices/0000:01:00.0");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("vendor"), "0x10de\n").unwrap();
    std::fs::write(dev.join("class"), "0x030000\n").unwrap();
    // apt works on its own lists under the root (the host's stay untouched), against the real
    // Debian mirror, which the cut network cannot reach.
    let apt = d.path().join("apt");
    std::fs::create_dir_all(apt.join("lists/partial")).unwrap();
    std::fs::create_dir_all(apt.join("cache/archives/partial")).unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list"),
        "deb http://deb.debian.org/debian trixie main\n",
    )
    .unwrap();
    std::fs::write(
        apt.join("apt.conf"),
        format!(
            "Dir::Etc::SourceList \"{r}/etc/apt/sources.list\";\nDir::Etc::SourceParts \"{r}/etc/apt/sources.list.d\";\n\
             Dir::State::Lists \"{a}/lists\";\nDir::Cache \"{a}/cache\";\nDebug::NoLocking \"true\";\n",
            r = root.display(),
            a = apt.display()
        ),
    )
    .unwrap();
    // systemd is not running here: `systemctl start` runs the unit's ExecStart under the root.
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/nodeforge-gpu-setup.service"))
        .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .replace(
            "/usr/local/lib/",
            &format!("{}/usr/local/lib/", root.display()),
        );
    stub(
        &bin,
        "systemctl",
        &format!(
            "echo \"systemctl $*\" >>{l}\nif [ \"$1\" = start ]; then {exec}; rc=$?; echo \"unit exited $rc\" >>{l}; exit $rc; fi",
            l = log.display()
        ),
    );
    stub(
        &bin,
        "update-initramfs",
        &format!("echo \"update-initramfs $*\" >>{}", log.display()),
    );
    // runcmd, as cloud-init runs it: one command after the other, a failure does not stop the rest.
    let mut sh = String::from("#!/bin/sh\n");
    for c in ud["runcmd"].as_array().unwrap() {
        let words: Vec<String> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let w = w.as_str().unwrap();
                let w = if w == "LABEL=CIDATA" {
                    seedfat.display().to_string()
                } else if w.starts_with("/usr/local/lib/nodeforge/") {
                    format!("{}{w}", root.display())
                } else {
                    w.to_string()
                };
                format!("'{}'", w.replace('\'', "'\\''"))
            })
            .collect();
        sh.push_str(&words.join(" "));
        sh.push('\n');
    }
    let runcmd = d.path().join("runcmd");
    std::fs::write(&runcmd, &sh).unwrap();
    let cut = if is_root() {
        vec!["-n"]
    } else {
        vec!["-r", "-n"]
    };
    let t = std::time::Instant::now();
    let o = Command::new("unshare")
        .args(&cut)
        .args(["sh", runcmd.to_str().unwrap()])
        .env("NODEFORGE_ROOT", &root)
        .env("APT_CONFIG", apt.join("apt.conf"))
        .env("PATH", path_with(&bin))
        .output()
        .expect("unshare (util-linux) is needed");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(300),
        "the cut network held the first boot for {:?}\n{out}",
        t.elapsed()
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    // The failure is recorded: state file, unit result, the label the node registers with.
    let state = std::fs::read_to_string(root.join("var/lib/nodeforge/gpu-setup")).unwrap();
    assert!(
        state.starts_with("failed: apt-get update failed"),
        "{state}\n{out}"
    );
    assert!(calls.contains("unit exited 1"), "{calls}");
    let label =
        std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml.d/50-nodeforge-gpu.yaml"))
            .unwrap();
    assert!(
        label.contains("node-label+:\n- nodeforge.io/gpu-setup=failed\n"),
        "{label}"
    );
    // The device plugin's label only comes with a working setup (nvidia.sh), never here.
    assert!(!label.contains("gpu.present"), "{label}");
    let k = std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap();
    assert!(!k.contains("gpu.present"), "config.yaml: {k}");
    assert!(out.contains("FAILED: apt-get update failed"), "{out}");
    // nouveau was blacklisted and the initramfs rebuilt before any download was tried.
    assert!(
        std::fs::read_to_string(root.join("etc/modprobe.d/nodeforge-blacklist-nouveau.conf"))
            .unwrap()
            .contains("blacklist nouveau")
    );
    let pos = |s: &str| {
        calls
            .find(s)
            .unwrap_or_else(|| panic!("{s} not in {calls}\n{out}"))
    };
    assert!(pos("update-initramfs -u") < pos("unit exited"));
    // The join is not blocked: k3s is installed after the failed setup, and the unit retries
    // on later boots.
    assert!(pos("systemctl enable nodeforge-gpu-setup.service") < pos("k3s install agent"));
    assert!(pos("unit exited 1") < pos("k3s install agent"), "{calls}");
    // No reboot: nothing was installed to reboot into.
    assert!(!root.join("run/nodeforge/gpu-reboot").exists());
    // The last step took the secrets off the seed; meta-data (instance-id) is unchanged.
    let after = std::fs::read_to_string(seedfat.join("user-data")).unwrap();
    assert!(!after.contains("FAKE-TOKEN-gpu") && !after.contains("FAKE-NODEPW-gpu1"));
    assert_eq!(
        std::fs::read(seedfat.join("meta-data")).unwrap(),
        seed.file("meta-data").unwrap()
    );
}

#[test]
fn gpu_setup_without_a_gpu_fails_fast_and_says_why() {
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "nvidia.sh");
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("sys/bus/pci/devices/0000:00:02.0")).unwrap();
    std::fs::write(
        root.join("sys/bus/pci/devices/0000:00:02.0/vendor"),
        "0x8086\n",
    )
    .unwrap();
    std::fs::write(
        root.join("sys/bus/pci/devices/0000:00:02.0/class"),
        "0x030000\n",
    )
    .unwrap();
    let o = run(&root, &s, &[]);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/nodeforge/gpu-setup")).unwrap(),
        "failed: no NVIDIA GPU found on the PCI bus\n"
    );
    assert!(std::fs::read_to_string(
        root.join("etc/rancher/k3s/config.yaml.d/50-nodeforge-gpu.yaml")
    )
    .unwrap()
    .contains("nodeforge.io/gpu-setup=failed"));
}

/// nvidia.com/gpu.present=true (what the device plugin selects) only with a working setup: set
/// with nodeforge.io/gpu-setup=ok for registration and on the registered node, taken off again
/// when a later setup fails. Stubs: the driver tools, apt-get (no network), k3s kubectl.
#[test]
fn gpu_present_label_only_after_a_working_setup() {
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "nvidia.sh");
    let root = d.path().join("root");
    let bin = d.path().join("bin");
    let dev = root.join("sys/bus/pci/devices/0000:01:00.0");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("vendor"), "0x10de\n").unwrap();
    std::fs::write(dev.join("class"), "0x030000\n").unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_CODENAME=trixie\n",
    )
    .unwrap();
    let kubeconfig = root.join("var/lib/rancher/k3s/agent/kubelet.kubeconfig");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&kubeconfig, "apiVersion: v1\n").unwrap();
    let calls = d.path().join("calls");
    let smi_ok = d.path().join("smi-ok");
    stub(&bin, "nvidia-container-runtime", "exit 0");
    stub(&bin, "nvidia-smi", &format!("test -e {}", smi_ok.display()));
    stub(&bin, "hostname", "echo gpu1");
    stub(
        &bin,
        "k3s",
        &format!("echo \"k3s $*\" >>{}", calls.display()),
    );
    stub(
        &bin,
        "update-initramfs",
        &format!("echo \"update-initramfs $*\" >>{}", calls.display()),
    );
    stub(&bin, "apt-get", "exit 100");
    stub(&bin, "systemctl", "exit 3");
    let go = || {
        Command::new("sh")
            .arg(&s)
            .env("NODEFORGE_ROOT", &root)
            .env("PATH", path_with(&bin))
            .output()
            .unwrap()
    };
    let dropin = root.join("etc/rancher/k3s/config.yaml.d/50-nodeforge-gpu.yaml");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    // Working driver: ok, and gpu.present with it (registration drop-in and the node).
    std::fs::write(&smi_ok, "").unwrap();
    let o = go();
    assert!(o.status.success(), "{o:?}");
    let y: serde_json::Value = serde_saphyr::from_str(&read(&dropin)).unwrap();
    assert_eq!(
        y["node-label+"],
        serde_json::json!(["nodeforge.io/gpu-setup=ok", "nvidia.com/gpu.present=true"])
    );
    let c = read(&calls);
    assert!(
        c.contains(&format!(
            "k3s kubectl --kubeconfig {} label --overwrite node gpu1 nodeforge.io/gpu-setup=ok nvidia.com/gpu.present=true\n",
            kubeconfig.display()
        )),
        "{c}"
    );

    // The driver stops answering and the reinstall fails (no network): failed, gpu.present off.
    std::fs::remove_file(&smi_ok).unwrap();
    std::fs::remove_file(&calls).unwrap();
    let o = go();
    assert!(!o.status.success());
    assert!(read(&root.join("var/lib/nodeforge/gpu-setup")).starts_with("failed: apt-get update"));
    let y: serde_json::Value = serde_saphyr::from_str(&read(&dropin)).unwrap();
    assert_eq!(
        y["node-label+"],
        serde_json::json!(["nodeforge.io/gpu-setup=failed"])
    );
    let c = read(&calls);
    assert!(
        c.contains(
            "label --overwrite node gpu1 nodeforge.io/gpu-setup=failed nvidia.com/gpu.present-\n"
        ),
        "{c}"
    );

    // Failing again: nothing to change on the node, the drop-in still without gpu.present.
    std::fs::remove_file(&calls).unwrap();
    let o = go();
    assert!(!o.status.success());
    assert!(!read(&calls).contains("kubectl"), "{}", read(&calls));
    assert!(!read(&dropin).contains("gpu.present"));
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The boot proof's guest-side secret scan (tests/k3s-mirror/secret-scan.sh) on this machine, in
/// a private mount namespace whose /etc is a copy holding fake k3s secrets: clean → `ok`; a
/// world-readable copy of the token and a file readable by group nogroup → one FAIL each; a
/// root-only copy is not reported. Needs root (or passwordless sudo) for the namespace.
#[test]
fn secret_scan_finds_what_nobody_can_read() {
    let d = tempfile::tempdir().unwrap();
    let scan = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/k3s-mirror/secret-scan.sh"
    );
    let etc = d.path().join("etc");
    let sh = format!(
        r#"set -e
cp -a /etc {etc}
mkdir -p {etc}/rancher/k3s {etc}/rancher/node
printf 'token: FAKE-TOKEN-scan-7f3a9c\nnode-name: t\n' >{etc}/rancher/k3s/config.yaml
printf 'FAKE-NODEPW-scan-55d1' >{etc}/rancher/node/password
chmod 600 {etc}/rancher/k3s/config.yaml {etc}/rancher/node/password
mount --bind {etc} /etc
mount -t tmpfs tmpfs /run
echo '--- clean'
sh {scan}
echo 'leak FAKE-TOKEN-scan-7f3a9c' >/etc/nf-leak-world; chmod 644 /etc/nf-leak-world
cp /etc/rancher/node/password /run/nf-leak-group; chown root:nogroup /run/nf-leak-group; chmod 640 /run/nf-leak-group
cp /etc/rancher/node/password /etc/nf-root-only; chmod 600 /etc/nf-root-only
echo '--- leaks'
sh {scan}
"#,
        etc = etc.display()
    );
    let root = is_root();
    let mut c = if root {
        Command::new("unshare")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "unshare"]);
        c
    };
    let o = c
        .args(["-m", "--propagation", "private", "sh", "-c", &sh])
        .output()
        .expect("unshare (util-linux)");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "the scan needs root or passwordless sudo for a mount namespace: {}{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (clean, leaks) = out.split_once("--- leaks").unwrap();
    assert!(clean.contains("NF-MARK secret-scan ok"), "{out}");
    assert!(!clean.contains("FAIL"), "{out}");
    let fails: Vec<&str> = leaks.lines().filter(|l| l.contains("FAIL")).collect();
    assert_eq!(
        fails,
        [
            "NF-MARK secret-scan FAIL /etc/nf-leak-world",
            "NF-MARK secret-scan FAIL /run/nf-leak-group"
        ],
        "{out}"
    );
    assert!(
        !out.contains("FAKE-TOKEN") && !out.contains("FAKE-NODEPW"),
        "{out}"
    );
}
