//! FAT directory entries and their date/time fields.

use super::ATTR_VOLUME;

/// FAT date and time for every entry.
pub(super) struct Stamp {
    pub(super) date: u16,
    pub(super) time: u16,
    pub(super) tenths: u8,
}

pub(super) fn dir_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32, t: &Stamp) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0..11].copy_from_slice(name);
    e[11] = attr;
    if attr != ATTR_VOLUME {
        e[13] = t.tenths;
        e[14..16].copy_from_slice(&t.time.to_le_bytes());
        e[16..18].copy_from_slice(&t.date.to_le_bytes());
        e[18..20].copy_from_slice(&t.date.to_le_bytes());
    }
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&t.time.to_le_bytes());
    e[24..26].copy_from_slice(&t.date.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// FAT (date, time, creation tenths) for unix seconds (UTC), clamped to 1980-01-01..2107-12-31.
pub(super) fn fat_timestamp(unix: i64) -> (u16, u16, u8) {
    const MIN: i64 = 315_532_800; // 1980-01-01 00:00:00
    const MAX: i64 = 4_354_819_199; // 2107-12-31 23:59:59
    let t = unix.clamp(MIN, MAX);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let date = (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16;
    let time = (((secs / 3600) as u16) << 11)
        | ((((secs / 60) % 60) as u16) << 5)
        | ((secs % 60) / 2) as u16;
    (date, time, ((secs % 2) * 100) as u8)
}

/// Proleptic Gregorian date from days since 1970-01-01 (Howard Hinnant's algorithm).
pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        // 2024-02-29 13:45:31 UTC
        let (d, t, tenths) = fat_timestamp(1_709_214_331);
        assert_eq!(d, (44 << 9) | (2 << 5) | 29);
        assert_eq!(t, (13 << 11) | (45 << 5) | 15);
        assert_eq!(tenths, 100);
        assert_eq!(fat_timestamp(0).0, (1 << 5) | 1);
        assert_eq!(fat_timestamp(i64::MAX).0, (127 << 9) | (12 << 5) | 31);
    }
}
