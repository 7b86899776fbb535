//! Compose node images from bases in the shapes of the four families (made by
//! tests/fixtures/mkbase.sh with sfdisk/sgdisk/mkfs.vfat/mke2fs) and check the results with
//! independent tools: sfdisk --verify, sgdisk -v, fsck.vfat -n, mdir.

use nodeforge::base::{self, Family};
use nodeforge::compose::{self, ComposeInput};
use nodeforge::fat::{self, FatFile, FileData};
use nodeforge::partition::{self, TableKind};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn mkbase(dir: &Path, family: &str) -> PathBuf {
    let out = dir.join(format!("{family}.img"));
    let st = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mkbase.sh"
        ))
        .arg(family)
        .arg(&out)
        .status()
        .expect("running mkbase.sh");
    assert!(st.success(), "mkbase.sh {family} failed");
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (see tests/setup-host.sh)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn sha_range(path: &Path, off: u64, len: u64) -> String {
    let f = File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], off + done).unwrap();
        h.update(&buf[..n]);
        done += n as u64;
    }
    hex::encode(h.finalize())
}

fn extract(img: &Path, off: u64, len: u64, to: &Path) {
    let f = File::open(img).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, off).unwrap();
    std::fs::write(to, buf).unwrap();
}

struct Built {
    img: PathBuf,
    base: base::Base,
}

fn compose_one(dir: &Path, raw: &Path, family: &str, name: &str, k3s: &Path) -> Built {
    let b = base::open(raw, None).expect("opening base");
    let mut overrides = BTreeMap::new();
    if let Some(fat) = &b.boot_fat {
        for f in &fat.files {
            if f.path.eq_ignore_ascii_case("cmdline.txt") {
                let FileData::Bytes(t) = &f.data else {
                    panic!()
                };
                let line = String::from_utf8(t.clone()).unwrap();
                overrides.insert(
                    f.path.clone(),
                    format!("{} cgroup_memory=1 cgroup_enable=memory\n", line.trim()).into_bytes(),
                );
            }
        }
    }
    let input = ComposeInput {
        base: &b,
        seed: vec![
            FatFile {
                path: "user-data".into(),
                data: FileData::Bytes(b"#cloud-config\nhostname: n1\n".to_vec()),
            },
            FatFile {
                path: "meta-data".into(),
                data: FileData::Bytes(b"instance-id: i-1\nlocal-hostname: n1\n".to_vec()),
            },
        ],
        bundle: vec![
            FatFile {
                path: "k3s".into(),
                data: FileData::Path(k3s.to_path_buf()),
            },
            FatFile {
                path: "install.sh".into(),
                data: FileData::Bytes(b"#!/bin/sh\necho test\n".to_vec()),
            },
        ],
        boot_overrides: overrides,
        size: None,
        timestamp: 1_700_000_000,
        identity: format!("test/{family}"),
    };
    let plan = compose::plan(&input).expect("planning");
    let img = dir.join(format!("{name}.img"));
    compose::write(&plan, raw, &img).expect("writing");
    Built { img, base: b }
}

fn check_family(family: &str, expect: Family) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let k3s = dir.join("k3s-stand-in");
    std::fs::write(
        &k3s,
        (0..3_000_000u32)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let raw = mkbase(dir, family);
    let a = compose_one(dir, &raw, family, "a", &k3s);
    assert_eq!(a.base.family, expect);
    let b = compose_one(dir, &raw, family, "b", &k3s);
    assert_eq!(
        sha_range(&a.img, 0, std::fs::metadata(&a.img).unwrap().len()),
        sha_range(&b.img, 0, std::fs::metadata(&b.img).unwrap().len()),
        "two builds of {family} differ"
    );

    let img = &a.img;
    let mut f = File::open(img).unwrap();
    let out = partition::read_layout(&mut f, img).unwrap();
    // The table is valid to tools nobody here wrote.
    match &out.table {
        TableKind::Gpt { .. } => {
            let v = run(Command::new("sgdisk").arg("-v").arg(img));
            assert!(v.contains("No problems found"), "sgdisk -v: {v}");
        }
        TableKind::Mbr { .. } => {
            run(Command::new("sfdisk").arg("--verify").arg(img));
        }
    }
    // Disk identity, partition numbers, types and GUIDs are kept.
    assert_eq!(out.table, a.base.layout.table);
    for p in &a.base.layout.partitions {
        let q = out.by_number(p.number).expect("partition kept its number");
        assert_eq!(q.part_type, p.part_type, "type of p{}", p.number);
        assert_eq!(q.unique_guid, p.unique_guid, "GUID of p{}", p.number);
    }
    // Root bytes identical.
    let root = &a.base.layout.partitions[a.base.root];
    let new_root = out.by_number(root.number).unwrap();
    assert_eq!(new_root.size, root.size);
    assert_eq!(
        sha_range(&a.base.raw, root.start, root.size),
        sha_range(img, new_root.start, new_root.size),
        "root of {family} changed"
    );
    // Every FAT passes fsck.vfat -n; find the seed.
    let mut seed_found = false;
    for p in &out.partitions {
        let part = dir.join(format!("p{}.fat", p.number));
        let vol = match fat::read_fat(&File::open(img).unwrap(), p.start, p.size) {
            Ok(v) => v,
            Err(_) => continue,
        };
        extract(img, p.start, p.size, &part);
        let fsck = Command::new("fsck.vfat")
            .arg("-n")
            .arg(&part)
            .output()
            .expect("fsck.vfat (dosfstools)");
        assert!(
            fsck.status.success(),
            "fsck.vfat -n on p{} of {family}: {}{}",
            p.number,
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let listing = run(Command::new("mdir")
            .arg("-/")
            .arg("-b")
            .arg("-i")
            .arg(&part)
            .arg("::")
            .env("MTOOLS_SKIP_CHECK", "1"));
        if vol.files.iter().any(|f| f.path == "user-data") {
            seed_found = true;
            assert!(
                listing.contains("nodeforge/k3s"),
                "bundle missing: {listing}"
            );
            let k3s_copy = dir.join("k3s-copy");
            run(Command::new("mcopy")
                .arg("-n")
                .arg("-i")
                .arg(&part)
                .arg("::nodeforge/k3s")
                .arg(&k3s_copy)
                .env("MTOOLS_SKIP_CHECK", "1"));
            assert_eq!(
                std::fs::read(&k3s_copy).unwrap(),
                std::fs::read(&k3s).unwrap()
            );
            if compose::seed_on_boot_fat(expect) {
                assert_eq!(p.number, a.base.layout.partitions[a.base.boot].number);
            } else {
                assert_eq!(vol.label, compose::CIDATA_LABEL);
                // CIDATA sits before root so root can still grow at the end.
                assert!(p.start < new_root.start);
            }
        }
        // Base boot files are all there with identical bytes (except the edited cmdline.txt).
        if let Some(base_fat) = &a.base.boot_fat {
            if p.number == a.base.layout.partitions[a.base.boot].number {
                assert_eq!(vol.label, base_fat.label);
                assert_eq!(vol.volume_id, base_fat.volume_id);
                for bf in &base_fat.files {
                    let nf = vol
                        .files
                        .iter()
                        .find(|f| f.path == bf.path)
                        .unwrap_or_else(|| panic!("{} lost", bf.path));
                    let (FileData::Bytes(x), FileData::Bytes(y)) = (&bf.data, &nf.data) else {
                        panic!()
                    };
                    if ["user-data", "meta-data", "network-config"].contains(&bf.path.as_str()) {
                        continue; // the seed replaces what the vendor shipped
                    }
                    if bf.path == "cmdline.txt" {
                        let t = String::from_utf8_lossy(y);
                        assert_eq!(t.matches("cgroup_enable=memory").count(), 1);
                        assert_eq!(t.trim_end().lines().count(), 1);
                    } else {
                        assert_eq!(x, y, "{} changed", bf.path);
                    }
                }
            }
        }
    }
    assert!(seed_found, "no seed FAT in {family} image");
    // The composed image is itself a readable base of the same family.
    let again = base::open(img, None).expect("reopening the composed image");
    assert_eq!(again.family, expect);
}

#[test]
fn raspios() {
    check_family("raspios", Family::Raspios);
}

#[test]
fn ubuntu_raspi() {
    check_family("ubuntu-raspi", Family::UbuntuRaspi);
}

#[test]
fn debian_raspi() {
    check_family("debian-raspi", Family::DebianRaspi);
}

#[test]
fn debian_generic() {
    check_family("debian-generic", Family::DebianGeneric);
}
