//! Planning a FAT32 volume: geometry (cluster size, FAT size, volume size), the label, and the
//! placement of every directory and file in cluster order.

use super::stamp::{dir_entry, fat_timestamp, Stamp};
use super::tree::{assign_names, build_tree, dir_path, flatten, Child, EntryName};
use super::*;

impl FatImage {
    /// Plan a volume holding `files` (content + headroom, at least `opts.min_size`).
    pub fn new(files: Vec<FatFile>, opts: FatOptions) -> Result<Self> {
        let label = encode_label(&opts.label)?;
        let (date, time, tenths) = fat_timestamp(opts.timestamp);
        let stamp = Stamp { date, time, tenths };

        // Sizes first: they decide the layout; Path files are checked again when written.
        let mut sizes = Vec::with_capacity(files.len());
        for f in &files {
            let size = match &f.data {
                FileData::Bytes(b) => b.len() as u64,
                FileData::Path(p) => {
                    let md = std::fs::metadata(p).with_context(|| {
                        format!(
                            "reading metadata of {} (for FAT file {})",
                            p.display(),
                            f.path
                        )
                    })?;
                    if !md.is_file() {
                        bail!(
                            "{} (for FAT file {}) is not a regular file",
                            p.display(),
                            f.path
                        );
                    }
                    md.len()
                }
            };
            if size >= 1 << 32 {
                bail!(
                    "FAT file {} is {size} bytes: FAT32 files must be smaller than 4 GiB",
                    f.path
                );
            }
            sizes.push(size);
        }

        let root = build_tree(&files)?;
        let mut flat = Vec::new();
        flatten(root, None, &mut flat);

        // Names per directory (deterministic: plain 8.3 names reserved first, then sorted order).
        let mut dir_names: Vec<Vec<EntryName>> = Vec::with_capacity(flat.len());
        let mut dir_bytes: Vec<u64> = Vec::with_capacity(flat.len());
        for (i, d) in flat.iter().enumerate() {
            let names = assign_names(d, &files, &flat)?;
            let mut count = if i == 0 {
                usize::from(label != *b"NO NAME    ")
            } else {
                2
            };
            for ((name, _), n) in d.children.iter().zip(&names) {
                count += 1 + if n.long {
                    names::lfn_entry_count(name)
                } else {
                    0
                };
            }
            if count > MAX_DIR_ENTRIES {
                let path = dir_path(&flat, i);
                bail!("FAT directory /{path} needs {count} entries; FAT allows at most {MAX_DIR_ENTRIES}");
            }
            dir_names.push(names);
            dir_bytes.push(count as u64 * 32);
        }

        let content_clusters = |cs: u64| -> u64 {
            let dirs: u64 = dir_bytes.iter().map(|b| b.div_ceil(cs).max(1)).sum();
            let data: u64 = sizes.iter().map(|s| s.div_ceil(cs)).sum();
            dirs + data
        };

        let g = choose_geometry(content_clusters, opts.min_size)?;
        let (cs, size, fat_sectors, cc, content) =
            (g.cluster_size, g.size, g.fat_sectors, g.clusters, g.content);

        // Clusters: directories in pre-order from cluster 2 (the root), then files.
        let mut next: u64 = 2;
        let mut dir_first = Vec::with_capacity(flat.len());
        let mut dir_len = Vec::with_capacity(flat.len());
        for b in &dir_bytes {
            let n = b.div_ceil(cs).max(1);
            dir_first.push(next as u32);
            dir_len.push(n as u32);
            next += n;
        }
        let mut file_cluster: HashMap<usize, u32> = HashMap::new();
        let mut order = Vec::with_capacity(files.len());
        for d in &flat {
            for (_, c) in &d.children {
                if let Child::File(fi) = *c {
                    order.push(fi);
                }
            }
        }
        for &fi in &order {
            let n = sizes[fi].div_ceil(cs);
            if n > 0 {
                file_cluster.insert(fi, next as u32);
                next += n;
            }
        }
        let used = next - 2;
        debug_assert_eq!(used, content);

        // Encode directories now that every first cluster is known.
        let mut dirs = Vec::with_capacity(flat.len());
        for (i, d) in flat.iter().enumerate() {
            let mut e = Vec::with_capacity(dir_bytes[i] as usize);
            if i == 0 {
                if label != *b"NO NAME    " {
                    e.extend_from_slice(&dir_entry(&label, ATTR_VOLUME, 0, 0, &stamp));
                }
            } else {
                let parent = d
                    .parent
                    .map_or(0, |p| if p == 0 { 0 } else { dir_first[p] });
                e.extend_from_slice(&dir_entry(
                    b".          ",
                    ATTR_DIR,
                    dir_first[i],
                    0,
                    &stamp,
                ));
                e.extend_from_slice(&dir_entry(b"..         ", ATTR_DIR, parent, 0, &stamp));
            }
            for ((name, child), n) in d.children.iter().zip(&dir_names[i]) {
                if n.long {
                    names::push_lfn_entries(&mut e, name, &n.short);
                }
                let raw = match *child {
                    Child::Dir(di) => dir_entry(&n.short, ATTR_DIR, dir_first[di], 0, &stamp),
                    Child::File(fi) => {
                        let cl = file_cluster.get(&fi).copied().unwrap_or(0);
                        dir_entry(&n.short, ATTR_ARCHIVE, cl, sizes[fi] as u32, &stamp)
                    }
                };
                e.extend_from_slice(&raw);
            }
            dirs.push(PlacedDir {
                cluster: dir_first[i],
                clusters: dir_len[i],
                entries: e,
            });
        }

        let mut placed = Vec::with_capacity(order.len());
        let mut files: Vec<Option<FatFile>> = files.into_iter().map(Some).collect();
        for fi in order {
            if let Some(f) = files[fi].take() {
                placed.push(PlacedFile {
                    path: f.path,
                    data: f.data,
                    size: sizes[fi],
                    cluster: file_cluster.get(&fi).copied().unwrap_or(0),
                });
            }
        }

        Ok(FatImage {
            total_sectors: (size / SECTOR) as u32,
            sectors_per_cluster: (cs / SECTOR) as u32,
            fat_sectors: fat_sectors as u32,
            hidden_sectors: 0,
            label,
            volume_id: opts.volume_id,
            dirs,
            files: placed,
            used_clusters: used as u32,
            cluster_count: cc as u32,
        })
    }
}

/// Cluster size, volume size and FAT size chosen for some content.
struct Geometry {
    cluster_size: u64,
    size: u64,
    fat_sectors: u64,
    clusters: u64,
    /// Clusters used by directories and files.
    content: u64,
}

/// Prefer 4 KiB clusters; fall back to smaller ones while the cluster count would be too low for
/// FAT32; if even 512-byte clusters are too few (below ~33 MiB), grow the volume.
fn choose_geometry(content_clusters: impl Fn(u64) -> u64, min_size: u64) -> Result<Geometry> {
    let mut chosen = None;
    for cs in [4096u64, 2048, 1024, 512] {
        let content = content_clusters(cs);
        let size = plan_size(content, cs, min_size);
        let (_, cc) = layout(size / SECTOR, cs / SECTOR);
        if cc >= MIN_CLUSTERS && cc >= content {
            chosen = Some((cs, size, content));
            break;
        }
    }
    let (cs, mut size, content) = match chosen {
        Some(c) => c,
        None => {
            let content = content_clusters(512);
            (512, plan_size(content, 512, min_size), content)
        }
    };
    let (mut fat_sectors, mut cc) = layout(size / SECTOR, cs / SECTOR);
    while cc < MIN_CLUSTERS || cc < content {
        size += MIB;
        (fat_sectors, cc) = layout(size / SECTOR, cs / SECTOR);
    }
    if cc > MAX_CLUSTERS || size / SECTOR > u64::from(u32::MAX) {
        bail!("FAT volume of {size} bytes is too large for FAT32");
    }
    Ok(Geometry {
        cluster_size: cs,
        size,
        fat_sectors,
        clusters: cc,
        content,
    })
}

/// Volume size in bytes for `content` clusters of `cs` bytes: content + FATs + headroom of
/// max(10 %, 8 MiB), at least `min_size`, rounded up to 1 MiB.
fn plan_size(content: u64, cs: u64, min_size: u64) -> u64 {
    let data = content * cs;
    let headroom = (data / 10).max(8 * MIB);
    let base = RESERVED_SECTORS * SECTOR + data + headroom;
    let fats = NUM_FATS * (4 * (base / cs + 2)).next_multiple_of(SECTOR);
    (base + fats).max(min_size).next_multiple_of(MIB)
}

/// FAT size (sectors, a multiple of 8 so data stays 4 KiB aligned) and cluster count.
fn layout(total_sectors: u64, spc: u64) -> (u64, u64) {
    let avail = total_sectors.saturating_sub(RESERVED_SECTORS);
    // Size the FAT as if every sector were data: slightly generous, never too small.
    let fat = (4 * (avail / spc + 2)).div_ceil(SECTOR).next_multiple_of(8);
    let cc = avail.saturating_sub(NUM_FATS * fat) / spc;
    (fat, cc.min(fat * SECTOR / 4 - 2))
}

/// The BPB label: up to 11 printable ASCII characters allowed in short names (plus space),
/// padded with spaces; empty means "NO NAME".
fn encode_label(label: &str) -> Result<[u8; 11]> {
    if label.len() > 11 || !label.is_ascii() {
        bail!("FAT label {label:?} is invalid: at most 11 ASCII characters");
    }
    if let Some(c) = label.chars().find(|&c| {
        c.is_ascii_control()
            || matches!(
                c,
                '"' | '*'
                    | '+'
                    | ','
                    | '.'
                    | '/'
                    | ':'
                    | ';'
                    | '<'
                    | '='
                    | '>'
                    | '?'
                    | '['
                    | '\\'
                    | ']'
                    | '|'
            )
    }) {
        bail!("FAT label {label:?} is invalid: character {c:?} is not allowed");
    }
    let mut out = [b' '; 11];
    if label.trim().is_empty() {
        out.copy_from_slice(b"NO NAME    ");
    } else {
        out[..label.len()].copy_from_slice(label.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(&encode_label("bootfs").unwrap(), b"bootfs     ");
        assert_eq!(&encode_label("").unwrap(), b"NO NAME    ");
        assert!(encode_label("TWELVECHARSX").is_err());
        assert!(encode_label("A.B").is_err());
        assert!(encode_label("é").is_err());
    }

    #[test]
    fn sizes_and_cluster_choice() {
        let small = FatImage::new(vec![], opts(0)).unwrap();
        assert!(small.size() >= 33 * MIB);
        assert_eq!(small.size() % MIB, 0);
        assert!(u64::from(small.cluster_count()) >= MIN_CLUSTERS);
        let big = FatImage::new(vec![], opts(512 * MIB)).unwrap();
        assert_eq!(big.size(), 512 * MIB);
        assert_eq!(big.cluster_size(), 4096);
        let f = FatFile {
            path: "a".into(),
            data: FileData::Bytes(vec![1; 100 << 20]),
        };
        let img = FatImage::new(vec![f], opts(0)).unwrap();
        assert!(
            img.size() >= 110 * MIB && img.size() < 120 * MIB,
            "{}",
            img.size()
        );
        assert!(u64::from(img.cluster_count()) >= MIN_CLUSTERS);
    }

    #[test]
    fn bad_trees() {
        let f = |p: &str| FatFile {
            path: p.into(),
            data: FileData::Bytes(vec![]),
        };
        assert!(FatImage::new(vec![f("a/b"), f("a")], opts(0)).is_err());
        assert!(FatImage::new(vec![f("a"), f("a/b")], opts(0)).is_err());
        assert!(FatImage::new(vec![f("a"), f("a")], opts(0)).is_err());
        assert!(FatImage::new(vec![f("Readme"), f("README")], opts(0)).is_err());
        assert!(FatImage::new(vec![f("/abs")], opts(0)).is_err());
        assert!(FatImage::new(vec![f("a//b")], opts(0)).is_err());
    }

    fn opts(min_size: u64) -> FatOptions {
        FatOptions {
            label: "TEST".into(),
            volume_id: 1,
            timestamp: 0,
            min_size,
        }
    }
}
