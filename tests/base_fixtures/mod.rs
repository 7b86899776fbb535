//! Fixture images from `tests/fixtures/mkbase.sh`, built once per script version and cached
//! under the target directory. Shared by the `base_*` and `disk_*` tests.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static LOCK: Mutex<()> = Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mkbase.sh")
}

/// Path of `mkbase.sh FAMILY <file_name>`'s output, built if missing. Every container variant
/// (`.img.xz`, `.tar.xz`...) is packed from the same raw `base.img`, so their bytes agree.
pub fn base(family: &str, file_name: &str) -> PathBuf {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    build(family, file_name)
}

fn build(family: &str, file_name: &str) -> PathBuf {
    let text = std::fs::read(script()).expect("read mkbase.sh");
    let tag = &hex::encode(Sha256::digest(&text))[..12];
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mkbase-{tag}"));
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    let out = dir.join(format!("{family}-{file_name}"));
    if !out.exists() {
        let mut cmd = Command::new("bash");
        cmd.arg(script());
        if file_name == "base.img" {
            cmd.arg(family);
        } else {
            cmd.arg("pack").arg(build(family, "base.img"));
        }
        let st = cmd.arg(&out).status().expect("run mkbase.sh (needs bash)");
        assert!(st.success(), "mkbase.sh {family} {} failed", out.display());
    }
    out
}

/// Raw `.img` fixture of a family.
pub fn raw(family: &str) -> PathBuf {
    base(family, "base.img")
}

/// Fail clearly when an external tool is missing.
pub fn need(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "external tool `{tool}` is missing: run tests/setup-host.sh"
    );
}

/// Run a command, return stdout; panics with stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    need(cmd);
    let o = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).expect("open");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash");
    hex::encode(h.finalize())
}
