//! Shared helpers for the fsmap tests: run external tools, build images, simulate a reused stick,
//! and check filesystems with e2fsck / fsck.vfat / debugfs / mtools.
#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run a tool; a missing tool fails the test with a clear message.
pub fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {prog} ({e}); install e2fsprogs, dosfstools, mtools, fdisk, util-linux (tests/setup-host.sh)")
        })
}

/// Run a tool that must succeed; returns stdout.
pub fn run_ok(prog: &str, args: &[&str]) -> String {
    let o = run(prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deterministic xorshift generator (test data only).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// A tree of files whose content has all-zero 4 KiB regions between random data.
pub fn make_tree(dir: &Path) {
    let mut r = Rng(0x1234_5678_9abc_def1);
    fs::create_dir_all(dir.join("sub/deep")).unwrap();
    let mut a = r.bytes(6000);
    a.extend(vec![0; 9000]);
    a.extend(r.bytes(5000));
    a.extend(vec![0; 16384]);
    a.extend(r.bytes(100));
    fs::write(dir.join("a.bin"), a).unwrap();
    // 8 KiB chunks [2 KiB data][4 KiB zeros][2 KiB data]: no 4 KiB filesystem block is all zero
    // (so mke2fs allocates them all), but on a partition starting 2 KiB off a 4 KiB boundary the
    // zeros are whole 4 KiB image blocks, i.e. holes inside a file.
    let mut pad = Vec::new();
    for _ in 0..128 {
        pad.extend(r.bytes(2048));
        pad.extend(vec![0; 4096]);
        pad.extend(r.bytes(2048));
    }
    fs::write(dir.join("pad.bin"), pad).unwrap();
    let mut z = Vec::new();
    for _ in 0..40 {
        z.extend(r.bytes(3000));
        z.extend(vec![0; 12000]);
    }
    fs::write(dir.join("z12k.bin"), z).unwrap();
    fs::write(dir.join("zeros.bin"), vec![0; 65536]).unwrap();
    fs::write(dir.join("empty"), b"").unwrap();
    for i in 0..40 {
        let n = (r.next() % 3000) as usize + 1;
        fs::write(dir.join(format!("sub/deep/f{i:02}.txt")), r.bytes(n)).unwrap();
    }
    fs::write(dir.join("sub/note.txt"), b"hello from fsmap\n").unwrap();
}

/// Copy every entry of `dir` into the FAT image `img` (mtools).
pub fn mcopy_tree(img: &Path, dir: &Path) {
    let mut args = vec!["-s".to_string(), "-i".into(), img.display().to_string()];
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    names.sort();
    args.extend(names);
    args.push("::/".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok("mcopy", &a);
}

/// Copy `src` into `img` at byte `offset`.
/// Write the partition table described by the sfdisk `script` onto `img`.
pub fn sfdisk(img: &Path, script: &str, work: &Path) {
    let sf = work.join("layout.sfdisk");
    std::fs::write(&sf, script).unwrap();
    let o = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(img)
        .stdin(std::fs::File::open(&sf).unwrap())
        .output()
        .expect("cannot run sfdisk (install fdisk)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

pub fn place(img: &Path, src: &Path, offset: u64) {
    let data = fs::read(src).unwrap();
    let f = fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&data, offset).unwrap();
}

/// Turn every all-zero 4 KiB block of `img` into a hole, as nodeforge's unpack does.
pub fn dig_holes(img: &Path) {
    run_ok("fallocate", &["--dig-holes", &img.display().to_string()]);
}

/// Partitions `(start, size)` in bytes, from `sfdisk --json`.
pub fn partitions(img: &Path) -> Vec<(u64, u64)> {
    let out = run_ok("sfdisk", &["--json", &img.display().to_string()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * sector,
                p["size"].as_u64().unwrap() * sector,
            )
        })
        .collect()
}

/// Data extents from SEEK_DATA/SEEK_HOLE: what a plain bmap maps.
pub fn seek_data_ranges(img: &Path) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let f = File::open(img).unwrap();
    let size = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Ok(s) = seek(&f, SeekFrom::Data(pos)) else {
            break;
        };
        if s >= size {
            break;
        }
        let e = seek(&f, SeekFrom::Hole(s)).unwrap().min(size);
        out.push((s, e - s));
        pos = e;
    }
    out
}

/// A "used stick" the size of `img` full of old bytes, with only `ranges` of `img` written.
pub fn stick_copy(img: &Path, ranges: &[(u64, u64)], stick: &Path) {
    let src = File::open(img).unwrap();
    let size = src.metadata().unwrap().len();
    let dst = File::create(stick).unwrap();
    let mut r = Rng(0xA5A5_0000_1111_2222);
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < size {
        for (i, b) in buf.iter_mut().enumerate() {
            // Mostly 0xA5 with random runs, like a stick that held another image.
            *b = if i % 4096 < 2048 { 0xA5 } else { 0 };
        }
        let noise = r.bytes(1 << 19);
        for (i, n) in noise.iter().enumerate() {
            buf[(i / 2048) * 4096 + 2048 + i % 2048] = *n | 1;
        }
        let n = buf.len().min((size - pos) as usize);
        dst.write_all_at(&buf[..n], pos).unwrap();
        pos += n as u64;
    }
    let mut chunk = vec![0u8; 1 << 20];
    for &(s, l) in ranges {
        let mut done = 0;
        while done < l {
            let n = chunk.len().min((l - done) as usize);
            src.read_exact_at(&mut chunk[..n], s + done).unwrap();
            dst.write_all_at(&chunk[..n], s + done).unwrap();
            done += n as u64;
        }
    }
}

/// Bytes `start..start+len` of `img` into a new file `out`.
pub fn extract(img: &Path, start: u64, len: u64, out: &Path) {
    let src = File::open(img).unwrap();
    let mut data = vec![0u8; len as usize];
    src.read_exact_at(&mut data, start).unwrap();
    fs::write(out, data).unwrap();
}

/// Filesystem type of a partition image per `blkid -p` ("ext4", "vfat", ...; "" if none).
pub fn fs_type(part: &Path) -> String {
    let o = run(
        "blkid",
        &[
            "-p",
            "-o",
            "value",
            "-s",
            "TYPE",
            &part.display().to_string(),
        ],
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Dump every file of a partition image into `out` (debugfs rdump or mcopy -s).
pub fn dump_tree(part: &Path, kind: &str, out: &Path) -> Result<(), String> {
    fs::create_dir_all(out).unwrap();
    let p = part.display().to_string();
    let o = if kind.starts_with("ext") {
        run(
            "debugfs",
            &["-R", &format!("rdump / {}", out.display()), &p],
        )
    } else {
        run(
            "mcopy",
            &["-s", "-n", "-i", &p, "::/*", &out.display().to_string()],
        )
    };
    let err = String::from_utf8_lossy(&o.stderr);
    let bad = err
        .lines()
        .any(|l| !l.starts_with("debugfs ") && !l.trim().is_empty() && !l.contains("Skipping"));
    if !o.status.success() || bad {
        return Err(format!("dump failed: {err}"));
    }
    Ok(())
}

/// Differences between two directory trees (names, kinds, contents, symlink targets).
pub fn diff_trees(a: &Path, b: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let list = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let (la, lb) = (list(a), list(b));
    if la != lb {
        out.push(format!("{}: entries {la:?} != {lb:?}", a.display()));
    }
    for name in la.iter().filter(|n| lb.contains(n)) {
        let (pa, pb) = (a.join(name), b.join(name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        if ma.file_type().is_symlink() || mb.file_type().is_symlink() {
            if fs::read_link(&pa).ok() != fs::read_link(&pb).ok() {
                out.push(format!("{}: symlink differs", pa.display()));
            }
        } else if ma.is_dir() && mb.is_dir() {
            out.extend(diff_trees(&pa, &pb));
        } else if ma.is_file() && mb.is_file() {
            if fs::read(&pa).unwrap() != fs::read(&pb).unwrap() {
                out.push(format!("{}: content differs", pa.display()));
            }
        } else {
            out.push(format!("{}: kind differs", pa.display()));
        }
    }
    out
}

/// Filesystem check of a partition image; `Err` with the tool output when it is not clean.
pub fn fsck(part: &Path, kind: &str) -> Result<(), String> {
    let p = part.display().to_string();
    let o = if kind.starts_with("ext") {
        run("e2fsck", &["-fn", &p])
    } else {
        run("fsck.vfat", &["-n", &p])
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

/// For each filesystem partition of `orig`: is the partition in `stick` clean and are all its
/// files equal to the original's? Returns problems, each naming the partition.
pub fn check_stick(orig: &Path, stick: &Path, work: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (start, size)) in partitions(orig).into_iter().enumerate() {
        let i = i + 1;
        let op = work.join(format!("orig-p{i}.img"));
        let sp = work.join(format!("stick-p{i}.img"));
        extract(orig, start, size, &op);
        extract(stick, start, size, &sp);
        let kind = fs_type(&op);
        if kind.is_empty() {
            continue;
        }
        if let Err(e) = fsck(&sp, &kind) {
            problems.push(format!("p{i} {kind}: fsck not clean:\n{e}"));
        }
        let (od, sd) = (
            work.join(format!("orig-p{i}.d")),
            work.join(format!("stick-p{i}.d")),
        );
        let _ = fs::remove_dir_all(&od);
        let _ = fs::remove_dir_all(&sd);
        dump_tree(&op, &kind, &od).unwrap_or_else(|e| panic!("original p{i}: {e}"));
        match dump_tree(&sp, &kind, &sd) {
            Err(e) => problems.push(format!("p{i} {kind}: {e}")),
            Ok(()) => {
                for d in diff_trees(&od, &sd) {
                    problems.push(format!("p{i} {kind}: {d}"));
                }
            }
        }
        let _ = fs::remove_file(&sp);
        let _ = fs::remove_file(&op);
    }
    problems
}

/// Is `start..start+len` entirely inside one of the merged, sorted `ranges`?
pub fn covered(ranges: &[(u64, u64)], start: u64, len: u64) -> bool {
    let i = ranges.partition_point(|&(s, _)| s <= start);
    i > 0 && {
        let (s, l) = ranges[i - 1];
        start + len <= s + l
    }
}

/// Bytes of `ranges` inside `start..start+len`.
pub fn bytes_within(ranges: &[(u64, u64)], start: u64, len: u64) -> u64 {
    ranges
        .iter()
        .map(|&(s, l)| {
            let a = s.max(start);
            let b = (s + l).min(start + len);
            b.saturating_sub(a)
        })
        .sum()
}

/// From `dumpe2fs`: (block size, block count, free blocks, free block ranges `(first, count)`).
pub fn dumpe2fs(part: &Path) -> (u64, u64, u64, Vec<(u64, u64)>) {
    let out = run_ok("dumpe2fs", &[&part.display().to_string()]);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("dumpe2fs: no {name}"))
    };
    let bs = field("Block size:");
    let blocks = field("Block count:");
    let free_count = field("Free blocks:");
    let mut free = Vec::new();
    for l in out.lines() {
        let Some(list) = l.trim_start().strip_prefix("Free blocks: ") else {
            continue;
        };
        if !l.starts_with("  ") {
            continue;
        }
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
                None => (item.parse().unwrap(), item.parse().unwrap()),
            };
            free.push((a, b - a + 1));
        }
    }
    free.sort();
    (bs, blocks, free_count, free)
}

/// From `fsck.vfat -v -n`: bytes the FAT uses (everything up to the data area plus used clusters).
pub fn fat_used_bytes(part: &Path) -> u64 {
    let out = run_ok("fsck.vfat", &["-v", "-n", &part.display().to_string()]);
    let num_before = |pat: &str| -> u64 {
        out.lines()
            .find(|l| l.contains(pat))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("fsck.vfat -v: no {pat:?} in\n{out}"))
    };
    let cluster = num_before("bytes per cluster");
    let data_start: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Data area starts at byte "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("fsck.vfat -v: no data area in\n{out}"));
    let summary = out.lines().last().unwrap_or("");
    let used: u64 = summary
        .rsplit(", ")
        .next()
        .and_then(|s| s.split('/').next())
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or_else(|| panic!("fsck.vfat -v: no cluster summary in {summary:?}"));
    data_start + used * cluster
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fsmap-test")
        .tempdir()
        .unwrap()
}

/// Path helper.
pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
