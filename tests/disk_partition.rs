//! Partition tables: read fixtures made by sfdisk/sgdisk, write them back, verify with
//! sfdisk --verify / sgdisk -v and compare against what those tools wrote.

mod base_fixtures;

use base_fixtures::{raw, run};
use nodeforge::partition::{
    self, guid_string, read_layout, write_layout, DiskLayout, PartType, Partition, TableKind,
    SECTOR,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn layout_of(p: &Path) -> DiskLayout {
    let mut f = File::open(p).unwrap();
    read_layout(&mut f, p).unwrap_or_else(|e| panic!("{e:#}"))
}

fn new_disk(dir: &Path, name: &str, size: u64) -> (PathBuf, File) {
    let p = dir.join(name);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(size).unwrap();
    (p, f)
}

fn sector0(p: &Path) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    File::open(p).unwrap().read_exact_at(&mut b, 0).unwrap();
    b
}

fn sfdisk_json(p: &Path) -> serde_json::Value {
    let out = run("sfdisk", &["--json", p.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn mbr_read_matches_sfdisk() {
    for fam in ["raspios", "ubuntu-raspi", "debian-raspi"] {
        let img = raw(fam);
        let l = layout_of(&img);
        let j = sfdisk_json(&img);
        let pt = &j["partitiontable"];
        assert_eq!(pt["label"], "dos");
        let TableKind::Mbr { disk_signature } = l.table else {
            panic!("{fam}: not MBR")
        };
        assert_eq!(
            pt["id"].as_str().unwrap(),
            format!("0x{disk_signature:08x}")
        );
        let parts = pt["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), l.partitions.len());
        for (p, s) in l.partitions.iter().zip(parts) {
            assert_eq!(p.start / SECTOR, s["start"].as_u64().unwrap());
            assert_eq!(p.size / SECTOR, s["size"].as_u64().unwrap());
            let PartType::Mbr(t) = p.part_type else {
                panic!()
            };
            assert_eq!(format!("{t:x}"), s["type"].as_str().unwrap());
            assert_eq!(p.bootable, s["bootable"].as_bool().unwrap_or(false));
            assert!(s["node"].as_str().unwrap().ends_with(&p.number.to_string()));
        }
    }
}

#[test]
fn mbr_write_matches_sfdisk_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for fam in ["raspios", "ubuntu-raspi"] {
        let img = raw(fam);
        let l = layout_of(&img);
        let size = std::fs::metadata(&img).unwrap().len();
        let (out, mut f) = new_disk(dir.path(), &format!("{fam}.img"), size);
        write_layout(&mut f, &l, size).unwrap();
        run("sfdisk", &["--verify", out.to_str().unwrap()]);
        // Signature, entries (with CHS fields) and 55 AA identical to what sfdisk wrote.
        assert_eq!(
            sector0(&out)[440..],
            sector0(&img)[440..],
            "{fam}: sector 0 differs"
        );
        assert_eq!(layout_of(&out), l);
        let dump = |p: &Path| {
            run("sfdisk", &["--dump", p.to_str().unwrap()]).replace(p.to_str().unwrap(), "DISK")
        };
        assert_eq!(dump(&out), dump(&img));
    }
}

#[test]
fn mbr_write_keeps_boot_code_and_moves_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = layout_of(&raw("raspios"));
    // A bigger disk with the root moved and grown, as compose does.
    let size = 512u64 << 20;
    l.partitions[1].start = 128 << 20;
    l.partitions[1].size = 300 << 20;
    l.partitions[0].bootable = true;
    let (out, mut f) = new_disk(dir.path(), "moved.img", size);
    f.write_all_at(&[0xEB; 440], 0).unwrap();
    write_layout(&mut f, &l, size).unwrap();
    assert_eq!(&sector0(&out)[..440], &[0xEB; 440][..]);
    run("sfdisk", &["--verify", out.to_str().unwrap()]);
    let j = sfdisk_json(&out);
    let parts = j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(j["partitiontable"]["id"], "0x6c8f4d2e");
    assert_eq!(parts[1]["start"].as_u64().unwrap(), (128 << 20) / 512);
    assert_eq!(parts[0]["bootable"].as_bool(), Some(true));
    assert_eq!(layout_of(&out), l);
}

#[test]
fn gpt_read_matches_sgdisk() {
    let img = raw("debian-generic");
    let l = layout_of(&img);
    let j = sfdisk_json(&img);
    let pt = &j["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    let TableKind::Gpt { disk_guid } = l.table else {
        panic!("not GPT")
    };
    assert_eq!(pt["id"].as_str().unwrap(), guid_string(&disk_guid));
    let numbers: Vec<u32> = l.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 14, 15]);
    for s in pt["partitions"].as_array().unwrap() {
        let node = s["node"].as_str().unwrap();
        let n: u32 = node
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let p = l.by_number(n).unwrap();
        assert_eq!(p.start / SECTOR, s["start"].as_u64().unwrap());
        assert_eq!(p.size / SECTOR, s["size"].as_u64().unwrap());
        assert_eq!(
            guid_string(&p.unique_guid.unwrap()),
            s["uuid"].as_str().unwrap()
        );
        let PartType::Gpt(t) = p.part_type else {
            panic!()
        };
        assert_eq!(guid_string(&t), s["type"].as_str().unwrap());
    }
    assert_eq!(
        l.by_number(15).unwrap().part_type,
        PartType::Gpt(partition::ESP_TYPE)
    );
    assert_eq!(
        l.by_number(14).unwrap().part_type,
        PartType::Gpt(partition::BIOS_BOOT_TYPE)
    );
}

#[test]
fn gpt_write_same_size_matches_sgdisk_bytes() {
    let img = raw("debian-generic");
    let l = layout_of(&img);
    let size = std::fs::metadata(&img).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let (out, mut f) = new_disk(dir.path(), "gpt.img", size);
    write_layout(&mut f, &l, size).unwrap();
    let v = run("sgdisk", &["-v", out.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "{v}");
    // Primary header + entries, backup entries + header, protective MBR entries: as sgdisk wrote.
    let read = |p: &Path, off: u64, len: usize| {
        let mut b = vec![0u8; len];
        File::open(p).unwrap().read_exact_at(&mut b, off).unwrap();
        b
    };
    assert_eq!(
        read(&out, 512, 33 * 512),
        read(&img, 512, 33 * 512),
        "primary GPT"
    );
    assert_eq!(
        read(&out, size - 33 * 512, 33 * 512),
        read(&img, size - 33 * 512, 33 * 512),
        "backup GPT"
    );
    assert_eq!(read(&out, 446, 66), read(&img, 446, 66), "protective MBR");
    assert_eq!(layout_of(&out), l);
}

#[test]
fn gpt_write_grown_disk_with_new_partition() {
    // The compose shape: CIDATA (p2) before root, root moved, disk grown, backup at the new end.
    let mut l = layout_of(&raw("debian-generic"));
    let size = 256u64 << 20;
    let root = l.partitions.iter().position(|p| p.number == 1).unwrap();
    let root_size = l.partitions[root].size;
    l.partitions[root].start = 64 << 20;
    l.partitions.push(Partition {
        number: 2,
        start: 28 << 20,
        size: 32 << 20,
        part_type: PartType::Gpt(partition::BASIC_DATA_TYPE),
        unique_guid: Some(partition::guid("D1A2B3C4-0000-4000-8000-000000000002")),
        name: "CIDATA".into(),
        bootable: false,
        attributes: 0,
    });
    l.partitions.sort_by_key(|p| p.number);
    let dir = tempfile::tempdir().unwrap();
    let (out, mut f) = new_disk(dir.path(), "grown.img", size);
    write_layout(&mut f, &l, size).unwrap();
    let v = run("sgdisk", &["-v", out.to_str().unwrap()]);
    assert!(v.contains("No problems found"), "{v}");
    let info = run("sgdisk", &["-i", "1", out.to_str().unwrap()]);
    assert!(
        info.contains("3C1A2B4D-5E6F-4A7B-8C9D-0E1F2A3B4C5D"),
        "{info}"
    );
    assert!(
        info.contains(&format!("First sector: {}", (64u64 << 20) / 512)),
        "{info}"
    );
    let info2 = run("sgdisk", &["-i", "2", out.to_str().unwrap()]);
    assert!(info2.contains("Partition name: 'CIDATA'"), "{info2}");
    let p = run("sgdisk", &["-p", out.to_str().unwrap()]);
    assert!(
        p.contains(&format!("last usable sector is {}", size / 512 - 34)),
        "{p}"
    );
    let back = layout_of(&out);
    assert_eq!(back, l);
    assert_eq!(back.by_number(1).unwrap().size, root_size);
    run("sfdisk", &["--verify", out.to_str().unwrap()]);
}

#[test]
fn invalid_layouts_are_rejected() {
    let l = layout_of(&raw("debian-generic"));
    let size = std::fs::metadata(raw("debian-generic")).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let (_out, mut f) = new_disk(dir.path(), "bad.img", size);
    // Root running into the backup GPT area.
    let mut b = l.clone();
    let i = b.partitions.iter().position(|p| p.number == 1).unwrap();
    b.partitions[i].size += 2 << 20;
    let e = format!("{:#}", write_layout(&mut f, &b, size).unwrap_err());
    assert!(
        e.contains("partition 1") && e.contains("beyond the end"),
        "{e}"
    );
    // Two partitions sharing a GUID.
    let mut g = l.clone();
    g.partitions[1].unique_guid = g.partitions[0].unique_guid;
    let e = format!("{:#}", write_layout(&mut f, &g, size).unwrap_err());
    assert!(e.contains("used twice"), "{e}");
    // Overlap.
    let mut o = l;
    o.partitions[i].start -= 1 << 20;
    let e = format!("{:#}", write_layout(&mut f, &o, size).unwrap_err());
    assert!(e.contains("overlap"), "{e}");
}
