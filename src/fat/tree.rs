//! The directory tree of a new volume: paths checked and grouped, flattened in pre-order, and
//! short/long names assigned per directory.

use super::names;
use super::*;

/// One node of the directory tree while planning.
pub(super) enum Node {
    File(usize),
    Dir(BTreeMap<String, Node>),
}

/// A directory flattened in pre-order: its parent and its sorted children.
pub(super) struct FlatDir {
    pub(super) parent: Option<usize>,
    pub(super) children: Vec<(String, Child)>,
}

#[derive(Clone, Copy)]
pub(super) enum Child {
    File(usize),
    Dir(usize),
}

/// Encoded name of one directory entry: short name plus whether a long name is stored.
pub(super) struct EntryName {
    pub(super) short: [u8; 11],
    pub(super) long: bool,
}

/// Build the directory tree from the file list, rejecting invalid and clashing paths.
pub(super) fn build_tree(files: &[FatFile]) -> Result<BTreeMap<String, Node>> {
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
pub(super) fn flatten(
    tree: BTreeMap<String, Node>,
    parent: Option<usize>,
    out: &mut Vec<FlatDir>,
) -> usize {
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
pub(super) fn dir_path(flat: &[FlatDir], i: usize) -> String {
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
pub(super) fn assign_names(
    d: &FlatDir,
    files: &[FatFile],
    flat: &[FlatDir],
) -> Result<Vec<EntryName>> {
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
