//! Signed releases against OpenSSH itself: `release --sign` verifies with `ssh-keygen -Y verify`,
//! `ssh-keygen -Y sign` output verifies with `nodeforge verify`, one changed byte anywhere is
//! refused by both, and `flash` refuses before it writes a byte.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `ssh-keygen -t TYPE [-b BITS] -N PASS -f DIR/NAME`; returns the private key path.
fn keygen(dir: &Path, name: &str, kind: &str, bits: Option<&str>, pass: &str) -> PathBuf {
    let key = dir.join(name);
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", kind, "-N", pass, "-C", name, "-f"])
        .arg(&key);
    if let Some(b) = bits {
        c.args(["-b", b]);
    }
    let o = c
        .output()
        .expect("ssh-keygen is needed (openssh-client, tests/setup-host.sh)");
    assert!(o.status.success(), "ssh-keygen -t {kind}: {}", stderr(&o));
    key
}

fn pubkey(key: &Path) -> String {
    fs::read_to_string(format!("{}.pub", key.display()))
        .unwrap()
        .trim()
        .to_string()
}

/// `ssh-keygen -Y verify -n file -f ALLOWED -I ID -s SIG < MSG`.
fn ssh_verify(allowed: &Path, id: &str, sig: &Path, msg: &Path) -> Output {
    Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "file", "-f"])
        .arg(allowed)
        .args(["-I", id, "-s"])
        .arg(sig)
        .stdin(fs::File::open(msg).unwrap())
        .output()
        .unwrap()
}

/// `ssh-keygen -Y sign -n file -f KEY FILE` (writes FILE.sig).
fn ssh_sign(key: &Path, file: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(key)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen -Y sign: {}", stderr(&o));
}

fn nf(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn sha256sum_c(dir: &Path) -> bool {
    Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success()
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    fs::write(path, b).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn every_key_type_round_trips_with_openssh() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let msg = d.join("msg");
    fs::write(&msg, b"0123  some.img.xz\n").unwrap();
    for (kind, bits) in [
        ("ed25519", None),
        ("ecdsa", Some("256")),
        ("ecdsa", Some("384")),
        ("rsa", Some("3072")),
    ] {
        let name = format!("{kind}{}", bits.unwrap_or(""));
        let key = keygen(d, &name, kind, bits, "");
        let allowed = d.join(format!("{name}.allowed"));
        fs::write(&allowed, format!("me@lab {}\n", pubkey(&key))).unwrap();

        // nodeforge signs, OpenSSH verifies (RSA keys are refused for signing: see sign.rs).
        if kind == "rsa" {
            let e = nodeforge::sign::load_signing_key(&key).unwrap_err();
            assert!(format!("{e:#}").contains("RSA key"), "{e:#}");
        } else {
            let k = nodeforge::sign::load_signing_key(&key).unwrap();
            let sig = d.join(format!("{name}.nf.sig"));
            let text = nodeforge::sign::sign(&k, &fs::read(&msg).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            fs::write(&sig, text).unwrap();
            let o = ssh_verify(&allowed, "me@lab", &sig, &msg);
            assert!(
                o.status.success(),
                "{name}: ssh-keygen -Y verify: {}",
                stderr(&o)
            );
        }

        // OpenSSH signs, nodeforge verifies.
        ssh_sign(&key, &msg);
        let ssh_sig = fs::read(d.join("msg.sig")).unwrap();
        let trust = nodeforge::sign::Trust::allowed_signers(&allowed).unwrap();
        let v = nodeforge::sign::verify(&trust, &fs::read(&msg).unwrap(), &ssh_sig, "msg", 0)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(v.principals, ["me@lab"]);
        assert!(nodeforge::sign::verify(&trust, b"other", &ssh_sig, "msg", 0).is_err());
        fs::remove_file(d.join("msg.sig")).unwrap();
    }
}

#[test]
fn signing_keys_that_cannot_sign_are_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let enc = keygen(d, "enc", "ed25519", None, "a passphrase");
    let o = nf(
        d,
        &["release", "--sign", enc.to_str().unwrap(), "-o", "dist"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("passphrase"), "{}", stderr(&o));
    assert!(!d.join("dist").exists(), "nothing written for a bad key");
    let o = nf(d, &["release", "--sign", "enc.pub", "-o", "dist"]);
    assert!(stderr(&o).contains("is a public key"), "{}", stderr(&o));
    let o = nf(d, &["release", "--sign", "missing-key", "-o", "dist"]);
    assert!(stderr(&o).contains("missing-key"), "{}", stderr(&o));
}

#[test]
fn signed_release_round_trip_tamper_and_flash() {
    let lab = Lab::new();
    let key = keygen(&lab.dir, "release-key", "ed25519", None, "");
    let o = lab.run(&[
        "release",
        "-c",
        "cluster.toml",
        "--cache-dir",
        "cache",
        "-o",
        "dist",
        "--sign",
        "release-key",
    ]);
    assert!(o.status.success(), "release --sign: {}", stderr(&o));
    let dist = lab.path("dist");
    assert!(dist.join("SHA256SUMS.sig").is_file());
    assert!(sha256sum_c(&dist));
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(!sums.contains("SHA256SUMS.sig"), "{sums}");
    for n in ["lab-server-rpi4", "lab-agent-x86_64"] {
        assert!(sums.contains(&format!("  {n}.spdx.json\n")), "{sums}");
    }
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dist.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(index["signature"]["file"], "SHA256SUMS.sig");
    assert_eq!(index["signature"]["namespace"], "file");
    assert_eq!(index["checksums"], "SHA256SUMS");
    let sboms: Vec<&str> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sbom"].as_str().unwrap())
        .collect();
    assert_eq!(
        sboms,
        ["lab-server-rpi4.spdx.json", "lab-agent-x86_64.spdx.json"]
    );

    let allowed = lab.path("allowed_signers");
    fs::write(
        &allowed,
        format!(
            "# release signers\nci@homelab namespaces=\"file\" {}\n",
            pubkey(&key)
        ),
    )
    .unwrap();
    let other = keygen(&lab.dir, "other-key", "ed25519", None, "");
    let other_allowed = lab.path("other_allowed");
    fs::write(&other_allowed, format!("someone {}\n", pubkey(&other))).unwrap();
    let sig = dist.join("SHA256SUMS.sig");
    let sums_path = dist.join("SHA256SUMS");

    // nodeforge's signature, checked by OpenSSH and by nodeforge.
    let o = ssh_verify(&allowed, "ci@homelab", &sig, &sums_path);
    assert!(o.status.success(), "ssh-keygen -Y verify: {}", stderr(&o));
    let verify = |dir: &Path, trust: &[&str]| {
        let mut a = vec!["verify", dir.to_str().unwrap()];
        a.extend_from_slice(trust);
        nf(&lab.dir, &a)
    };
    let by_file = ["--allowed-signers", "allowed_signers"];
    let by_key = ["--signer-key", "release-key.pub"];
    let o = verify(&dist, &by_file);
    assert!(o.status.success(), "nodeforge verify: {}", stderr(&o));
    assert!(stderr(&o).contains("ci@homelab"), "{}", stderr(&o));
    assert!(verify(&dist, &by_key).status.success());
    let o = verify(&dist, &["--signer-key", "other-key.pub"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not by the key"), "{}", stderr(&o));
    assert!(!verify(&dist, &["--allowed-signers", "other_allowed"])
        .status
        .success());
    let o = verify(&dist, &[]);
    assert!(stderr(&o).contains("--allowed-signers"), "{}", stderr(&o));

    // A signature made by OpenSSH, checked by nodeforge.
    let ossh = lab.path("ossh");
    copy_dir(&dist, &ossh);
    fs::remove_file(ossh.join("SHA256SUMS.sig")).unwrap();
    ssh_sign(&other, &ossh.join("SHA256SUMS"));
    let o = verify(&ossh, &["--allowed-signers", "other_allowed"]);
    assert!(
        o.status.success(),
        "verify ssh-keygen's signature: {}",
        stderr(&o)
    );
    assert!(!verify(&ossh, &by_file).status.success());

    // One changed byte in an image, in SHA256SUMS, in the signature: both refuse.
    let image = "lab-server-rpi4.img.xz";
    for (what, file, at) in [
        ("image", image, 5000usize),
        ("SHA256SUMS", "SHA256SUMS", 3),
        ("signature", "SHA256SUMS.sig", 200),
    ] {
        let t = lab.path(&format!("tamper-{what}"));
        copy_dir(&dist, &t);
        flip_byte(&t.join(file), at);
        let openssh_ok = ssh_verify(
            &allowed,
            "ci@homelab",
            &t.join("SHA256SUMS.sig"),
            &t.join("SHA256SUMS"),
        )
        .status
        .success()
            && sha256sum_c(&t);
        assert!(
            !openssh_ok,
            "{what}: ssh-keygen + sha256sum accepted a changed byte"
        );
        let o = verify(&t, &by_file);
        assert!(
            !o.status.success(),
            "{what}: nodeforge verify accepted a changed byte"
        );
        eprintln!("{what} tampered: {}", stderr(&o).trim());
    }
    let t = lab.path("tamper-missing");
    copy_dir(&dist, &t);
    fs::remove_file(t.join("SHA256SUMS.sig")).unwrap();
    let o = verify(&t, &by_file);
    assert!(stderr(&o).contains("not signed"), "{}", stderr(&o));

    // flash: refuses before writing a byte (the target keeps its bytes), writes when good.
    let target = lab.path("stick.bin");
    let before = vec![0xeeu8; 1 << 20];
    let flash = |dir: &str, trust: &[&str]| {
        fs::write(&target, &before).unwrap();
        let img = lab.path(&format!("{dir}/{image}"));
        let mut a = vec!["flash", img.to_str().unwrap(), target.to_str().unwrap()];
        a.extend_from_slice(trust);
        nf(&lab.dir, &a)
    };
    for (dir, trust, why) in [
        ("tamper-image", &by_file[..], "not in the signed"),
        ("tamper-SHA256SUMS", &by_file[..], "BAD signature"),
        ("tamper-signature", &by_key[..], "signature"),
        ("tamper-missing", &by_key[..], "not signed"),
        (
            "dist",
            &["--signer-key", "other-key.pub"][..],
            "not by the key",
        ),
    ] {
        let o = flash(dir, trust);
        assert!(!o.status.success(), "flash {dir} {trust:?} went through");
        let e = stderr(&o);
        assert!(
            e.contains("refusing to write") && e.contains(why),
            "{dir}: {e}"
        );
        assert_eq!(fs::read(&target).unwrap(), before, "{dir}: target changed");
    }
    // A changed block map (it decides what gets written) is refused too.
    let t = lab.path("tamper-bmap");
    copy_dir(&dist, &t);
    let bmap = t.join("lab-server-rpi4.img.bmap");
    let mut text = fs::read_to_string(&bmap).unwrap();
    text.push('\n');
    fs::write(&bmap, text).unwrap();
    let o = flash("tamper-bmap", &by_key);
    assert!(stderr(&o).contains("img.bmap"), "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), before);

    let o = flash("dist", &by_file);
    assert!(
        o.status.success(),
        "flash a good signed image: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("good \"file\" signature"),
        "{}",
        stderr(&o)
    );
    assert_ne!(fs::read(&target).unwrap(), before);
    let o = flash("dist", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("not signature-checked"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", stderr(&o));
    assert!(notes[0].contains("--allowed-signers"), "{}", notes[0]);
}

#[test]
fn homelab_workflow_signs_with_the_repository_secret() {
    let wf = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/homelab/.github/workflows/release.yml"
    ))
    .unwrap();
    assert!(wf.contains("secrets.NODEFORGE_SIGNING_KEY"), "{wf}");
    assert!(wf.contains("--sign \"$key\""), "{wf}");
    assert!(wf.contains("umask 077"), "the key file is private: {wf}");
    let ignore = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/homelab/.gitignore"
    ))
    .unwrap();
    assert!(ignore.lines().any(|l| l == "release-key"), "{ignore}");
}
