//! The bootloader card image, checked with sfdisk, fsck.vfat and mtools.

mod eeprom_common;

use eeprom_common::*;
use nodeforge::eeprom::{read_bootconf, render_bootconf, BootOrder};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, Output};

const PART_OFFSET: u64 = 2048 * 512;

fn nodeforge(args: &[&str], dir: &Path, sde: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodeforge"));
    c.args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(v) = sde {
        c.env("SOURCE_DATE_EPOCH", v);
    }
    c.output().expect("running nodeforge")
}

fn tool(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} is needed for this test (apt-get install dosfstools mtools fdisk): {e}")
    })
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Inputs in a temp dir: a synthetic pieeprom with a date in its name and a fake recovery.bin.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pieeprom-2025-05-08.bin"),
        build_image(ORIGINAL_CONF, false),
    )
    .unwrap();
    std::fs::write(dir.path().join("recovery.bin"), noise(42, 100_000)).unwrap();
    dir
}

fn make_card(dir: &Path, out: &str, extra: &[&str], sde: Option<&str>) {
    let mut args = vec![
        "eeprom",
        "--eeprom",
        "pieeprom-2025-05-08.bin",
        "--recovery",
        "recovery.bin",
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    let o = nodeforge(&args, dir, sde);
    ok(&o, "nodeforge eeprom");
}

fn mcopy(img: &Path, name: &str, dest: &Path) -> Vec<u8> {
    let spec = format!("{}@@{PART_OFFSET}", img.display());
    ok(
        &tool(
            "mcopy",
            &[
                "-n",
                "-i",
                &spec,
                &format!("::/{name}"),
                dest.to_str().unwrap(),
            ],
        ),
        "mcopy",
    );
    std::fs::read(dest).unwrap()
}

#[test]
fn card_layout_and_contents() {
    let dir = setup();
    let d = dir.path();
    make_card(
        d,
        "card.img",
        &["--boot-order", "usb", "--set", "USB_MSD_STARTUP_DELAY=3000"],
        Some("1700000000"),
    );
    let img = d.join("card.img");
    assert!(!d.join("card.img.partial").exists());

    // MBR: rpi-eeprom's recovery label-id, p1 at 2048, type c.
    let dump = ok(
        &tool("sfdisk", &["--dump", img.to_str().unwrap()]),
        "sfdisk --dump",
    );
    assert!(dump.contains("label: dos"), "{dump}");
    assert!(dump.contains("label-id: 0x0a7b5ac5"), "{dump}");
    let p1 = dump
        .lines()
        .find(|l| l.contains("start="))
        .expect("a partition");
    assert!(
        p1.contains("start=        2048") || p1.contains("start=2048"),
        "{p1}"
    );
    assert!(p1.contains("type=c"), "{p1}");
    assert_eq!(dump.lines().filter(|l| l.contains("start=")).count(), 1);

    // FAT32 passes fsck (on a copy of the partition: fsck.vfat has no offset option).
    let bytes = std::fs::read(&img).unwrap();
    let part = d.join("p1.img");
    std::fs::write(&part, &bytes[PART_OFFSET as usize..]).unwrap();
    ok(
        &tool("fsck.vfat", &["-n", part.to_str().unwrap()]),
        "fsck.vfat -n",
    );
    let bpb = &bytes[PART_OFFSET as usize..PART_OFFSET as usize + 512];
    assert_eq!(&bpb[82..87], b"FAT32");
    // Hidden sectors = partition start, as mkfs.fat on the partition device writes it.
    assert_eq!(u32::from_le_bytes(bpb[28..32].try_into().unwrap()), 2048);

    // Files.
    let spec = format!("{}@@{PART_OFFSET}", img.display());
    let listing = ok(&tool("mdir", &["-i", &spec, "-b", "::/"]), "mdir");
    for f in ["recovery.bin", "pieeprom.bin", "pieeprom.sig", "README.txt"] {
        assert!(
            listing
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("::/{f}"))),
            "{f} missing from:\n{listing}"
        );
    }

    let eeprom = mcopy(&img, "pieeprom.bin", &d.join("out.bin"));
    let want = render_bootconf(
        BootOrder::Usb,
        &[("USB_MSD_STARTUP_DELAY".into(), "3000".into())],
    )
    .unwrap();
    assert_eq!(read_bootconf(&eeprom).unwrap(), want);
    assert!(want.contains("BOOT_ORDER=0xf14\n"));
    let original = build_image(ORIGINAL_CONF, false);
    assert_eq!(eeprom[..BOOTCONF_AT], original[..BOOTCONF_AT]);
    assert_eq!(eeprom[SIG_AT..], original[SIG_AT..]);

    let sig = String::from_utf8(mcopy(&img, "pieeprom.sig", &d.join("out.sig"))).unwrap();
    let sha = hex::encode(Sha256::digest(&eeprom));
    assert_eq!(sig, format!("{sha}\nts: 1700000000\n"));

    assert_eq!(
        mcopy(&img, "recovery.bin", &d.join("out.rec")),
        noise(42, 100_000)
    );
    let readme = String::from_utf8(mcopy(&img, "README.txt", &d.join("out.txt"))).unwrap();
    assert!(
        readme.contains("BOOT_ORDER=0xf14") && readme.contains(&sha),
        "{readme}"
    );

    // --show reads the card's EEPROM image back.
    let o = nodeforge(&["eeprom", "--show", "out.bin"], d, None);
    assert_eq!(ok(&o, "--show"), want);
}

#[test]
fn card_is_deterministic_and_dated_from_inputs() {
    let dir = setup();
    let d = dir.path();
    make_card(d, "a.img", &["--boot-order", "0xf41"], None);
    make_card(d, "b.img", &["--boot-order", "0xf41"], None);
    let a = std::fs::read(d.join("a.img")).unwrap();
    assert_eq!(a, std::fs::read(d.join("b.img")).unwrap());
    // Without SOURCE_DATE_EPOCH the ts comes from the EEPROM file name: 2025-05-08 00:00 UTC.
    let sig = String::from_utf8(mcopy(&d.join("a.img"), "pieeprom.sig", &d.join("a.sig"))).unwrap();
    assert!(sig.ends_with("\nts: 1746662400\n"), "{sig}");
    // A different boot order gives a different card.
    make_card(d, "c.img", &["--boot-order", "network"], None);
    assert_ne!(a, std::fs::read(d.join("c.img")).unwrap());
}

#[test]
fn bad_eeprom_leaves_no_output() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(d.join("pieeprom-2025-05-08.bin"), noise(1, IMAGE_SIZE)).unwrap();
    let o = nodeforge(
        &[
            "eeprom",
            "--eeprom",
            "pieeprom-2025-05-08.bin",
            "--recovery",
            "recovery.bin",
            "-o",
            "card.img",
        ],
        d,
        None,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pieeprom-2025-05-08.bin"), "{err}");
    assert!(!d.join("card.img").exists() && !d.join("card.img.partial").exists());
}

#[test]
fn verified_pins_are_fetched_and_checked() {
    let dir = setup();
    let d = dir.path();
    let eeprom = d.join("pieeprom-2025-05-08.bin");
    let recovery = d.join("recovery.bin");
    let sha = |p: &Path| hex::encode(Sha256::digest(std::fs::read(p).unwrap()));
    let pins = |rec_sha: &str| {
        format!(
            "repo = \"raspberrypi/rpi-eeprom\"\ncommit = \"{c}\"\nrelease_date = \"2026-09-23\"\n\
             [pieeprom]\nurl = \"file://{e}\"\nsha256 = \"{es}\"\nverified = true\n\
             [recovery]\nurl = \"file://{r}\"\nsha256 = \"{rec_sha}\"\nverified = true\n",
            c = "0".repeat(40),
            e = eeprom.display(),
            es = sha(&eeprom),
            r = recovery.display(),
        )
    };
    std::fs::write(d.join("pins.toml"), pins(&sha(&recovery))).unwrap();
    let cache = d.join("cache");
    let cache = cache.to_str().unwrap();
    let args = [
        "eeprom",
        "--pins",
        "pins.toml",
        "--cache-dir",
        cache,
        "-o",
        "card.img",
    ];
    ok(&nodeforge(&args, d, None), "nodeforge eeprom with pins");
    let img = d.join("card.img");
    let got = mcopy(&img, "pieeprom.bin", &d.join("got.bin"));
    assert_eq!(
        read_bootconf(&got).unwrap(),
        render_bootconf(BootOrder::Usb, &[]).unwrap()
    );
    // The ts comes from the pinned file's name, not from the cache path it was fetched to.
    let sig = String::from_utf8(mcopy(&img, "pieeprom.sig", &d.join("got.sig"))).unwrap();
    assert!(sig.ends_with("\nts: 1746662400\n"), "{sig}");

    // A wrong digest is refused and nothing is written.
    std::fs::write(d.join("pins.toml"), pins(&"ab".repeat(32))).unwrap();
    let args = [
        "eeprom",
        "--pins",
        "pins.toml",
        "--cache-dir",
        cache,
        "-o",
        "bad.img",
    ];
    let o = nodeforge(&args, d, None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("sha256"));
    assert!(!d.join("bad.img").exists());
}
