//! Bad input for the FAT writer and reader: clear errors, never a panic.

use nodeforge::fat::{read_fat, FatFile, FatImage, FatOptions, FileData};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn opts(label: &str) -> FatOptions {
    FatOptions {
        label: label.into(),
        volume_id: 7,
        timestamp: 0,
        min_size: 0,
    }
}

fn bytes(p: &str) -> FatFile {
    FatFile {
        path: p.into(),
        data: FileData::Bytes(b"x".to_vec()),
    }
}

fn err_of(files: Vec<FatFile>, o: FatOptions) -> String {
    match FatImage::new(files, o) {
        Ok(_) => panic!("accepted bad input"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn invalid_names_are_rejected_with_the_name() {
    for bad in [
        "a\0b",
        "dir/",
        "/abs",
        "a//b",
        "what?",
        "a:b",
        "star*",
        "q\"",
        "lt<",
        "gt>",
        "pipe|",
        "back\\slash",
        "dot.",
        "dir/../x",
        "./x",
    ] {
        let msg = err_of(vec![bytes(bad)], opts("OK"));
        assert!(msg.contains("FAT"), "{bad:?}: {msg}");
        assert!(
            msg.contains(&format!("{bad:?}")) || msg.contains(bad),
            "{bad:?} not named in: {msg}"
        );
    }
    let long = "n".repeat(256);
    let msg = err_of(vec![bytes(&long)], opts("OK"));
    assert!(msg.contains("255"), "{msg}");
    // 255 UTF-16 units is fine.
    assert!(FatImage::new(vec![bytes(&"n".repeat(255))], opts("OK")).is_ok());
}

#[test]
fn bad_labels_and_clashes() {
    let msg = err_of(vec![], opts("TWELVE_CHARS"));
    assert!(msg.contains("TWELVE_CHARS") && msg.contains("11"), "{msg}");
    assert!(FatImage::new(vec![], opts("a.b")).is_err());
    assert!(FatImage::new(vec![], opts("ÉTÉ")).is_err());
    let msg = err_of(vec![bytes("Boot/x"), bytes("boot/y")], opts("OK"));
    assert!(msg.contains("case"), "{msg}");
    let msg = err_of(vec![bytes("a"), bytes("a/b")], opts("OK"));
    assert!(msg.contains("a/b"), "{msg}");
}

#[test]
fn too_big_missing_and_changing_files() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge");
    File::create(&huge).unwrap().set_len(4 << 30).unwrap();
    let f = FatFile {
        path: "k3s/airgap.tar".into(),
        data: FileData::Path(huge),
    };
    let msg = err_of(vec![f], opts("OK"));
    assert!(
        msg.contains("k3s/airgap.tar") && msg.contains("4 GiB"),
        "{msg}"
    );

    let missing = dir.path().join("missing");
    let f = FatFile {
        path: "k3s/k3s".into(),
        data: FileData::Path(missing.clone()),
    };
    let msg = err_of(vec![f], opts("OK"));
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    let grows = dir.path().join("grows");
    std::fs::write(&grows, vec![1u8; 10_000]).unwrap();
    let f = FatFile {
        path: "k3s/k3s".into(),
        data: FileData::Path(grows.clone()),
    };
    let img = FatImage::new(vec![f], opts("OK")).unwrap();
    std::fs::write(&grows, vec![1u8; 10_001]).unwrap();
    let out = File::create(dir.path().join("out.img")).unwrap();
    out.set_len(img.size()).unwrap();
    let msg = format!("{:#}", img.write_at(&out, 0).unwrap_err());
    assert!(
        msg.contains("grows") && msg.contains("changed size"),
        "{msg}"
    ); // Checked before any write: the output is untouched.
    let written = std::fs::read(dir.path().join("out.img")).unwrap();
    assert!(written.iter().all(|&b| b == 0), "partial FAT written");
}

/// Read garbage: an error (or, for lucky bytes, a result), never a panic escaping, never a hang.
fn read_no_panic(f: &File, off: u64, len: u64) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| read_fat(f, off, len))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => panic!("read_fat panicked"),
    }
}

#[test]
fn garbage_and_corrupt_volumes_give_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.img");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let junk: Vec<u8> = (0..(2 << 20)).map(|_| rnd() as u8).collect();
    std::fs::write(&p, &junk).unwrap();
    let f = File::open(&p).unwrap();
    let msg = read_no_panic(&f, 0, 2 << 20).unwrap_err();
    assert!(
        msg.contains("FAT volume") && msg.contains("boot sector"),
        "{msg}"
    );
    let zeros = dir.path().join("zeros.img");
    File::create(&zeros).unwrap().set_len(1 << 20).unwrap();
    assert!(read_no_panic(&File::open(&zeros).unwrap(), 0, 1 << 20).is_err());
    // A window past the end of the file, and an empty one.
    assert!(read_no_panic(&f, 10 << 20, 1 << 20).is_err());
    assert!(read_no_panic(&f, 0, 0).is_err());

    // Our own valid volume, then corrupted at random in its metadata: no panic, no hang.
    let files: Vec<FatFile> = (0..40)
        .map(|i| FatFile {
            path: format!("d{}/sub/file number {i}.txt", i % 3),
            data: FileData::Bytes(vec![i as u8; 700 * i]),
        })
        .collect();
    let img = FatImage::new(files, opts("CORRUPT")).unwrap();
    let good = dir.path().join("good.img");
    let out = File::create(&good).unwrap();
    out.set_len(img.size()).unwrap();
    img.write_at(&out, 0).unwrap();
    drop(out);
    let pristine = std::fs::read(&good).unwrap();
    let f = File::open(&good).unwrap();
    read_no_panic(&f, 0, img.size()).unwrap();
    // Truncated window: the tail (data) is missing.
    let _ = read_no_panic(&f, 0, 1 << 20);

    // Corrupt the boot sector, the used part of FAT #1 and the directories (start of data).
    let fat_sectors = u32::from_le_bytes(pristine[36..40].try_into().unwrap()) as usize;
    let data = (32 + 2 * fat_sectors) * 512;
    let regions = [(0usize, 512usize), (16384, 4096), (data, 64 << 10)];
    let meta = data + (64 << 10);
    let bad = dir.path().join("bad.img");
    std::fs::write(&bad, &pristine).unwrap();
    let b = File::options().read(true).write(true).open(&bad).unwrap();
    let mut errors = 0;
    for round in 0..300 {
        let mut copy = pristine[..meta].to_vec();
        for _ in 0..(1 + round % 8) {
            let (start, len) = regions[round % 3];
            let at = start + (rnd() % len as u64) as usize;
            copy[at] = rnd() as u8;
        }
        b.write_all_at(&copy, 0).unwrap();
        if read_no_panic(&b, 0, img.size()).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0, "no corruption was ever detected");
}
