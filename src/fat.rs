//! FAT32 volumes: read a base's boot FAT (fatfs) and write a fresh, deterministic one.
//!
//! The writer is our own: fatfs 0.3.6 writes long-name entries for `.`/`..`, which fsck.vfat
//! rejects (rust-fatfs #117). Layout: 32 reserved sectors (boot sector, FSInfo at 1, backup boot
//! sector at 6, backup FSInfo at 7), two FATs, then the data region; the root directory starts at
//! cluster 2, then the other directories, then the files, each contiguous, all in sorted order.

mod names;
mod read;

pub use read::read_fat;

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
pub enum FileData {
    Bytes(Vec<u8>),
    /// Large files (the k3s binary, airgap images) are streamed from disk.
    Path(PathBuf),
}

/// One file for a new FAT volume; `path` is relative, `/`-separated (e.g. `overlays/x.dtbo`).
#[derive(Clone, Debug)]
pub struct FatFile {
    pub path: String,
    pub data: FileData,
}

/// Volume parameters for a new FAT32 volume.
#[derive(Clone, Debug)]
pub struct FatOptions {
    /// Up to 11 characters.
    pub label: String,
    pub volume_id: u32,
    /// Unix seconds used for every timestamp (SOURCE_DATE_EPOCH or derived from inputs).
    pub timestamp: i64,
    /// The volume is never smaller than this many bytes.
    pub min_size: u64,
}

/// The contents of an existing FAT volume.
pub struct BaseFat {
    pub label: String,
    pub volume_id: u32,
    pub files: Vec<FatFile>,
}

const SECTOR: u64 = 512;
const RESERVED_SECTORS: u64 = 32;
const NUM_FATS: u64 = 2;
const MIB: u64 = 1 << 20;
/// FAT32 needs at least 65525 clusters; keep a margin so no driver guesses FAT16.
const MIN_CLUSTERS: u64 = 66_000;
/// Largest valid FAT32 cluster count.
const MAX_CLUSTERS: u64 = 0x0FFF_FFF4;
/// Chunk size for streaming file data.
const CHUNK: usize = 4 << 20;
/// Granularity at which all-zero data is left as a hole.
const ZERO_BLOCK: usize = 64 << 10;
static ZEROS: [u8; ZERO_BLOCK] = [0; ZERO_BLOCK];
/// FAT limits a directory to 65536 entries of 32 bytes.
const MAX_DIR_ENTRIES: usize = 65536;
const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME: u8 = 0x08;
const EOC: u32 = 0x0FFF_FFFF;

/// A file placed in the volume.
struct PlacedFile {
    path: String,
    data: FileData,
    size: u64,
    cluster: u32,
}

/// A directory placed in the volume, with its encoded entries.
struct PlacedDir {
    cluster: u32,
    clusters: u32,
    entries: Vec<u8>,
}

/// A planned FAT32 volume, ready to be written.
pub struct FatImage {
    total_sectors: u32,
    sectors_per_cluster: u32,
    fat_sectors: u32,
    hidden_sectors: u32,
    label: [u8; 11],
    volume_id: u32,
    dirs: Vec<PlacedDir>,
    files: Vec<PlacedFile>,
    /// Clusters used by directories and files (from cluster 2 on, contiguous).
    used_clusters: u32,
    cluster_count: u32,
}

/// One node of the directory tree while planning.
enum Node {
    File(usize),
    Dir(BTreeMap<String, Node>),
}

/// A directory flattened in pre-order: its parent and its sorted children.
struct FlatDir {
    parent: Option<usize>,
    children: Vec<(String, Child)>,
}

#[derive(Clone, Copy)]
enum Child {
    File(usize),
    Dir(usize),
}

/// Encoded name of one directory entry: short name plus whether a long name is stored.
struct EntryName {
    short: [u8; 11],
    long: bool,
}

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

    /// Size of the volume in bytes (a multiple of 512).
    pub fn size(&self) -> u64 {
        u64::from(self.total_sectors) * SECTOR
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * SECTOR
    }

    /// Number of data clusters of the volume.
    pub fn cluster_count(&self) -> u32 {
        self.cluster_count
    }

    /// Bytes from the volume start to the end of the last used cluster: everything past it is
    /// free space (files and directories are laid out contiguously from the first cluster), so a
    /// writer onto a used device must write exactly this prefix, holes included.
    pub fn used_len(&self) -> u64 {
        (RESERVED_SECTORS + NUM_FATS * u64::from(self.fat_sectors)) * SECTOR
            + u64::from(self.used_clusters) * self.cluster_size()
    }

    /// Record the partition's start sector in the BPB "hidden sectors" field (0 by default).
    pub fn set_hidden_sectors(&mut self, start_lba: u32) {
        self.hidden_sectors = start_lba;
    }

    /// Write the volume at `offset` in `out`; all-zero regions are left as holes.
    ///
    /// `out` is extended to `offset + size()` if shorter; the regions not written must read as
    /// zeros (a fresh file sized with `set_len`).
    pub fn write_at(&self, out: &File, offset: u64) -> Result<()> {
        // Check every input first, so a changed file fails before anything is written.
        for f in &self.files {
            if let FileData::Path(p) = &f.data {
                let len = std::fs::metadata(p)
                    .with_context(|| {
                        format!("reading metadata of {} (FAT file {})", p.display(), f.path)
                    })?
                    .len();
                if len != f.size {
                    bail!(
                        "{} (FAT file {}) changed size from {} to {len} bytes while building the image",
                        p.display(),
                        f.path,
                        f.size
                    );
                }
            }
        }
        let end = offset + self.size();
        let cur = out
            .metadata()
            .context("reading the output's metadata before writing the FAT")?
            .len();
        if cur < end {
            out.set_len(end)
                .context("extending the output for the FAT volume")?;
        }

        let mut reserved = vec![0u8; (RESERVED_SECTORS * SECTOR) as usize];
        let boot = self.boot_sector();
        let info = self.fs_info();
        for (sector, data) in [(0usize, &boot), (1, &info), (6, &boot), (7, &info)] {
            reserved[sector * 512..sector * 512 + 512].copy_from_slice(&data[..]);
        }
        out.write_all_at(&reserved, offset)
            .context("writing the FAT boot sectors")?;

        let fat = self.fat_table();
        for i in 0..NUM_FATS {
            let at = offset + (RESERVED_SECTORS + i * u64::from(self.fat_sectors)) * SECTOR;
            out.write_all_at(&fat, at)
                .with_context(|| format!("writing FAT #{}", i + 1))?;
        }

        let cs = self.cluster_size();
        for d in &self.dirs {
            let mut buf = d.entries.clone();
            buf.resize((u64::from(d.clusters) * cs) as usize, 0);
            out.write_all_at(&buf, offset + self.cluster_offset(d.cluster))
                .context("writing a FAT directory")?;
        }

        let mut buf = vec![0u8; CHUNK];
        for f in &self.files {
            if f.size == 0 {
                continue;
            }
            let at = offset + self.cluster_offset(f.cluster);
            match &f.data {
                FileData::Bytes(b) => write_skipping_zeros(out, b, at)
                    .with_context(|| format!("writing FAT file {}", f.path))?,
                FileData::Path(p) => self.copy_path(out, p, f, at, &mut buf)?,
            }
        }
        Ok(())
    }

    /// Stream a file from disk into its clusters, checking it did not change since `new`.
    fn copy_path(
        &self,
        out: &File,
        p: &std::path::Path,
        f: &PlacedFile,
        at: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let mut src = File::open(p)
            .with_context(|| format!("opening {} for FAT file {}", p.display(), f.path))?;
        let len = src
            .metadata()
            .with_context(|| format!("reading metadata of {}", p.display()))?
            .len();
        if len != f.size {
            bail!(
                "{} (FAT file {}) changed size from {} to {len} bytes while building the image",
                p.display(),
                f.path,
                f.size
            );
        }
        let mut done: u64 = 0;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = src
                    .read(&mut buf[filled..])
                    .with_context(|| format!("reading {} for FAT file {}", p.display(), f.path))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            if done + filled as u64 > f.size {
                bail!(
                    "{} (FAT file {}) grew while building the image",
                    p.display(),
                    f.path
                );
            }
            write_skipping_zeros(out, &buf[..filled], at + done)
                .with_context(|| format!("writing FAT file {} from {}", f.path, p.display()))?;
            done += filled as u64;
        }
        if done != f.size {
            bail!(
                "{} (FAT file {}) shrank to {done} bytes (expected {}) while building the image",
                p.display(),
                f.path,
                f.size
            );
        }
        Ok(())
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        let data = RESERVED_SECTORS + NUM_FATS * u64::from(self.fat_sectors);
        (data + u64::from(cluster - 2) * u64::from(self.sectors_per_cluster)) * SECTOR
    }

    /// The FAT: entries 0 and 1 reserved, then one contiguous chain per directory and file.
    fn fat_table(&self) -> Vec<u8> {
        let n = 2 + self.used_clusters as usize;
        let mut fat = vec![0u32; n];
        fat[0] = 0x0FFF_FF00 | 0xF8;
        fat[1] = EOC;
        let mut chain = |first: u32, len: u32| {
            for c in first..first + len {
                fat[c as usize] = if c + 1 == first + len { EOC } else { c + 1 };
            }
        };
        for d in &self.dirs {
            chain(d.cluster, d.clusters);
        }
        let cs = self.cluster_size();
        for f in &self.files {
            if f.size > 0 {
                chain(f.cluster, f.size.div_ceil(cs) as u32);
            }
        }
        let mut bytes: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
        bytes.resize(bytes.len().next_multiple_of(SECTOR as usize), 0);
        bytes
    }

    fn boot_sector(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
        b[3..11].copy_from_slice(b"MSWIN4.1");
        b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
        b[13] = self.sectors_per_cluster as u8;
        b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
        b[16] = NUM_FATS as u8;
        // Root entries, 16-bit total sectors, 16-bit FAT size: 0 on FAT32.
        b[21] = 0xF8;
        b[24..26].copy_from_slice(&63u16.to_le_bytes());
        b[26..28].copy_from_slice(&255u16.to_le_bytes());
        b[28..32].copy_from_slice(&self.hidden_sectors.to_le_bytes());
        b[32..36].copy_from_slice(&self.total_sectors.to_le_bytes());
        b[36..40].copy_from_slice(&self.fat_sectors.to_le_bytes());
        // Flags 0 (FATs mirrored), version 0.0.
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[48..50].copy_from_slice(&1u16.to_le_bytes());
        b[50..52].copy_from_slice(&6u16.to_le_bytes());
        b[64] = 0x80;
        b[66] = 0x29;
        b[67..71].copy_from_slice(&self.volume_id.to_le_bytes());
        b[71..82].copy_from_slice(&self.label);
        b[82..90].copy_from_slice(b"FAT32   ");
        // Boot code: an endless loop (`jmp $`) for firmware that tries to run it.
        b[90..92].copy_from_slice(&[0xEB, 0xFE]);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    fn fs_info(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
        b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
        let free = self.cluster_count - self.used_clusters;
        b[488..492].copy_from_slice(&free.to_le_bytes());
        let next_free = if free > 0 {
            2 + self.used_clusters
        } else {
            0xFFFF_FFFF
        };
        b[492..496].copy_from_slice(&next_free.to_le_bytes());
        b[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
        b
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

/// Write `data` at `at`, leaving 64 KiB blocks that are all zeros unwritten.
fn write_skipping_zeros(out: &File, data: &[u8], at: u64) -> std::io::Result<()> {
    let mut start = 0;
    let mut run: Option<usize> = None;
    while start < data.len() {
        let end = (start + ZERO_BLOCK).min(data.len());
        // A slice compare is a memcmp: vectorised, and it stops at the first non-zero byte.
        let zero = data[start..end] == ZEROS[..end - start];
        match (zero, run) {
            (true, Some(r)) => {
                out.write_all_at(&data[r..start], at + r as u64)?;
                run = None;
            }
            (false, None) => run = Some(start),
            _ => {}
        }
        start = end;
    }
    if let Some(r) = run {
        out.write_all_at(&data[r..], at + r as u64)?;
    }
    Ok(())
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

/// Build the directory tree from the file list, rejecting invalid and clashing paths.
fn build_tree(files: &[FatFile]) -> Result<BTreeMap<String, Node>> {
    let mut root = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let parts: Vec<&str> = f.path.split('/').collect();
        for p in &parts {
            names::validate_component(p, &f.path)?;
        }
        let (leaf, dirs) = parts.split_last().context("empty FAT path")?;
        let mut cur = &mut root;
        for (k, d) in dirs.iter().enumerate() {
            let node = cur
                .entry(d.to_string())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            cur = match node {
                Node::Dir(m) => m,
                Node::File(_) => bail!(
                    "FAT path {} needs {} to be a directory, but it is also a file",
                    f.path,
                    parts[..=k].join("/")
                ),
            };
        }
        match cur.get(*leaf) {
            Some(Node::File(_)) => bail!("FAT path {} appears twice in the file list", f.path),
            Some(Node::Dir(_)) => bail!("FAT path {} is both a file and a directory", f.path),
            None => {
                cur.insert(leaf.to_string(), Node::File(i));
            }
        }
    }
    Ok(root)
}

/// Flatten the tree in pre-order (root first); children keep byte order of their names.
fn flatten(tree: BTreeMap<String, Node>, parent: Option<usize>, out: &mut Vec<FlatDir>) -> usize {
    let me = out.len();
    out.push(FlatDir {
        parent,
        children: Vec::new(),
    });
    let mut children = Vec::with_capacity(tree.len());
    for (name, node) in tree {
        match node {
            Node::File(i) => children.push((name, Child::File(i))),
            Node::Dir(m) => {
                let idx = flatten(m, Some(me), out);
                children.push((name, Child::Dir(idx)));
            }
        }
    }
    out[me].children = children;
    me
}

/// Path of directory `i` (for messages), without a leading slash.
fn dir_path(flat: &[FlatDir], i: usize) -> String {
    let mut parts = Vec::new();
    let mut cur = i;
    while let Some(p) = flat[cur].parent {
        if let Some((n, _)) = flat[p]
            .children
            .iter()
            .find(|(_, c)| matches!(c, Child::Dir(d) if *d == cur))
        {
            parts.push(n.clone());
        }
        cur = p;
    }
    parts.reverse();
    parts.join("/")
}

/// Short names (and whether a long name is needed) for every child of a directory.
fn assign_names(d: &FlatDir, files: &[FatFile], flat: &[FlatDir]) -> Result<Vec<EntryName>> {
    let mut folded: HashMap<String, &str> = HashMap::new();
    for (name, child) in &d.children {
        if let Some(other) = folded.insert(name.to_uppercase(), name) {
            let where_ = match child {
                Child::File(fi) => files[*fi].path.clone(),
                Child::Dir(di) => dir_path(flat, *di),
            };
            bail!("FAT names {other:?} and {name:?} (at {where_}) differ only in case; FAT cannot hold both");
        }
    }
    let mut used: HashSet<[u8; 11]> = HashSet::new();
    let plain: Vec<Option<[u8; 11]>> = d
        .children
        .iter()
        .map(|(n, _)| names::plain_short_name(n))
        .collect();
    for s in plain.iter().flatten() {
        used.insert(*s);
    }
    let mut out = Vec::with_capacity(d.children.len());
    for ((name, _), p) in d.children.iter().zip(plain) {
        out.push(match p {
            Some(short) => EntryName { short, long: false },
            None => EntryName {
                short: names::generate_short_name(name, &mut used)?,
                long: true,
            },
        });
    }
    Ok(out)
}

/// FAT date and time for every entry.
struct Stamp {
    date: u16,
    time: u16,
    tenths: u8,
}

fn dir_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32, t: &Stamp) -> [u8; 32] {
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
fn fat_timestamp(unix: i64) -> (u16, u16, u8) {
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
fn civil_from_days(z: i64) -> (i64, i64, i64) {
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
