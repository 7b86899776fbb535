//! Node-local settings: the time zone, usb-storage quirks on the Pi kernel command line, the data
//! disk path, and the etcd server count.

use super::{Checked, Rule, Violation};

/// `cluster.timezone`.
pub static TIMEZONE: Rule = Rule {
    name: "iana-timezone",
    summary: "an IANA time zone name: '/'-separated parts of 1-14 of [A-Za-z0-9._+-], each starting with a letter (e.g. Europe/Berlin, UTC), present under /usr/share/zoneinfo of the base",
    source: "IANA tz database theory.html (\"Names of timezones\"); cloud-init cc_timezone (writes the name; the zone file must exist in /usr/share/zoneinfo)",
};

/// `usb_quirks` entries.
pub static USB_QUIRK: Rule = Rule {
    name: "usb-storage-quirk",
    summary: "VVVV:PPPP or VVVV:PPPP:FLAGS with 4-hex-digit vendor and product ids and FLAGS letters from the kernel's list",
    source: "Linux Documentation/admin-guide/kernel-parameters.txt, usb-storage.quirks=",
};

/// `data_disk`.
pub static DATA_DISK: Rule = Rule {
    name: "data-disk-path",
    summary: "an absolute /dev/disk/by-* path (stable across boots); /dev/sdX and similar kernel names are allowed with a warning",
    source: "udev persistent storage links (systemd udev, 60-persistent-storage.rules); kernel device names are not stable (Linux Documentation/admin-guide/devices.rst)",
};

/// The embedded etcd server count.
pub static ETCD_QUORUM: Rule = Rule {
    name: "etcd-quorum",
    summary: "embedded etcd needs an odd number of servers (1, 3, 5 ...); one server has no quorum to lose but no fault tolerance",
    source: "etcd FAQ (\"Why an odd number of cluster members?\"); k3s docs datastore/ha-embedded",
};

/// Kernel usb-storage quirk flag letters.
pub const USB_QUIRK_FLAGS: &str = "abcdefghijklmnoprstuwy";

/// Check the syntax of `cluster.timezone` ([`TIMEZONE`]).
pub fn timezone(s: &str) -> Checked {
    let bad = |d: &str| Err(Violation::new(&TIMEZONE, format!("timezone {s:?} {d}")));
    if s.is_empty() {
        return bad("is empty");
    }
    if s.starts_with('/') || s.ends_with('/') {
        return bad("must be a relative name like Europe/Berlin");
    }
    for part in s.split('/') {
        if part.is_empty() || part.len() > 14 {
            return bad(&format!(
                "has the part {part:?}: each part is 1-14 characters"
            ));
        }
        if !part.as_bytes()[0].is_ascii_alphabetic() {
            return bad(&format!(
                "has the part {part:?}, which does not start with a letter"
            ));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
        {
            return bad(&format!("holds {c:?}"));
        }
    }
    Ok(())
}

/// Check that `zone` exists in a base's zoneinfo, `exists` answering for a path inside the root.
pub fn timezone_in_base(zone: &str, base: &str, exists: impl Fn(&str) -> bool) -> Checked {
    let path = format!("/usr/share/zoneinfo/{zone}");
    if exists(&path) {
        Ok(())
    } else {
        Err(Violation::new(
            &TIMEZONE,
            format!("timezone {zone:?}: {path} does not exist in the base {base}"),
        ))
    }
}

/// Check a `usb_quirks` entry ([`USB_QUIRK`]).
pub fn usb_quirk(q: &str) -> Checked {
    let hex4 = |s: &str| s.len() == 4 && s.bytes().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = q.split(':').collect();
    let ok = match parts.as_slice() {
        [v, p] => hex4(v) && hex4(p),
        [v, p, f] => {
            hex4(v) && hex4(p) && !f.is_empty() && f.chars().all(|c| USB_QUIRK_FLAGS.contains(c))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Violation::new(
            &USB_QUIRK,
            format!("usb quirk {q:?} must be VVVV:PPPP or VVVV:PPPP:FLAGS (hex ids, flags from \"{USB_QUIRK_FLAGS}\", e.g. 152d:0578:u)"),
        ))
    }
}

/// How a `data_disk` path names its disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskPath {
    /// A `/dev/disk/by-*/NAME` link: stable.
    Stable,
    /// A kernel name (`/dev/sda`, `/dev/nvme0n1`): may move between boots.
    KernelName,
}

/// Check a `data_disk` ([`DATA_DISK`]).
pub fn data_disk(d: &str) -> Checked<DiskPath> {
    let bad = |x: &str| Err(Violation::new(&DATA_DISK, format!("data_disk {d:?} {x}")));
    if d.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("holds whitespace");
    }
    if d.split('/').any(|p| p == ".." || p == ".") {
        return bad("holds '.' or '..' parts");
    }
    if let Some(rest) = d.strip_prefix("/dev/disk/by-") {
        return match rest.split_once('/') {
            Some((kind, name))
                if !kind.is_empty()
                    && kind.bytes().all(|c| c.is_ascii_lowercase())
                    && !name.is_empty()
                    && !name.contains('/') =>
            {
                Ok(DiskPath::Stable)
            }
            _ => bad("must be /dev/disk/by-KIND/NAME"),
        };
    }
    if let Some(name) = d.strip_prefix("/dev/") {
        if !name.is_empty()
            && !name.contains('/')
            && name.bytes().all(|c| c.is_ascii_alphanumeric())
        {
            return Ok(DiskPath::KernelName);
        }
    }
    bad("must be an absolute /dev/disk/by-id/... (or by-uuid, by-path, ...) path")
}

/// Check the embedded etcd server count ([`ETCD_QUORUM`]): `Err` for an even count; `Ok(Some(note))`
/// for a warning; `Ok(None)` when fine.
pub fn etcd_servers(n: usize) -> Checked<Option<String>> {
    if n > 0 && n.is_multiple_of(2) {
        return Err(Violation::new(
            &ETCD_QUORUM,
            format!("embedded etcd with {n} servers: use an odd count ({} or {}); an even count tolerates no more failures than one fewer and can split its vote", n - 1, n + 1),
        ));
    }
    if n == 1 {
        return Ok(Some(
            "embedded etcd with one server: there is no quorum to lose yet, and no fault tolerance; to grow to three, add two nodes with role `server`, build them and boot them one at a time (they join the first server)".to_string(),
        ));
    }
    Ok(None)
}
