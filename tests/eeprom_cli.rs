//! `nodeforge eeprom` command line: --show, argument checks, refusal of unverified pins.

mod eeprom_common;

use eeprom_common::*;
use std::path::Path;
use std::process::{Command, Output};

fn nodeforge(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("running nodeforge")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn show_prints_the_embedded_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pieeprom.bin"),
        build_image(ORIGINAL_CONF, true),
    )
    .unwrap();
    let out = nodeforge(&["eeprom", "--show", "pieeprom.bin"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), ORIGINAL_CONF);
}

#[test]
fn show_refuses_bad_images_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short.bin"), [0u8; 1000]).unwrap();
    std::fs::write(dir.path().join("garbage.bin"), noise(3, IMAGE_SIZE)).unwrap();
    for f in ["short.bin", "garbage.bin", "missing.bin"] {
        let out = nodeforge(&["eeprom", "--show", f], dir.path());
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(f), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn argument_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pieeprom.bin"),
        build_image(ORIGINAL_CONF, false),
    )
    .unwrap();
    std::fs::write(dir.path().join("recovery.bin"), b"rec").unwrap();
    let base = [
        "eeprom",
        "--eeprom",
        "pieeprom.bin",
        "--recovery",
        "recovery.bin",
    ];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        nodeforge(&a, dir.path())
    };
    for (extra, want) in [
        (vec!["--boot-order", "0xf0", "-o", "c.img"], "nibble"),
        (
            vec!["--boot-order", "usb-first", "-o", "c.img"],
            "boot order",
        ),
        (vec!["--set", "lower=1", "-o", "c.img"], "upper-case"),
        (
            vec!["--set", "BOOT_ORDER=0xf41", "-o", "c.img"],
            "--boot-order",
        ),
        (vec![], "-o CARD.IMG"),
    ] {
        let out = run(&extra);
        assert!(!out.status.success(), "{extra:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // No partial output left behind.
    assert!(!dir.path().join("c.img").exists());
    assert!(!dir.path().join("c.img.partial").exists());
}

#[test]
fn too_large_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pieeprom.bin"),
        build_image(ORIGINAL_CONF, false),
    )
    .unwrap();
    std::fs::write(dir.path().join("recovery.bin"), b"rec").unwrap();
    let mut args = vec![
        "eeprom".to_string(),
        "--eeprom=pieeprom.bin".into(),
        "--recovery=recovery.bin".into(),
        "-o".into(),
        "c.img".into(),
    ];
    for i in 0..12 {
        args.push(format!("--set=NETCONSOLE_{i}={}", "9".repeat(200)));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nodeforge(&a, dir.path());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("2024"), "{}", text(&out.stderr));
    assert!(!dir.path().join("c.img").exists());
}

#[test]
fn unverified_pins_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let pins = r#"
repo = "raspberrypi/rpi-eeprom"
commit = "0000000000000000000000000000000000000000"
release_date = "2026-09-23"
[pieeprom]
url = "https://example.invalid/pieeprom-2026-09-23.bin"
sha256 = "unverified"
[recovery]
url = "https://example.invalid/recovery.bin"
sha256 = "unverified"
"#;
    std::fs::write(dir.path().join("pins.toml"), pins).unwrap();
    let out = nodeforge(
        &["eeprom", "--pins", "pins.toml", "-o", "c.img"],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--eeprom") && err.contains("pieeprom-2026-09-23.bin"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("pieeprom.bin"),
        build_image(ORIGINAL_CONF, false),
    )
    .unwrap();
    let out = nodeforge(
        &[
            "eeprom",
            "--pins",
            "pins.toml",
            "--eeprom",
            "pieeprom.bin",
            "-o",
            "c.img",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--recovery"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("c.img").exists());
}

#[test]
fn builtin_pins_refuse_or_name_their_source() {
    // The shipped pins are unverified today: the command must say so rather than download.
    let dir = tempfile::tempdir().unwrap();
    let out = nodeforge(&["eeprom", "--offline", "-o", "c.img"], dir.path());
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--eeprom") || err.contains("offline"), "{err}");
}

#[test]
fn eeprom_out_writes_the_image_alone() {
    let dir = tempfile::tempdir().unwrap();
    let original = build_image(ORIGINAL_CONF, false);
    std::fs::write(dir.path().join("pieeprom.bin"), &original).unwrap();
    let out = nodeforge(
        &[
            "eeprom",
            "--eeprom",
            "pieeprom.bin",
            "--boot-order",
            "0xf461",
            "--set",
            "USB_MSD_DISCOVER_TIMEOUT=20000",
            "--eeprom-out",
            "new.bin",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("new.bin.partial").exists());
    let new = std::fs::read(dir.path().join("new.bin")).unwrap();
    assert_eq!(new.len(), IMAGE_SIZE);
    assert_eq!(new[TAIL_AT..], original[TAIL_AT..]);
    let shown = nodeforge(&["eeprom", "--show", "new.bin"], dir.path());
    assert_eq!(
        text(&shown.stdout),
        "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nENABLE_SELF_UPDATE=1\nBOOT_ORDER=0xf461\n\
         NET_INSTALL_AT_POWER_ON=1\nUSB_MSD_DISCOVER_TIMEOUT=20000\n"
    );
}

#[test]
fn offline_with_an_uncached_verified_pin_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pins = format!(
        "repo = \"raspberrypi/rpi-eeprom\"\ncommit = \"{c}\"\nrelease_date = \"2026-09-23\"\n\
         [pieeprom]\nurl = \"https://example.invalid/pieeprom-2026-09-23.bin\"\nsha256 = \"{s}\"\nverified = true\n\
         [recovery]\nurl = \"https://example.invalid/recovery.bin\"\nsha256 = \"{s}\"\nverified = true\n",
        c = "0".repeat(40),
        s = "ab".repeat(32),
    );
    std::fs::write(dir.path().join("pins.toml"), pins).unwrap();
    let out = nodeforge(
        &[
            "eeprom",
            "--pins",
            "pins.toml",
            "--offline",
            "--cache-dir",
            "cache",
            "-o",
            "c.img",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("offline"), "{err}");
    assert!(!dir.path().join("c.img").exists());
}
