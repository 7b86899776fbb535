//! bmap generation checked against bmaptool itself: same XML, accepted by `bmaptool copy`.

use nodeforge::bmap::{self, Bmap};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

fn need_bmaptool() {
    let ok = Command::new("bmaptool")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "bmaptool is required (apt-get install bmap-tools)");
}

/// A sparse image with data runs at odd places and an unaligned size.
fn make_sparse(path: &Path, size: u64, runs: &[(u64, usize)]) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    for (i, &(off, len)) in runs.iter().enumerate() {
        let data: Vec<u8> = (0..len)
            .map(|j| ((j * 7 + i * 13) % 251 + 1) as u8)
            .collect();
        f.write_all_at(&data, off).unwrap();
    }
    f.sync_all().unwrap();
}

fn runs() -> Vec<(u64, usize)> {
    vec![
        (0, 512),
        (5 * 4096, 3 * 4096 + 17),
        (1 << 20, 64 << 10),
        (3 << 20, 4096),
        ((8 << 20) - 100, 100),
    ]
}

#[test]
fn xml_identical_to_bmaptool_create() {
    need_bmaptool();
    let dir = tempfile::tempdir().unwrap();
    for (name, size) in [("a.img", 8u64 << 20), ("b.img", (8 << 20) + 1234)] {
        let img = dir.path().join(name);
        make_sparse(&img, size, &runs());
        let ours = bmap::generate(&img).unwrap();
        let out = Command::new("bmaptool")
            .args(["create"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = String::from_utf8(out.stdout).unwrap();
        let parsed = Bmap::parse(&theirs).unwrap();
        assert_eq!(parsed, ours, "{name}: ranges differ from bmaptool create");
        assert_eq!(
            ours.to_xml(),
            theirs,
            "{name}: XML differs from bmaptool create"
        );
    }
}

#[test]
fn bmaptool_copy_accepts_ours() {
    need_bmaptool();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    make_sparse(&img, (6 << 20) + 300, &runs()[..4]);
    let b = bmap::generate(&img).unwrap();
    let bm = dir.path().join("x.bmap");
    bmap::write(&b, &bm).unwrap();
    assert_eq!(bmap::read(&bm).unwrap(), b);
    let out = dir.path().join("out.img");
    let st = Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(&bm)
        .arg(&img)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&out).unwrap());
}

#[test]
fn corrupted_bmap_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    make_sparse(&img, 1 << 20, &[(4096, 100)]);
    let xml = bmap::generate(&img).unwrap().to_xml();
    let bad = xml.replace("<ImageSize> 1048576 ", "<ImageSize> 1048577 ");
    assert_ne!(bad, xml);
    let e = Bmap::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("checksum") || e.contains("BlocksCount"), "{e}");
    let bm = dir.path().join("bad.bmap");
    std::fs::write(&bm, &xml[..xml.len() / 2]).unwrap();
    let e = format!("{:#}", bmap::read(&bm).unwrap_err());
    assert!(e.contains("bad.bmap"), "{e}");
}
