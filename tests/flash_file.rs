//! Flashing to regular files: raw/xz/gz, with and without a bmap, compared with the image and
//! with what `bmaptool copy` writes; verify catches a flipped byte; bad inputs fail cleanly.

use nodeforge::bmap::{self, Bmap};
use nodeforge::flash::{flash_image, verify, FlashOptions};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn opts() -> FlashOptions {
    FlashOptions {
        progress: false,
        ..Default::default()
    }
}

/// ~12 MiB sparse image: data runs (one with embedded zero blocks), an unaligned size.
fn make_image(dir: &Path) -> PathBuf {
    let img = dir.join("node.img");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&img)
        .unwrap();
    f.set_len((12 << 20) + 2048).unwrap();
    let mut data = vec![0u8; 5 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8 | 1;
    }
    // Zero block inside a data run: bmaptool keeps it mapped and so must we.
    data[8192..12288].fill(0);
    f.write_all_at(&data[..512], 0).unwrap();
    f.write_all_at(&data[..3 << 20], 1 << 20).unwrap();
    f.write_all_at(&data[100..70_000], 7 << 20).unwrap();
    f.write_all_at(&data[..2048], 12 << 20).unwrap();
    f.sync_all().unwrap();
    img
}

fn compress(img: &Path, tool: &str) -> PathBuf {
    let st = Command::new(tool)
        .args(["-k", "-f"])
        .arg(img)
        .status()
        .unwrap();
    assert!(st.success(), "{tool} failed");
    PathBuf::from(format!(
        "{}.{}",
        img.display(),
        if tool == "xz" { "xz" } else { "gz" }
    ))
}

fn bmaptool_copy(bm: &Path, img: &Path, out: &Path) {
    let o = Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(bm)
        .arg(img)
        .arg(out)
        .output()
        .expect("bmaptool is required (apt-get install bmap-tools)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn assert_mapped_equal(b: &Bmap, a: &Path, c: &Path) {
    let fa = fs::File::open(a).unwrap();
    let fc = fs::File::open(c).unwrap();
    for r in &b.ranges {
        let (off, len) = r.byte_span(b.block_size, b.image_size);
        let mut x = vec![0u8; len as usize];
        let mut y = vec![0u8; len as usize];
        fa.read_exact_at(&mut x, off).unwrap();
        fc.read_exact_at(&mut y, off).unwrap();
        assert!(x == y, "range {}-{} differs", r.first, r.last);
    }
}

#[test]
fn raw_xz_gz_with_and_without_bmap() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let want = fs::read(&img).unwrap();
    let b = bmap::generate(&img).unwrap();
    let xz = compress(&img, "xz");
    let gz = compress(&img, "gzip");

    // Reference: bmaptool copy with our bmap.
    let bm = dir.path().join("ref.bmap");
    bmap::write(&b, &bm).unwrap();
    let reference = dir.path().join("ref.out");
    bmaptool_copy(&bm, &img, &reference);

    let cases: Vec<(&str, PathBuf, bool)> = vec![
        ("raw, no bmap", img.clone(), false),
        ("raw, bmap", img.clone(), true),
        ("xz, no bmap", xz.clone(), false),
        ("xz, bmap", xz.clone(), true),
        ("gz, no bmap", gz.clone(), false),
        ("gz, bmap", gz.clone(), true),
    ];
    for (what, src, with_bmap) in cases {
        let side = img.with_file_name("node.img.bmap");
        if with_bmap {
            bmap::write(&b, &side).unwrap();
        } else {
            let _ = fs::remove_file(&side);
        }
        let out = dir.path().join("out.img");
        // Stale content must not survive.
        fs::write(&out, vec![0xAAu8; 20 << 20]).unwrap();
        let rep = flash_image(&src, &out, &opts()).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(rep.verified, Some(true), "{what}");
        assert_eq!(rep.image_size, want.len() as u64, "{what}");
        assert!(
            fs::read(&out).unwrap() == want,
            "{what}: target differs from image"
        );
        assert_mapped_equal(&b, &reference, &out);
        assert!(
            fs::read(&reference).unwrap() == fs::read(&out).unwrap(),
            "{what}: differs from bmaptool copy"
        );
        // Sparse: no more allocated than the mapped data (plus a little filesystem slack).
        let alloc = fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            alloc <= b.mapped_bytes() + (1 << 20),
            "{what}: {alloc} bytes allocated"
        );
        assert!(
            rep.bytes_written <= b.mapped_bytes(),
            "{what}: wrote {}",
            rep.bytes_written
        );
    }
}

#[test]
fn verify_catches_one_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let b = bmap::generate(&img).unwrap();
    let out = dir.path().join("out.img");
    flash_image(&img, &out, &opts()).unwrap();
    verify(&out, &b).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&out)
        .unwrap();
    let at = (7 << 20) + 1234;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
    f.sync_all().unwrap();
    let e = format!("{:#}", verify(&out, &b).unwrap_err());
    assert!(
        e.contains("verify failed") && e.contains(&(7u64 << 20).to_string()),
        "{e}"
    );
    // Same with a bmap from bmaptool itself.
    let o = Command::new("bmaptool")
        .arg("create")
        .arg(&img)
        .output()
        .unwrap();
    let theirs = Bmap::parse(&String::from_utf8(o.stdout).unwrap()).unwrap();
    assert!(verify(&out, &theirs).is_err());
}

#[test]
fn flash_with_no_verify_and_cli_summary() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let out = dir.path().join("cli.img");
    let o = Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .arg("flash")
        .arg(&img)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("verify: ok") && err.contains("MB/s"), "{err}");
    assert_eq!(fs::read(&img).unwrap(), fs::read(&out).unwrap());
    let rep = flash_image(
        &img,
        &out,
        &FlashOptions {
            verify: false,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(rep.verified, None);
    assert!(rep.summary().contains("skipped"));
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let xz = compress(&img, "xz");
    // Truncated xz: error naming the image, no output left behind.
    let cut = dir.path().join("cut.img.xz");
    let bytes = fs::read(&xz).unwrap();
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("never.img");
    let e = format!("{:#}", flash_image(&cut, &out, &opts()).unwrap_err());
    assert!(e.contains("cut.img.xz"), "{e}");
    assert!(!out.exists(), "partial output left behind");
    // Corrupted bmap beside the image.
    let side = dir.path().join("node.img.bmap");
    let xml = bmap::generate(&img)
        .unwrap()
        .to_xml()
        .replace("</Range>", "</Range>\n ");
    fs::write(&side, xml).unwrap();
    let e = format!("{:#}", flash_image(&img, &out, &opts()).unwrap_err());
    assert!(e.contains("node.img.bmap") && e.contains("checksum"), "{e}");
    assert!(!out.exists());
    fs::remove_file(&side).unwrap();
    // Bmap for another image size.
    let other = dir.path().join("other.img");
    fs::write(&other, vec![1u8; 8192]).unwrap();
    bmap::write(&bmap::generate(&other).unwrap(), &side).unwrap();
    let e = format!("{:#}", flash_image(&img, &out, &opts()).unwrap_err());
    assert!(e.contains("bmap says"), "{e}");
    fs::remove_file(&side).unwrap();
    // Target is the image; missing image.
    assert!(flash_image(&img, &img, &opts()).is_err());
    let e = format!(
        "{:#}",
        flash_image(&dir.path().join("nope.img"), &out, &opts()).unwrap_err()
    );
    assert!(e.contains("nope.img"), "{e}");
    // Something under /dev that is not a block device.
    let e = format!(
        "{:#}",
        flash_image(&img, Path::new("/dev/null"), &opts()).unwrap_err()
    );
    assert!(e.contains("not a block device"), "{e}");
}

#[test]
fn xz_index_size_matches_xz_list() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let want = fs::metadata(&img).unwrap().len();
    // Multi-block (threaded) stream, and two concatenated streams with padding.
    let st = Command::new("xz")
        .args(["-k", "-f", "-T2", "--block-size=1MiB"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let xz = PathBuf::from(format!("{}.xz", img.display()));
    assert_eq!(
        nodeforge::flash::xz_uncompressed_size(&xz).unwrap(),
        Some(want)
    );
    let two = dir.path().join("two.img.xz");
    let mut b = fs::read(&xz).unwrap();
    b.extend_from_slice(&[0u8; 8]);
    b.extend_from_slice(&fs::read(&xz).unwrap());
    fs::write(&two, &b).unwrap();
    assert_eq!(
        nodeforge::flash::xz_uncompressed_size(&two).unwrap(),
        Some(2 * want)
    );
    let o = Command::new("xz")
        .args(["--robot", "-l"])
        .arg(&two)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    let totals = listed.lines().find(|l| l.starts_with("totals")).unwrap();
    assert_eq!(totals.split('\t').nth(4).unwrap(), (2 * want).to_string());
    // Not xz at all.
    assert_eq!(nodeforge::flash::xz_uncompressed_size(&img).unwrap(), None);
}

#[test]
fn bmap_without_checksums_from_bmaptool() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let want = fs::read(&img).unwrap();
    let o = Command::new("bmaptool")
        .args(["create", "--no-checksum"])
        .arg(&img)
        .output()
        .expect("bmaptool is required (apt-get install bmap-tools)");
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let parsed = Bmap::parse(&text).unwrap();
    assert!(parsed.ranges.iter().all(|r| r.sha256.is_empty()));
    let ours = bmap::generate(&img).unwrap();
    let strip = |b: &Bmap| {
        b.ranges
            .iter()
            .map(|r| (r.first, r.last))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&parsed), strip(&ours));
    let side = dir.path().join("node.img.bmap");
    fs::write(&side, &text).unwrap();
    let xz = compress(&img, "xz");
    for src in [&img, &xz] {
        let out = dir.path().join("out.img");
        let rep = flash_image(src, &out, &opts()).unwrap();
        assert_eq!(rep.verified, Some(true));
        assert!(fs::read(&out).unwrap() == want, "{}", src.display());
    }
}

#[test]
fn stale_bmap_fails_verification_during_flash() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let mut b = bmap::generate(&img).unwrap();
    let last = b.ranges.len() - 1;
    b.ranges[last].sha256 = "0".repeat(64);
    bmap::write(&b, &dir.path().join("node.img.bmap")).unwrap();
    let xz = compress(&img, "xz");
    for src in [&img, &xz] {
        let out = dir.path().join("out.img");
        let e = format!("{:#}", flash_image(src, &out, &opts()).unwrap_err());
        assert!(
            e.contains("verify failed") && e.contains(&"0".repeat(64)),
            "{e}"
        );
        // With --no-verify the same flash goes through.
        let rep = flash_image(
            src,
            &out,
            &FlashOptions {
                verify: false,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(rep.verified, None);
    }
}
