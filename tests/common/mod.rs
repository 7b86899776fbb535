//! A throwaway homelab for the end-to-end tests: raspios and debian-generic bases from
//! tests/fixtures/mkbase.sh, a tiny file:// k3s mirror, a cluster file with one Pi server (`cp1`)
//! and one x86 agent (`w1`), and its secrets.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_nodeforge");

pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum (coreutils)");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub struct Lab {
    _tmp: tempfile::TempDir,
    /// Holds cluster.toml, nodeforge-secrets.toml, the bases and the mirror.
    pub dir: PathBuf,
}

impl Lab {
    /// One Pi server `cp1` and one x86 agent `w1`, with fresh secrets from `nodeforge init`.
    pub fn new() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mk = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkbase.sh");
        for (fam, file) in [("raspios", "rpi.img.xz"), ("debian-generic", "deb.tar.xz")] {
            let st = Command::new("bash")
                .arg(mk)
                .arg(fam)
                .arg(dir.join(file))
                .output()
                .unwrap();
            assert!(st.status.success(), "mkbase {fam}: {}", stderr(&st));
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
        let out = lab.run_in(&lab.dir, &["init", "--update", "-c", "cluster.toml"]);
        assert!(out.status.success(), "init: {}", stderr(&out));
        assert!(lab.dir.join("nodeforge-secrets.toml").is_file());
        lab
    }

    /// (Re)write `cluster.toml`, pinning the Pi base by `rpi_sha`.
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

    /// `nodeforge build` into `out/` with the lab's cache.
    pub fn build(&self, extra: &[&str]) -> Output {
        self.build_to("out", extra)
    }

    /// `nodeforge build` into `out` with the lab's cache.
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

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Run nodeforge in `cwd` with SOURCE_DATE_EPOCH unset.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        fs::create_dir_all(cwd).unwrap();
        Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap()
    }

    /// Run nodeforge in the lab directory.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_in(&self.dir, args)
    }

    /// The token and every node password of the secrets file `file` (relative to the lab).
    pub fn secrets_in(&self, file: &str) -> Vec<String> {
        let s = nodeforge::secrets::Secrets::load(&self.path(file)).unwrap();
        let mut v = vec![s.token.clone()];
        v.extend(s.node_passwords.values().cloned());
        assert!(v.len() >= 3, "token and two node passwords");
        // The agent token and the cluster CA's private keys (a line from the middle of each PEM).
        v.extend(s.agent_token.clone());
        if let Some(ca) = &s.ca {
            let mut keys = vec![&ca.service_key, &ca.root.key, &ca.intermediate.key];
            keys.extend([&ca.server, &ca.client, &ca.request_header].map(|p| &p.key));
            keys.extend([&ca.etcd_peer, &ca.etcd_server].map(|p| &p.key));
            v.extend(
                keys.iter()
                    .filter_map(|k| k.lines().nth(2).map(str::to_string)),
            );
        }
        assert!(v.iter().all(|x| x.len() >= 16));
        v
    }

    /// The token and every node password of the lab's secrets file.
    pub fn secrets(&self) -> Vec<String> {
        self.secrets_in("nodeforge-secrets.toml")
    }
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The decompressed bytes of an .xz file, via the xz tool (independent of nodeforge's encoder).
pub fn unxz(path: &Path) -> Vec<u8> {
    let o = Command::new("xz")
        .arg("-dc")
        .arg(path)
        .output()
        .expect("xz (xz-utils)");
    assert!(
        o.status.success(),
        "xz -dc {}: {}",
        path.display(),
        stderr(&o)
    );
    o.stdout
}

/// Names of the regular files directly in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Compare `actual` with `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` rewrites the file instead.
pub fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "snapshot {} missing: run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        want, actual,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)"
    );
}
