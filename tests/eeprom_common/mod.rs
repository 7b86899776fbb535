//! A synthetic 512 KiB Pi 4 bootloader image with the real section layout, for the eeprom tests.
#![allow(dead_code)]

pub const IMAGE_SIZE: usize = 512 * 1024;
pub const MAGIC: u32 = 0x55aa_f00f;
pub const FILE_MAGIC: u32 = 0x55aa_f11f;
pub const PAD_MAGIC: u32 = 0x55aa_feef;

/// Where the synthetic image puts its modifiable files (one 4 KiB erase sector each).
pub const BOOTCONF_AT: usize = 0x7b000;
pub const SIG_AT: usize = 0x7c000;
pub const PUBKEY_AT: usize = 0x7d000;
pub const TAIL_AT: usize = IMAGE_SIZE - 4096;

pub const ORIGINAL_CONF: &str = "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\n";

/// Deterministic filler bytes (xorshift), so "data" sections are not uniform.
pub fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

pub fn be32(img: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(img[off..off + 4].try_into().unwrap())
}

fn put_be32(img: &mut [u8], off: usize, v: u32) {
    img[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Write a section; returns the 8-aligned offset after it.
pub fn section(img: &mut [u8], off: usize, magic: u32, payload: &[u8]) -> usize {
    put_be32(img, off, magic);
    put_be32(img, off + 4, payload.len() as u32);
    img[off + 8..off + 8 + payload.len()].copy_from_slice(payload);
    (off + 8 + payload.len() + 7) & !7
}

/// Write a FILE section (12-byte NUL-padded name, 4 reserved bytes, data).
pub fn file(img: &mut [u8], off: usize, name: &str, data: &[u8]) -> usize {
    let mut p = vec![0u8; 16];
    p[..name.len()].copy_from_slice(name.as_bytes());
    p.extend_from_slice(data);
    section(img, off, FILE_MAGIC, &p)
}

/// A PAD section from `off` up to `to`.
pub fn pad(img: &mut [u8], off: usize, to: usize) -> usize {
    section(img, off, PAD_MAGIC, &vec![0xff; to - off - 8])
}

/// Bootcode and other read-only sections, a decoy bootconf.txt below 64 KiB when `decoy`,
/// then bootconf.txt, bootconf.sig and pubkey.bin in their own sectors, separated by PADs;
/// the reserved last 4 KiB hold noise so that any write there shows.
pub fn build_image(conf: &str, decoy: bool) -> Vec<u8> {
    let mut img = vec![0xffu8; IMAGE_SIZE];
    let mut off = section(&mut img, 0, MAGIC, &noise(1, 0x6123));
    off = section(&mut img, off, 0x55aa_f33f, &noise(2, 3001));
    off = section(&mut img, off, 0x55aa_f44f, &noise(3, 77));
    if decoy {
        off = file(&mut img, off, "bootconf.txt", b"[all]\nBOOT_ORDER=0x1\n");
    }
    off = pad(&mut img, off, 0x10000);
    off = section(&mut img, off, 0x55aa_f22f, &noise(4, 0x5a000));
    off = pad(&mut img, off, BOOTCONF_AT);
    assert_eq!(off, BOOTCONF_AT);
    off = file(&mut img, BOOTCONF_AT, "bootconf.txt", conf.as_bytes());
    off = pad(&mut img, off, SIG_AT);
    off = file(&mut img, off, "bootconf.sig", &noise(5, 300));
    off = pad(&mut img, off, PUBKEY_AT);
    off = file(&mut img, off, "pubkey.bin", &noise(6, 264));
    pad(&mut img, off, PUBKEY_AT + 0x1000);
    img[TAIL_AT..].copy_from_slice(&noise(7, 4096));
    img
}

/// The same layout with bootconf.txt as the last section (nothing after it).
pub fn build_image_conf_last(conf: &str) -> Vec<u8> {
    let mut img = vec![0xffu8; IMAGE_SIZE];
    let mut off = section(&mut img, 0, MAGIC, &noise(1, 0x6123));
    off = pad(&mut img, off, BOOTCONF_AT);
    file(&mut img, off, "bootconf.txt", conf.as_bytes());
    img[TAIL_AT..].copy_from_slice(&noise(7, 4096));
    img
}

/// (magic, offset, length, file name) of every section, walked independently of the crate.
pub fn walk(img: &[u8]) -> Vec<(u32, usize, usize, String)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 8 <= img.len() {
        let magic = be32(img, off);
        if magic == 0 || magic == 0xffff_ffff {
            break;
        }
        assert_eq!(magic & 0xffff_f00f, MAGIC, "bad magic at 0x{off:x}");
        let len = be32(img, off + 4) as usize;
        let name = if magic == FILE_MAGIC {
            String::from_utf8(img[off + 8..off + 20].to_vec())
                .unwrap()
                .trim_end_matches('\0')
                .to_string()
        } else {
            String::new()
        };
        out.push((magic, off, len, name));
        off = (off + 8 + len + 7) & !7;
    }
    out
}
