//! Block-device facts from sysfs and mountinfo (under a relocatable root) and the pure safety
//! rules that decide whether nodeforge may overwrite a device.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// What nodeforge knows about a whole-disk block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Kernel name, e.g. `sdb`.
    pub name: String,
    /// Device node, e.g. `/dev/sdb`.
    pub path: PathBuf,
    /// Size in bytes (`size` × 512).
    pub size: u64,
    /// sysfs `removable` flag.
    pub removable: bool,
    /// Connected through USB (a `usb*` component in its sysfs device path).
    pub usb: bool,
    /// sysfs `ro` flag.
    pub read_only: bool,
    /// This is a partition, not a whole disk.
    pub is_partition: bool,
    /// For a partition: the whole disk holding it (`/dev/sdb` for `/dev/sdb1`).
    pub whole_disk: Option<PathBuf>,
    /// How it is attached: `usb`, `sata`, `nvme`, `mmc` (SD/eMMC slot), `virtio`, `scsi`,
    /// `loop`, or empty when unknown (from the sysfs device path, as lsblk's TRAN does).
    pub transport: String,
    /// Model string (may be empty).
    pub model: String,
    /// Vendor string (may be empty).
    pub vendor: String,
    /// Serial number (may be empty).
    pub serial: String,
    /// Mount points of the device or its partitions (and active swap).
    pub mounted: Vec<String>,
    /// Which device node is mounted where (`/dev/sdb1` at `/media/x`), for people choosing.
    pub mounts: Vec<MountedPart>,
    /// The device or one of its partitions holds `/`.
    pub holds_root: bool,
    /// Kernel holders (device-mapper, md) of the device or its partitions.
    pub holders: Vec<String>,
}

/// A mounted partition (or the disk itself) and where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MountedPart {
    /// Device node, e.g. `/dev/sdb1`.
    pub device: String,
    /// Mount point (or `swap`).
    pub mountpoint: String,
}

/// Transport from a canonical sysfs device path (`/sys/devices/.../usb2/.../block/sdb`).
fn transport(name: &str, dir: &Path) -> String {
    let parts: Vec<String> = dir
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let has = |p: &str| parts.iter().any(|c| c.starts_with(p));
    let t = if name.starts_with("loop") {
        "loop"
    } else if has("usb") {
        "usb"
    } else if has("nvme") || name.starts_with("nvme") {
        "nvme"
    } else if has("ata") {
        "sata"
    } else if has("mmc") || name.starts_with("mmcblk") {
        "mmc"
    } else if has("virtio") {
        "virtio"
    } else if has("host") && has("target") {
        "scsi"
    } else {
        ""
    };
    t.to_string()
}

/// Why a device must not be written. `Ok(())` when every rule passes.
pub fn check_device(info: &DeviceInfo, image_size: Option<u64>, force: bool) -> Result<()> {
    let mut why: Vec<String> = Vec::new();
    if info.is_partition {
        why.push(match &info.whole_disk {
            Some(d) => format!(
                "it is a partition; give the whole disk {} (an image holds its own partition table)",
                d.display()
            ),
            None => "it is a partition; give the whole disk".into(),
        });
    }
    if info.holds_root {
        why.push("it holds the running system's root filesystem".into());
    }
    if !info.mounted.is_empty() {
        why.push(format!(
            "it is in use (mounted at {})",
            info.mounted.join(", ")
        ));
    }
    if !info.holders.is_empty() {
        why.push(format!("it is in use by {}", info.holders.join(", ")));
    }
    if info.read_only {
        why.push("it is read-only".into());
    }
    if info.size == 0 {
        why.push("it has no medium (size 0)".into());
    } else if let Some(img) = image_size {
        if info.size < img {
            why.push(format!(
                "it is smaller than the image ({} < {} bytes)",
                info.size, img
            ));
        }
    }
    if !info.removable && !info.usb && !force {
        why.push("it is not removable and not USB-connected (pass --force if you mean it)".into());
    }
    if why.is_empty() {
        Ok(())
    } else {
        bail!(
            "refusing to write {}: {}",
            info.path.display(),
            why.join("; ")
        )
    }
}

/// Path of `p` (an absolute path like `/sys/...`) under `sysroot`.
pub fn under(sysroot: &Path, p: &str) -> PathBuf {
    sysroot.join(p.trim_start_matches('/'))
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// A mount table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted device (btrfs shows an anonymous `0:N`).
    pub majmin: String,
    /// Mount point.
    pub point: String,
    /// Mount source, e.g. `/dev/sda2` (may be empty).
    pub source: String,
}

/// Mount table entries from `proc/self/mountinfo` under `sysroot`.
pub fn mountinfo(sysroot: &Path) -> Result<Vec<Mount>> {
    let p = under(sysroot, "/proc/self/mountinfo");
    let text = fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 {
            // Optional fields end at "-", then filesystem type and source.
            let source = f
                .iter()
                .position(|x| *x == "-")
                .and_then(|i| f.get(i + 2))
                .map(|s| unescape_mount(s))
                .unwrap_or_default();
            out.push(Mount {
                majmin: f[2].to_string(),
                point: unescape_mount(f[4]),
                source,
            });
        }
    }
    Ok(out)
}

/// Undo mountinfo's octal escapes (`\040` for space).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Names of active swap devices (`/dev/...`) from `proc/swaps` under `sysroot`.
fn swaps(sysroot: &Path) -> Vec<String> {
    read_trim(&under(sysroot, "/proc/swaps"))
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Read everything the safety rules need about block device `name` (e.g. `sdb`).
pub fn read_device(sysroot: &Path, name: &str) -> Result<DeviceInfo> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("bad block device name {name:?}");
    }
    let link = under(sysroot, "/sys/class/block").join(name);
    let dir = fs::canonicalize(&link)
        .with_context(|| format!("{} is not a known block device ({})", name, link.display()))?;
    let dev = read_trim(&dir.join("dev"))
        .with_context(|| format!("read {}", dir.join("dev").display()))?;
    let sectors: u64 = read_trim(&dir.join("size"))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("read {}", dir.join("size").display()))?;
    let is_partition = dir.join("partition").exists();
    let whole_disk = is_partition
        .then(|| dir.parent().and_then(|p| p.file_name()))
        .flatten()
        .map(|n| PathBuf::from("/dev").join(n));
    let removable = read_trim(&dir.join("removable")).as_deref() == Some("1");
    let read_only = read_trim(&dir.join("ro")).as_deref() == Some("1");
    let usb = dir
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with("usb"));
    let model = read_trim(&dir.join("device/model")).unwrap_or_default();
    let vendor = read_trim(&dir.join("device/vendor")).unwrap_or_default();
    let serial = read_trim(&dir.join("device/serial"))
        .or_else(|| usb_serial(sysroot, &dir))
        .unwrap_or_default();

    // The disk and its partitions (subdirectories with a `partition` file).
    let mut parts: Vec<(String, String)> = vec![(name.to_string(), dev.clone())];
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.join("partition").exists() {
                if let Some(d) = read_trim(&p.join("dev")) {
                    parts.push((e.file_name().to_string_lossy().into_owned(), d));
                }
            }
        }
    }
    parts.sort();
    let mut mounted = Vec::new();
    let mut mounts = Vec::new();
    let mut holds_root = false;
    let nodes: HashSet<String> = parts.iter().map(|(n, _)| format!("/dev/{n}")).collect();
    for m in mountinfo(sysroot)? {
        let by_num = parts.iter().find(|(_, d)| *d == m.majmin);
        if by_num.is_some() || nodes.contains(&m.source) {
            holds_root |= m.point == "/";
            let device = by_num.map_or(m.source.clone(), |(n, _)| format!("/dev/{n}"));
            mounts.push(MountedPart {
                device,
                mountpoint: m.point.clone(),
            });
            mounted.push(m.point);
        }
    }
    let swap = swaps(sysroot);
    let mut holders = Vec::new();
    for (pname, _) in &parts {
        if swap.iter().any(|s| s == &format!("/dev/{pname}")) {
            mounted.push(format!("swap /dev/{pname}"));
            mounts.push(MountedPart {
                device: format!("/dev/{pname}"),
                mountpoint: "swap".into(),
            });
        }
        let hdir = if pname == name {
            dir.join("holders")
        } else {
            dir.join(pname).join("holders")
        };
        if let Ok(rd) = fs::read_dir(&hdir) {
            for e in rd.flatten() {
                holders.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    mounted.sort();
    mounted.dedup();
    mounts.sort_by(|a, b| (&a.device, &a.mountpoint).cmp(&(&b.device, &b.mountpoint)));
    mounts.dedup();
    holders.sort();
    Ok(DeviceInfo {
        name: name.to_string(),
        path: PathBuf::from("/dev").join(name),
        size: sectors.saturating_mul(512),
        removable,
        usb,
        read_only,
        is_partition,
        whole_disk,
        transport: transport(name, &dir),
        model,
        vendor,
        serial,
        mounted,
        mounts,
        holds_root,
        holders,
    })
}

/// Serial of the USB device a disk hangs off: the nearest ancestor with `idVendor` and `serial`.
fn usb_serial(sysroot: &Path, dir: &Path) -> Option<String> {
    let stop = fs::canonicalize(under(sysroot, "/sys")).ok()?;
    let mut d = dir.parent();
    while let Some(p) = d {
        if !p.starts_with(&stop) || p == stop {
            break;
        }
        if p.join("idVendor").exists() {
            return read_trim(&p.join("serial"));
        }
        d = p.parent();
    }
    None
}

/// Whole disks worth listing for `nodeforge devices`: removable or USB, not virtual; with `all`,
/// every whole disk with a medium, loop devices included.
pub fn list_disks(sysroot: &Path, all: bool) -> Result<Vec<DeviceInfo>> {
    let dir = under(sysroot, "/sys/class/block");
    let rd = fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))?;
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["ram", "zram", "dm-", "md", "sr", "nbd"]
                .iter()
                .any(|p| n.starts_with(p))
                && (all || !n.starts_with("loop"))
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let Ok(info) = read_device(sysroot, &n) else {
            continue;
        };
        if !info.is_partition && (info.removable || info.usb || (all && info.size > 0)) {
            out.push(info);
        }
    }
    Ok(out)
}

/// Human size with binary units, e.g. `29.7 GiB`.
pub fn human(bytes: u64) -> String {
    let mut s = bytes as f64;
    for u in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if s < 1024.0 || u == "TiB" {
            return if u == "B" {
                format!("{bytes} B")
            } else {
                format!("{s:.1} {u}")
            };
        }
        s /= 1024.0;
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usb_stick() -> DeviceInfo {
        DeviceInfo {
            name: "sdb".into(),
            path: "/dev/sdb".into(),
            size: 32 << 30,
            removable: true,
            usb: true,
            model: "Cruzer".into(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_table() {
        let img = Some(3u64 << 30);
        type Edit = fn(&mut DeviceInfo);
        let cases: Vec<(&str, Edit, bool, Option<&str>)> = vec![
            ("usb stick ok", |_| {}, false, None),
            (
                "mounted",
                |d| d.mounted = vec!["/media/x".into()],
                true,
                Some("mounted at /media/x"),
            ),
            (
                "root",
                |d| d.holds_root = true,
                true,
                Some("root filesystem"),
            ),
            (
                "holder",
                |d| d.holders = vec!["dm-0".into()],
                true,
                Some("in use by dm-0"),
            ),
            (
                "too small",
                |d| d.size = 2 << 30,
                true,
                Some("smaller than the image"),
            ),
            ("no medium", |d| d.size = 0, true, Some("no medium")),
            (
                "partition",
                |d| d.is_partition = true,
                true,
                Some("partition"),
            ),
            ("read-only", |d| d.read_only = true, true, Some("read-only")),
            (
                "internal",
                |d| {
                    d.removable = false;
                    d.usb = false
                },
                false,
                Some("--force"),
            ),
            (
                "internal forced",
                |d| {
                    d.removable = false;
                    d.usb = false
                },
                true,
                None,
            ),
            ("usb not removable", |d| d.removable = false, false, None),
            (
                "removable not usb (sd slot)",
                |d| d.usb = false,
                false,
                None,
            ),
        ];
        for (what, edit, force, err) in cases {
            let mut d = usb_stick();
            edit(&mut d);
            let r = check_device(&d, img, force);
            match err {
                None => assert!(r.is_ok(), "{what}: {r:?}"),
                Some(s) => {
                    let e = r.expect_err(what).to_string();
                    assert!(e.contains(s) && e.contains("/dev/sdb"), "{what}: {e}");
                }
            }
        }
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_mount("/media/my\\040stick"), "/media/my stick");
        assert_eq!(unescape_mount("/a\\"), "/a\\");
    }
}
