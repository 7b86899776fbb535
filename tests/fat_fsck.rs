//! FAT32 writer and reader checked with tools nobody here wrote: fsck.vfat, mtools, mkfs.vfat, blkid.

use nodeforge::fat::{read_fat, FatFile, FatImage, FatOptions, FileData};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// Run an external tool; a missing tool is a clear failure (CI installs them, tests/setup-host.sh).
fn run(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): install dosfstools and mtools"))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `fsck.vfat -n` must exit 0 and print only its banner and the summary line.
fn assert_fsck_clean(img: &Path) {
    let o = run("fsck.vfat", &["-n", "-V", img.to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "fsck.vfat failed:\n{out}");
    for bad in [
        "differences",
        "Free cluster summary wrong",
        "Dirty",
        "Bad",
        "invalid",
        "wrong",
        "Orphan",
    ] {
        assert!(!out.contains(bad), "fsck.vfat reported {bad:?}:\n{out}");
    }
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().all(|l| l.starts_with("fsck.fat")
            || l.contains(" files, ")
            || l.starts_with("Starting ")),
        "unexpected fsck.vfat output:\n{out}"
    );
}

/// The test tree: nested dirs, 300 files in one dir, long/mixed-case/unicode names, an empty
/// file, files of 512..4096 bytes (one is exactly one cluster) and a multi-MB file from a path.
fn tree(big: &Path) -> Vec<FatFile> {
    let b = |p: &str, d: Vec<u8>| FatFile {
        path: p.to_string(),
        data: FileData::Bytes(d),
    };
    let mut v = vec![
        b("config.txt", b"[all]\narm_64bit=1\n".to_vec()),
        b(
            "CMDLINE.TXT",
            b"console=serial0,115200 root=LABEL=x rootwait\n".to_vec(),
        ),
        b("overlays/README", b"overlays here\n".to_vec()),
        b("overlays/dwc2.dtbo", noise(1, 1500)),
        b("overlays/overlay_map.dtb", noise(2, 9000)),
        b("overlays/sub/deeper/deep.dtbo", noise(3, 700)),
        b("empty", vec![]),
        b("c512.bin", noise(4, 512)),
        b("c1024.bin", noise(5, 1024)),
        b("c2048.bin", noise(6, 2048)),
        b("c4096.bin", noise(7, 4096)),
        b("Mixed Case Name.TXT", b"mixed".to_vec()),
        b("ünïcødé ✓ name.txt", b"utf16".to_vec()),
        b(&format!("{}.long", "a".repeat(200)), b"long".to_vec()),
        b("bcm2711-rpi-4-b.dtb", noise(8, 33_000)),
        b(".hidden-ish", b"dot".to_vec()),
        b("k3s/bin/install.sh", b"#!/bin/sh\necho hi\n".to_vec()),
        FatFile {
            path: "k3s/bin/k3s".into(),
            data: FileData::Path(big.to_path_buf()),
        },
    ];
    for i in 0..300 {
        v.push(b(
            &format!("many/Many Files Number {i:03}.Data"),
            format!("file {i}\n").into_bytes(),
        ));
    }
    v
}

/// A ~6 MiB file with a 1 MiB all-zero region in the middle.
fn big_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("k3s-binary");
    let mut d = noise(99, 6 << 20);
    d[(2 << 20)..(3 << 20)].fill(0);
    d.extend_from_slice(b"tail");
    std::fs::write(&p, d).unwrap();
    p
}

fn opts(min_size: u64) -> FatOptions {
    FatOptions {
        label: "bootfs".into(),
        volume_id: 0x1234_abcd,
        timestamp: 1_700_000_000,
        min_size,
    }
}

fn build(files: Vec<FatFile>, o: FatOptions, path: &Path, offset: u64) -> FatImage {
    let img = FatImage::new(files, o).unwrap();
    let f = File::create(path).unwrap();
    f.set_len(offset + img.size()).unwrap();
    img.write_at(&f, offset).unwrap();
    img
}

fn expected(files: &[FatFile]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|f| {
            let d = match &f.data {
                FileData::Bytes(b) => b.clone(),
                FileData::Path(p) => std::fs::read(p).unwrap(),
            };
            (f.path.clone(), d)
        })
        .collect()
}

/// Files under `root` (relative `/` paths) with their bytes.
fn local_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn our_volume_passes_fsck_and_reads_back_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let big = big_file(dir.path());
    let files = tree(&big);
    let want = expected(&files);
    let img_path = dir.path().join("fat.img");
    let img = build(files.clone(), opts(0), &img_path, 0);
    let size = img.size();
    assert_eq!(size % (1 << 20), 0);
    assert!(
        size >= 33 << 20,
        "FAT32 below ~33 MiB is invalid, got {size}"
    );
    assert!(img.cluster_count() >= 65525);
    let cs = img.cluster_size() as usize;
    assert!(
        want.iter()
            .any(|(p, d)| p.starts_with('c') && d.len() == cs),
        "no file of exactly one cluster ({cs})"
    );

    if let Ok(keep) = std::env::var("FAT_TEST_KEEP") {
        std::fs::copy(&img_path, keep).unwrap();
    }
    assert_fsck_clean(&img_path);

    // mtools: every path (with long names) listed, bytes equal.
    let ip = img_path.to_str().unwrap();
    let o = run("mdir", &["-/", "-b", "-i", ip, "::"]);
    assert!(o.status.success(), "mdir failed: {}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout);
    for p in want.keys() {
        assert!(
            listed.lines().any(|l| l.trim_end() == format!("::/{p}")),
            "mdir does not list {p}:\n{listed}"
        );
    }
    // Timestamps from opts.timestamp (1_700_000_000 = 2023-11-14 22:13:20 UTC).
    let o = run("mdir", &["-i", ip, "::overlays"]);
    let out = text(&o);
    assert!(
        out.contains("2023-11-14  22:13") && out.contains("dwc2.dtbo"),
        "mdir ::overlays:\n{out}"
    );
    let o = run("mcopy", &["-i", ip, "::k3s/bin/k3s", "-"]);
    assert!(o.status.success(), "mcopy failed: {}", text(&o));
    assert!(o.stdout == want["k3s/bin/k3s"], "mcopy of k3s differs");
    let outdir = dir.path().join("mcopy-out");
    std::fs::create_dir(&outdir).unwrap();
    let o = run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            ip,
            "::*",
            &format!("{}/", outdir.display()),
        ],
    );
    assert!(o.status.success(), "mcopy -s failed: {}", text(&o));
    let got = local_tree(&outdir);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, d) in &want {
        assert!(got[p] == *d, "mcopy bytes differ for {p}");
    }

    // Our own reader.
    let f = File::open(&img_path).unwrap();
    let back = read_fat(&f, 0, size).unwrap();
    assert_eq!(back.label, "bootfs");
    assert_eq!(back.volume_id, 0x1234_abcd);
    let back: BTreeMap<String, Vec<u8>> = back
        .files
        .into_iter()
        .map(|f| match f.data {
            FileData::Bytes(b) => (f.path, b),
            FileData::Path(_) => panic!("read_fat returned a path"),
        })
        .collect();
    assert!(back == want, "read_fat tree differs");

    // blkid (util-linux) agrees on type, label and UUID.
    if let Ok(o) = Command::new("blkid")
        .args(["-p", "-o", "export", ip])
        .output()
    {
        let out = text(&o);
        assert!(out.contains("TYPE=vfat"), "{out}");
        assert!(out.contains("LABEL=bootfs"), "{out}");
        assert!(out.contains("UUID=1234-ABCD"), "{out}");
        assert!(out.contains("VERSION=FAT32"), "{out}");
    }

    // Same inputs, same bytes; written at an offset, the same bytes land there.
    // Input order does not matter: entries are sorted.
    let again = dir.path().join("again.img");
    let mut reversed = files.clone();
    reversed.reverse();
    build(reversed, opts(0), &again, 0);
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(&img_path).unwrap(),
        "two builds differ"
    );
    let at = dir.path().join("at.img");
    build(files, opts(0), &at, 3 << 20);
    let bytes = std::fs::read(&at).unwrap();
    assert!(bytes[..3 << 20].iter().all(|&b| b == 0));
    assert!(
        bytes[3 << 20..] == std::fs::read(&img_path).unwrap()[..],
        "volume at an offset differs"
    );
    let back = read_fat(&File::open(&at).unwrap(), 3 << 20, size).unwrap();
    assert!(
        expected(&back.files) == want,
        "read_fat at an offset differs"
    );
    let o = run(
        "mdir",
        &["-i", &format!("{}@@3M", at.display()), "::k3s/bin"],
    );
    assert!(
        o.status.success() && text(&o).contains("install.sh"),
        "mdir at offset: {}",
        text(&o)
    );
}

#[test]
fn big_volume_uses_4k_clusters_and_leaves_holes() {
    let dir = tempfile::tempdir().unwrap();
    let big = big_file(dir.path());
    let img_path = dir.path().join("big.img");
    let mut img = FatImage::new(tree(&big), opts(600 << 20)).unwrap();
    img.set_hidden_sectors(8192);
    let f = File::create(&img_path).unwrap();
    f.set_len(img.size()).unwrap();
    img.write_at(&f, 0).unwrap();
    drop(f);
    let head = std::fs::read(&img_path).unwrap()[..4096].to_vec();
    assert_eq!(head[28..32], 8192u32.to_le_bytes(), "hidden sectors");
    assert_eq!(head[..512], head[6 * 512..7 * 512], "backup boot sector");
    assert_eq!(img.size(), 600 << 20);
    assert_eq!(img.cluster_size(), 4096);
    assert_fsck_clean(&img_path);
    let back = read_fat(&File::open(&img_path).unwrap(), 0, img.size()).unwrap();
    assert!(
        expected(&back.files) == expected(&tree(&big)),
        "read_fat differs (4 KiB clusters)"
    );
    let allocated = std::fs::metadata(&img_path).unwrap().blocks() * 512;
    // ~6 MiB of data (1 MiB of it zeros), FATs of ~150 KiB each: well under 10 MiB on disk.
    assert!(
        allocated < 10 << 20,
        "{allocated} bytes allocated: zero regions were written"
    );
    let o = run("mdir", &["-i", img_path.to_str().unwrap(), "::"]);
    let out = text(&o);
    assert!(
        out.contains("bootfs") || out.contains("BOOTFS"),
        "volume label missing:\n{out}"
    );
}

#[test]
fn real_tool_volumes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let put = |rel: &str, data: &[u8]| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    put("config.txt", b"[all]\n");
    put("cmdline.txt", b"console=tty1 root=PARTUUID=abcd-02\n");
    put("overlays/dwc2.dtbo", &noise(1, 3000));
    put("overlays/sub/deep file.dtbo", &noise(2, 100));
    put("empty", b"");
    put("Kernel8.IMG", &noise(3, 300_000));
    put(&format!("{}.txt", "L".repeat(100)), b"long");
    let want = local_tree(&src);

    for (fat, kib, label) in [
        ("32", "65536", "BOOTFS"),
        ("16", "20000", "RASPIFIRM"),
        ("12", "4000", "CIDATA"),
    ] {
        let img = dir.path().join(format!("fat{fat}.img"));
        let ip = img.to_str().unwrap();
        let o = run(
            "mkfs.vfat",
            &["-F", fat, "-n", label, "-i", "0a7b5ac5", "-C", ip, kib],
        );
        assert!(o.status.success(), "mkfs.vfat: {}", text(&o));
        let mut args = vec!["-s", "-i", ip];
        let entries: Vec<String> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path().to_str().unwrap().to_string())
            .collect();
        args.extend(entries.iter().map(|s| s.as_str()));
        args.push("::/");
        let o = run("mcopy", &args);
        assert!(o.status.success(), "mcopy: {}", text(&o));

        let f = File::open(&img).unwrap();
        let len = f.metadata().unwrap().len();
        let base = read_fat(&f, 0, len).unwrap();
        assert_eq!(base.label, label);
        assert_eq!(base.volume_id, 0x0a7b_5ac5);
        let got = expected(&base.files);
        assert!(
            got == want,
            "FAT{fat}: read_fat differs: {:?}",
            got.keys().collect::<Vec<_>>()
        );

        // Rebuild what we read with our writer: fsck still clean.
        let out = dir.path().join(format!("re{fat}.img"));
        build(base.files, opts(0), &out, 0);
        assert_fsck_clean(&out);
    }
}

/// `cargo test --release --test fat_fsck bench -- --ignored --nocapture`: FAT build vs `cp`.
#[test]
#[ignore]
fn bench_write_vs_cp() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("airgap.tar");
    let chunk = noise(5, 4 << 20);
    {
        use std::io::Write;
        let mut f = File::create(&src).unwrap();
        for _ in 0..256 {
            f.write_all(&chunk).unwrap();
        }
    }
    let _ = std::fs::read(&src).map(|d| d.len()); // warm the page cache
    let t = std::time::Instant::now();
    let o = run(
        "cp",
        &[
            "--sparse=always",
            src.to_str().unwrap(),
            dir.path().join("copy").to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    let cp = t.elapsed();
    let t = std::time::Instant::now();
    let files = vec![FatFile {
        path: "k3s/airgap.tar".into(),
        data: FileData::Path(src.clone()),
    }];
    let img = build(files, opts(0), &dir.path().join("fat.img"), 0);
    let ours = t.elapsed();
    println!(
        "1 GiB file: cp {:.2}s, FAT build {:.2}s ({:.2}x), volume {} MiB, clusters {} x {}",
        cp.as_secs_f64(),
        ours.as_secs_f64(),
        ours.as_secs_f64() / cp.as_secs_f64(),
        img.size() >> 20,
        img.cluster_count(),
        img.cluster_size()
    );
    assert_fsck_clean(&dir.path().join("fat.img"));
}

/// `cargo test --release --test fat_fsck bench_read -- --ignored --nocapture`: read a pi-gen
/// shaped FAT (512 MiB, `-s 1`, ~80 MB of files) with read_fat.
#[test]
#[ignore]
fn bench_read_pi_shaped() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("boot");
    std::fs::create_dir_all(src.join("overlays")).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("kernel{i}.img")), noise(i, 10 << 20)).unwrap();
    }
    std::fs::write(src.join("initramfs8"), noise(9, 30 << 20)).unwrap();
    for i in 0..300 {
        std::fs::write(
            src.join(format!("overlays/ov{i}.dtbo")),
            noise(i + 100, 5000),
        )
        .unwrap();
    }
    let img = dir.path().join("pi.img");
    let ip = img.to_str().unwrap();
    let o = run(
        "mkfs.vfat",
        &["-F", "32", "-s", "1", "-n", "bootfs", "-C", ip, "524288"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        "mcopy",
        &[
            "-s",
            "-i",
            ip,
            src.join("overlays").to_str().unwrap(),
            src.join("initramfs8").to_str().unwrap(),
            src.join("kernel0.img").to_str().unwrap(),
            src.join("kernel1.img").to_str().unwrap(),
            src.join("kernel2.img").to_str().unwrap(),
            src.join("kernel3.img").to_str().unwrap(),
            "::/",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let f = File::open(&img).unwrap();
    let t = std::time::Instant::now();
    let base = read_fat(&f, 0, 512 << 20).unwrap();
    let el = t.elapsed();
    assert_eq!(base.files.len(), 305);
    let t = std::time::Instant::now();
    let o = run("cp", &[ip, dir.path().join("copy.img").to_str().unwrap()]);
    assert!(o.status.success());
    println!(
        "read_fat of 70 MB in 512 B clusters: {:.2}s (cp of the 512 MiB image: {:.2}s)",
        el.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}
