//! A test cluster: bases from tests/fixtures/mkbase.sh, a tiny file:// k3s mirror, a cluster
//! file with one Pi server (`cp1`) and one x86 agent (`w1`), and its secrets.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_nodeforge");

pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub struct Lab {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Lab {
    /// A cluster dir with a raspios base (`rpi.img.xz`), a debian-generic base (`deb.tar.xz`),
    /// a k3s mirror, `cluster.toml` with one Pi server and one x86 agent, and secrets.
    pub fn new() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mk = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkbase.sh");
        for (fam, file) in [("raspios", "rpi.img.xz"), ("debian-generic", "deb.tar.xz")] {
            let st = Command::new("bash")
                .arg(mk)
                .arg(fam)
                .arg(dir.join(file))
                .status()
                .unwrap();
            assert!(st.success(), "mkbase {fam}");
        }
        let m = dir.join("mirror");
        fs::create_dir(&m).unwrap();
        fs::write(m.join("k3s"), vec![0x5au8; 300_000]).unwrap();
        fs::write(m.join("k3s-arm64"), vec![0xa5u8; 300_000]).unwrap();
        fs::write(m.join("install.sh"), "#!/bin/sh\necho stand-in\n").unwrap();
        fs::write(
            m.join("sha256sum-amd64.txt"),
            format!("{}  k3s\n", sha256(&m.join("k3s"))),
        )
        .unwrap();
        fs::write(
            m.join("sha256sum-arm64.txt"),
            format!("{}  k3s-arm64\n", sha256(&m.join("k3s-arm64"))),
        )
        .unwrap();
        let lab = Lab { _tmp: tmp, dir };
        lab.write_cluster(&sha256(&lab.dir.join("rpi.img.xz")));
        let out = lab.run(&["init", "--update", "-c", "cluster.toml"]);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    pub fn write_cluster(&self, rpi_sha: &str) {
        let text = format!(
            r#"[cluster]
name = "lab"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxq me@laptop"]
[boards.rpi4]
base = "rpi.img.xz"
sha256 = "{rpi_sha}"
[boards.x86_64]
base = "deb.tar.xz"
sha256 = "{}"
[k3s]
mirror = "file://{}"
[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
address = "10.0.0.10/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
[[nodes]]
hostname = "w1"
role = "agent"
board = "x86_64"
"#,
            sha256(&self.dir.join("deb.tar.xz")),
            self.dir.join("mirror").display()
        );
        fs::write(self.dir.join("cluster.toml"), text).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap()
    }

    pub fn build(&self, extra: &[&str]) -> Output {
        self.build_to("out", extra)
    }

    pub fn build_to(&self, out: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "build",
            "-c",
            "cluster.toml",
            "--cache-dir",
            "cache",
            "-o",
            out,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn secrets(&self) -> Vec<String> {
        let text = fs::read_to_string(self.dir.join("nodeforge-secrets.toml")).unwrap();
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(_, v)| v.trim().trim_matches('"').to_string())
            })
            .filter(|v| v.len() >= 16)
            .collect()
    }
}
