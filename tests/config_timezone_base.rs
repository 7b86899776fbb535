//! `cluster.timezone` against the base's `/usr/share/zoneinfo`, read from its ext4 root by `build`
//! (the base gets zone files written with debugfs from e2fsprogs).

use std::fs;
use std::process::Command;

mod common;

use common::{sha256, stderr, Lab};

/// Decompress the lab's Pi base and write zone files into its root (partition 2) with debugfs.
fn pi_base_with_zones(lab: &Lab, zones: &[&str]) -> std::path::PathBuf {
    let raw = lab.path("rpi-tz.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -dc '{}' > '{}'",
            lab.path("rpi.img.xz").display(),
            raw.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("sfdisk").arg("-J").arg(&raw).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let start = j["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .unwrap();
    let dev = format!("{}?offset={}", raw.display(), start * 512);
    let tz = lab.path("zonefile");
    fs::write(&tz, "TZif2 stand-in\n").unwrap();
    let mut script = String::from("mkdir /usr/share/zoneinfo\n");
    for z in zones {
        if let Some((dir, _)) = z.rsplit_once('/') {
            script.push_str(&format!("mkdir /usr/share/zoneinfo/{dir}\n"));
        }
        script.push_str(&format!("write {} /usr/share/zoneinfo/{z}\n", tz.display()));
    }
    let cmd = lab.path("debugfs.cmd");
    fs::write(&cmd, script).unwrap();
    let out = Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&cmd)
        .arg(&dev)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success(), "debugfs: {}", stderr(&out));
    raw
}

fn cluster(lab: &Lab, base: &std::path::Path, tz: &str) {
    let text = format!(
        r#"[cluster]
name = "lab"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxq me@laptop"]
timezone = "{tz}"
[boards.rpi4]
base = "{}"
sha256 = "{}"
[k3s]
mirror = "file://{}"
[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
"#,
        base.display(),
        sha256(base),
        lab.path("mirror").display()
    );
    fs::write(lab.path("cluster.toml"), text).unwrap();
}

#[test]
fn build_checks_the_zone_in_the_base() {
    let lab = Lab::new();
    let base = pi_base_with_zones(&lab, &["UTC", "Europe/Berlin"]);
    cluster(&lab, &base, "Europe/Nowhere");
    let o = lab.build(&["cp1"]);
    let e = stderr(&o);
    assert!(
        !o.status.success(),
        "a zone missing from the base was accepted"
    );
    for part in [
        "rule iana-timezone",
        "Europe/Nowhere",
        "/usr/share/zoneinfo/Europe/Nowhere",
    ] {
        assert!(e.contains(part), "{part:?} not in:\n{e}");
    }
    assert!(!lab.path("out/cp1/cp1.img").exists());
    // a directory is not a zone
    cluster(&lab, &base, "Europe");
    assert!(!lab.build(&["cp1"]).status.success());
    cluster(&lab, &base, "Europe/Berlin");
    let o = lab.build(&["cp1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(lab.path("out/cp1/cp1.img").is_file());
}

#[test]
fn base_without_tzdata_warns() {
    let lab = Lab::new();
    cluster(&lab, &lab.path("rpi.img.xz"), "Europe/Berlin");
    let o = lab.build(&["cp1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no tzdata"), "{}", stderr(&o));
    // check warns that the zone is not yet checked, naming the zone and the base
    let o = lab.run(&["check", "-c", "cluster.toml"]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("Europe/Berlin") && e.contains("rpi.img.xz") && e.contains("iana-timezone"),
        "{e}"
    );
}
