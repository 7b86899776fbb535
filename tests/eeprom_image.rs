//! bootconf.txt embedding on a synthetic Pi 4 bootloader image with the real section layout.

mod eeprom_common;

use eeprom_common::*;
use nodeforge::eeprom::{
    embed_bootconf, parse_sections, read_bootconf, render_bootconf, BootOrder,
};

/// Non-pad sections: (magic, offset, name).
fn non_pad(img: &[u8]) -> Vec<(u32, usize, String)> {
    walk(img)
        .into_iter()
        .filter(|s| s.0 != PAD_MAGIC)
        .map(|(m, o, _, n)| (m, o, n))
        .collect()
}

#[test]
fn crate_walk_matches_independent_walk() {
    let img = build_image(ORIGINAL_CONF, true);
    let ours: Vec<_> = parse_sections(&img)
        .unwrap()
        .into_iter()
        .map(|s| (s.magic, s.offset, s.length, s.name.unwrap_or_default()))
        .collect();
    assert_eq!(ours, walk(&img));
    assert_eq!(read_bootconf(&img).unwrap(), ORIGINAL_CONF);
}

#[test]
fn round_trip_usb_config() {
    let img = build_image(ORIGINAL_CONF, false);
    let conf = render_bootconf(BootOrder::Usb, &[]).unwrap();
    let out = embed_bootconf(&img, &conf).unwrap();
    assert_eq!(out.len(), IMAGE_SIZE);
    assert_eq!(read_bootconf(&out).unwrap(), conf);
    // Only the bootconf.txt sector changed.
    assert_eq!(out[..BOOTCONF_AT], img[..BOOTCONF_AT]);
    assert_eq!(out[SIG_AT..], img[SIG_AT..]);
    // Embedding the same config again is a no-op.
    assert_eq!(embed_bootconf(&out, &conf).unwrap(), out);
}

/// The rewritten sector: new length, data, 0xFF to 8 bytes, PAD header of the right length, 0xFF.
fn check_sector(out: &[u8], conf: &str) {
    let n = conf.len();
    assert_eq!(be32(out, BOOTCONF_AT), FILE_MAGIC);
    assert_eq!(be32(out, BOOTCONF_AT + 4) as usize, n + 16);
    assert_eq!(&out[BOOTCONF_AT + 8..BOOTCONF_AT + 20], b"bootconf.txt");
    assert_eq!(
        &out[BOOTCONF_AT + 24..BOOTCONF_AT + 24 + n],
        conf.as_bytes()
    );
    let pad_at = (BOOTCONF_AT + 24 + n + 7) & !7;
    assert!(out[BOOTCONF_AT + 24 + n..pad_at].iter().all(|&b| b == 0xff));
    if pad_at < SIG_AT {
        assert_eq!(be32(out, pad_at), PAD_MAGIC);
        assert_eq!(be32(out, pad_at + 4) as usize, SIG_AT - pad_at - 8);
        assert!(out[pad_at + 8..SIG_AT].iter().all(|&b| b == 0xff));
    }
}

#[test]
fn longer_and_shorter_configs_keep_following_sections() {
    let img = build_image(ORIGINAL_CONF, false);
    let before = non_pad(&img);
    let extra: Vec<_> = (0..40)
        .map(|i| (format!("KEY_{i}"), format!("{}", 1000 + i)))
        .collect();
    let long = render_bootconf(BootOrder::Custom(0xf461), &extra).unwrap();
    assert!(long.len() > 500);
    for conf in [long.as_str(), "[all]\n", "", "x"] {
        let out = embed_bootconf(&img, conf).unwrap();
        assert_eq!(read_bootconf(&out).unwrap(), conf);
        assert_eq!(
            non_pad(&out),
            before,
            "sections moved for a {}-byte config",
            conf.len()
        );
        check_sector(&out, conf);
        assert_eq!(out[SIG_AT..], img[SIG_AT..]);
        // Chaining: shrink after growing and back.
        let again = embed_bootconf(&out, ORIGINAL_CONF).unwrap();
        assert_eq!(non_pad(&again), before);
        assert_eq!(read_bootconf(&again).unwrap(), ORIGINAL_CONF);
    }
}

#[test]
fn fills_the_sector_exactly_and_gap_of_eight_gets_an_empty_pad() {
    let img = build_image(ORIGINAL_CONF, false);
    // data starts at +24: 4064 bytes end 8 bytes before the next sector, 4072 end on it.
    let eight = "a".repeat(4064);
    let out = embed_bootconf(&img, &eight).unwrap();
    assert_eq!(be32(&out, SIG_AT - 8), PAD_MAGIC);
    assert_eq!(be32(&out, SIG_AT - 4), 0);
    assert_eq!(non_pad(&out), non_pad(&img));
    let full = "b".repeat(4072);
    let out = embed_bootconf(&img, &full).unwrap();
    assert_eq!(read_bootconf(&out).unwrap(), full);
    assert_eq!(be32(&out, SIG_AT), FILE_MAGIC);
    assert_eq!(non_pad(&out), non_pad(&img));
    // 4073..=4076 are within the file limit but overlap bootconf.sig.
    let e = embed_bootconf(&img, &"c".repeat(4076)).unwrap_err();
    assert!(e.to_string().contains("fit"), "{e}");
}

#[test]
fn last_four_kib_untouched() {
    for img in [
        build_image(ORIGINAL_CONF, false),
        build_image_conf_last(ORIGINAL_CONF),
    ] {
        for conf in ["", "[all]\nBOOT_ORDER=0xf14\n", &"z".repeat(4076)] {
            let Ok(out) = embed_bootconf(&img, conf) else {
                continue;
            };
            assert_eq!(out[TAIL_AT..], img[TAIL_AT..]);
        }
    }
}

#[test]
fn conf_as_last_section_gets_no_pad() {
    let img = build_image_conf_last(&"o".repeat(2000));
    let out = embed_bootconf(&img, "[all]\n").unwrap();
    assert_eq!(read_bootconf(&out).unwrap(), "[all]\n");
    let end = (BOOTCONF_AT + 24 + 6 + 7) & !7;
    // Old data erased to 0xFF up to the reserved page; no PAD header.
    assert!(out[BOOTCONF_AT + 30..TAIL_AT].iter().all(|&b| b == 0xff));
    assert_eq!(walk(&out).last().unwrap().1, BOOTCONF_AT);
    assert_eq!(be32(&out, end), 0xffff_ffff);
    // A long config may grow up to the file limit.
    let big = "q".repeat(4076);
    assert_eq!(
        read_bootconf(&embed_bootconf(&img, &big).unwrap()).unwrap(),
        big
    );
}

#[test]
fn decoy_in_read_only_area_is_left_alone() {
    let img = build_image(ORIGINAL_CONF, true);
    let out = embed_bootconf(&img, "[all]\nBOOT_ORDER=0xf14\n").unwrap();
    assert_eq!(out[..0x10000], img[..0x10000]);
    assert_eq!(read_bootconf(&out).unwrap(), "[all]\nBOOT_ORDER=0xf14\n");
}

#[test]
fn refusals() {
    let img = build_image(ORIGINAL_CONF, false);
    let msg = |r: anyhow::Result<Vec<u8>>| r.unwrap_err().to_string();

    for len in [0, 1000, IMAGE_SIZE - 1, IMAGE_SIZE + 1, 2 * 1024 * 1024] {
        let mut other = img.clone();
        other.resize(len, 0xff);
        assert!(msg(embed_bootconf(&other, "")).contains("524288"));
        assert!(read_bootconf(&other).is_err());
    }

    // Too large for the bootloader's file limit.
    assert!(msg(embed_bootconf(&img, &"x".repeat(4077))).contains("4076"));

    // No bootconf.txt section at all.
    let mut renamed = img.clone();
    renamed[BOOTCONF_AT + 8..BOOTCONF_AT + 20].copy_from_slice(b"bootconf.txx");
    assert!(msg(embed_bootconf(&renamed, "")).contains("no bootconf.txt"));
    assert!(read_bootconf(&renamed).is_err());

    // Only a bootconf.txt in the read-only first 64 KiB.
    let mut ro = build_image(ORIGINAL_CONF, true);
    ro[BOOTCONF_AT + 8..BOOTCONF_AT + 20].copy_from_slice(b"bootconf.txx");
    assert!(msg(embed_bootconf(&ro, "")).contains("read-only"));

    // A corrupt header in the middle of the walk.
    let mut bad = img.clone();
    bad[0x10000..0x10004].copy_from_slice(&0x12345678u32.to_be_bytes());
    assert!(msg(embed_bootconf(&bad, "")).contains("corrupt"));

    // A length that runs past the end.
    let mut long = img.clone();
    long[0x10004..0x10008].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
    assert!(msg(embed_bootconf(&long, "")).contains("corrupt"));

    // Garbage and all-zero images.
    assert!(embed_bootconf(&noise(9, IMAGE_SIZE), "").is_err());
    assert!(embed_bootconf(&vec![0u8; IMAGE_SIZE], "").is_err());
    assert!(read_bootconf(&vec![0xffu8; IMAGE_SIZE]).is_err());
}

#[test]
fn mutated_images_never_panic() {
    let img = build_image(ORIGINAL_CONF, true);
    let headers: Vec<usize> = walk(&img).iter().map(|s| s.1).collect();
    let rnd = noise(11, 4 * 4000);
    for i in 0..4000 {
        let r = u32::from_le_bytes(rnd[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        let mut m = img.clone();
        // Corrupt a header byte (magic, length or name) of a random section.
        let at = headers[r % headers.len()] + (r >> 8) % 24;
        m[at] = (r >> 16) as u8;
        if r.is_multiple_of(3) {
            m[at + 4] = (r >> 24) as u8;
        }
        let _ = read_bootconf(&m);
        if let Ok(out) = embed_bootconf(&m, "[all]\nBOOT_ORDER=0xf14\n") {
            assert_eq!(out.len(), IMAGE_SIZE);
            assert_eq!(out[TAIL_AT..], m[TAIL_AT..]);
            assert_eq!(read_bootconf(&out).unwrap(), "[all]\nBOOT_ORDER=0xf14\n");
        }
    }
}
