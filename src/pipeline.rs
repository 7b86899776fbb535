//! The build pipeline: config → fetch → base → seed → compose → output.

use crate::base::{self, Base, Family};
use crate::compose::{self, ComposeInput};
use crate::config::{self, Board, Cluster, NodeSpec};
use crate::fat::{FatFile, FileData};
use crate::fetch::{self, Arch, Fetcher, K3sBundle};
use crate::lock::{Lock, LockEntry};
use crate::output::{self, Compression, Manifest, ManifestImage, ManifestInput, Partial};
use crate::secrets::Secrets;
use crate::seed;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Arguments of `nodeforge build`.
#[derive(clap::Args, Clone)]
pub struct BuildArgs {
    /// Nodes to build (hostnames from the cluster file).
    pub nodes: Vec<String>,
    /// Build every node.
    #[arg(long)]
    pub all: bool,
    /// Build every node of this role.
    #[arg(long)]
    pub role: Option<String>,
    /// Generic images: one per board and role, no secrets and no hostname (flash --node seeds them).
    #[arg(long)]
    pub generic: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output directory; each image goes to `<out>/<name>/`.
    #[arg(short, long, default_value = "out")]
    pub out: PathBuf,
    /// Total image size (e.g. `8G`, `4096M`); root grows into the space on first boot.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Also write compressed images (`xz`, `gz`; repeatable).
    #[arg(long = "compress", value_enum)]
    pub compress: Vec<Compression>,
    /// Skip the raw `.img` (keep only compressed outputs and the `.bmap`).
    #[arg(long)]
    pub no_raw: bool,
}

/// Options shared by the commands that read a cluster and fetch inputs.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Cluster file (default `./cluster.toml`, else the embedded example cluster).
    #[arg(short, long)]
    pub cluster: Option<PathBuf>,
    /// Secrets file (default `nodeforge-secrets.toml` beside the cluster file).
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Download cache (default `$XDG_CACHE_HOME/nodeforge`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache; fail naming any input that is missing.
    #[arg(long)]
    pub offline: bool,
    /// Refuse inputs that differ from `nodeforge.lock`.
    #[arg(long)]
    pub locked: bool,
    /// Lock file (default `nodeforge.lock` beside the cluster file).
    #[arg(long)]
    pub lock: Option<PathBuf>,
}

/// Arguments of `nodeforge fetch`.
#[derive(clap::Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Parse `8G`, `512M`, `4096` (bytes) and the like.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mul: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], mul)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {s:?}"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Unix seconds for every timestamp in an image: SOURCE_DATE_EPOCH, else a fixed date, so the
/// same inputs give the same bytes whenever they are built.
pub fn source_date_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        // 2020-01-01T00:00:00Z
        Err(_) => Ok(1_577_836_800),
    }
}

/// Everything loaded once per run: the cluster, the fetcher, the lock.
pub struct Session {
    pub cluster: Cluster,
    pub fetcher: Fetcher,
    pub lock: Lock,
    pub lock_path: PathBuf,
    pub locked: bool,
    /// Inputs used in this run, recorded into the lock.
    pub used: Vec<LockEntry>,
}

impl Session {
    /// Load the cluster file, the lock and set up the cache.
    pub fn open(a: &CommonArgs) -> Result<Session> {
        let path = config::cluster_path(a.cluster.as_deref());
        let cluster = config::load_cluster(path.as_deref())?;
        for w in &cluster.warnings {
            eprintln!("warning: {w}");
        }
        let lock_path = a.lock.clone().unwrap_or_else(|| match &cluster.file {
            Some(f) => f.parent().unwrap_or(Path::new(".")).join("nodeforge.lock"),
            None => PathBuf::from("nodeforge.lock"),
        });
        let lock = if a.locked {
            Lock::read(&lock_path).with_context(|| {
                format!(
                    "--locked needs {}: run `nodeforge fetch` first",
                    lock_path.display()
                )
            })?
        } else {
            Lock::read_or_default(&lock_path)?
        };
        let cache = a
            .cache_dir
            .clone()
            .unwrap_or_else(Fetcher::default_cache_dir);
        let fetcher = Fetcher::new(cache, a.offline)?;
        Ok(Session {
            cluster,
            fetcher,
            lock,
            lock_path,
            locked: a.locked,
            used: Vec::new(),
        })
    }

    fn record(&mut self, e: LockEntry) -> Result<()> {
        if self.locked {
            self.lock.check_entry(&e)?;
        }
        if !self.used.iter().any(|u| u.name == e.name) {
            self.used.push(e);
        }
        Ok(())
    }

    /// Fetch, unpack and open the base image of `board`.
    pub fn base(&mut self, board: Board) -> Result<(Base, ManifestInput)> {
        let bref = self.cluster.base(board)?.clone();
        let (src, catalog_family) = crate::catalog::resolve_base(
            &bref.base,
            bref.sha256.as_deref(),
            bref.sha512.as_deref(),
        )
        .with_context(|| format!("base image of board {}", board.as_str()))?;
        let what = format!("base image for {}", board.as_str());
        let fetched = fetch::fetch_source(&self.fetcher, &src, &what)?;
        let name = format!("base-{}", board.as_str());
        self.record(fetched.lock_entry(&name))?;
        let raw = base::unpack_base(
            &fetched.path,
            &fetched.source.sha256,
            self.fetcher.cache_dir(),
            bref.family.or(catalog_family),
        )
        .with_context(|| format!("unpacking {what} ({})", src.url))?;
        let family = bref.family.or(catalog_family);
        let opened =
            base::open(&raw, family).with_context(|| format!("reading {what} ({})", src.url))?;
        check_timezone(&self.cluster, &raw, &opened, &src.url)?;
        let expect = board_arch_families(board);
        if !expect.contains(&opened.family) {
            bail!(
                "{what} ({}) is a {} image, which does not fit board {}",
                src.url,
                opened.family.name(),
                board.as_str()
            );
        }
        Ok((
            opened,
            ManifestInput {
                name,
                url: src.url.clone(),
                sha256: fetched.source.sha256.clone(),
                size: fetched.size,
            },
        ))
    }

    /// Fetch the k3s bundle for `arch`.
    pub fn k3s(&mut self, arch: Arch) -> Result<K3sBundle> {
        let c = &self.cluster;
        let b = fetch::k3s_bundle(
            &self.fetcher,
            &c.k3s_mirror,
            &c.k3s_version,
            arch,
            c.airgap,
            &self.lock,
        )?;
        for e in b.lock_entries() {
            self.record(e)?;
        }
        Ok(b)
    }

    /// Write the lock file with every input used in this run (kept entries from before stay).
    pub fn save_lock(&mut self) -> Result<()> {
        if self.locked {
            return Ok(());
        }
        for e in &self.used {
            self.lock.upsert(e.clone());
        }
        self.lock.write(&self.lock_path)
    }
}

/// `cluster.timezone` must name a zone file of the base (cloud-init's timezone module links
/// /etc/localtime to it). UTC is not checked; a base without tzdata gets a warning.
fn check_timezone(c: &Cluster, raw: &Path, b: &Base, url: &str) -> Result<()> {
    if matches!(c.timezone.as_str(), "UTC" | "Etc/UTC") {
        return Ok(());
    }
    let Some(root) = b.layout.partitions.get(b.root) else {
        return Ok(());
    };
    let exists = |p: &str| base::read_ext4_file(raw, root, p).is_ok();
    if !exists("/usr/share/zoneinfo/UTC") {
        eprintln!(
            "warning: the base {url} has no /usr/share/zoneinfo/UTC (no tzdata?): `cluster.timezone` {:?} not checked",
            c.timezone
        );
        return Ok(());
    }
    config::rules::host::timezone_in_base(&c.timezone, url, exists)
        .map_err(|v| anyhow::anyhow!("{}: `cluster.timezone`: {v}", c.origin()))
}

/// Base families that can serve `board`.
pub fn board_arch_families(board: Board) -> &'static [Family] {
    match board {
        Board::Rpi4 => &[Family::Raspios, Family::UbuntuRaspi, Family::DebianRaspi],
        Board::X86_64 => &[Family::DebianGeneric],
    }
}

/// The files of the k3s bundle, placed under `nodeforge/` on the seed FAT.
pub fn bundle_files(b: &K3sBundle) -> Result<Vec<FatFile>> {
    let mut files = vec![
        FatFile {
            path: "k3s".into(),
            data: FileData::Path(b.binary.path.clone()),
        },
        FatFile {
            path: "install.sh".into(),
            data: FileData::Bytes(
                std::fs::read(&b.install_sh.path)
                    .with_context(|| format!("reading {}", b.install_sh.path.display()))?,
            ),
        },
    ];
    let mut info = serde_json::json!({
        "k3s_version": b.version,
        "arch": b.arch.as_str(),
        "k3s_sha256": b.binary.source.sha256,
        "install_sh_sha256": b.install_sh.source.sha256,
    });
    if let Some(a) = &b.airgap {
        let name = format!("k3s-airgap-images-{}.tar.zst", b.arch.as_str());
        info["airgap_images"] = serde_json::json!({ "file": name, "sha256": a.source.sha256 });
        files.push(FatFile {
            path: format!("images/{name}"),
            data: FileData::Path(a.path.clone()),
        });
    }
    let mut text = serde_json::to_string_pretty(&info).context("serialising bundle.json")?;
    text.push('\n');
    files.push(FatFile {
        path: "bundle.json".into(),
        data: FileData::Bytes(text.into_bytes()),
    });
    Ok(files)
}

/// Apply a node's Pi boot edits to the base's `cmdline.txt` and `config.txt`.
pub fn boot_overrides(
    base: &Base,
    pi: Option<&crate::pi::PiBoot>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let (Some(pi), Some(fat)) = (pi, &base.boot_fat) else {
        return Ok(out);
    };
    for f in &fat.files {
        let edit: fn(&str, &crate::pi::PiBoot) -> String =
            if f.path.eq_ignore_ascii_case("cmdline.txt") {
                crate::pi::edit_cmdline
            } else if f.path.eq_ignore_ascii_case("config.txt") {
                crate::pi::edit_config
            } else {
                continue;
            };
        let FileData::Bytes(b) = &f.data else {
            continue;
        };
        let text = String::from_utf8(b.clone()).with_context(|| {
            format!("{} on the base's boot partition is not UTF-8 text", f.path)
        })?;
        out.insert(f.path.clone(), edit(&text, pi).into_bytes());
    }
    if !out.keys().any(|k| k.eq_ignore_ascii_case("cmdline.txt")) {
        bail!("the base's boot partition has no cmdline.txt to add the k3s cgroup flags to");
    }
    Ok(out)
}

/// One image to build: a node, or a generic image standing for nodes of one board and role.
pub struct Target<'a> {
    /// Output name (hostname, or `<cluster>-<role>-<board>` for generic images).
    pub name: String,
    pub node: &'a NodeSpec,
    pub generic: bool,
}

/// Pick the images to build from the command line.
pub fn targets<'a>(c: &'a Cluster, a: &BuildArgs) -> Result<Vec<Target<'a>>> {
    let mut nodes: Vec<&NodeSpec> = Vec::new();
    if a.all || (a.generic && a.nodes.is_empty() && a.role.is_none()) {
        nodes.extend(c.nodes.iter());
    }
    if let Some(r) = &a.role {
        let found: Vec<&NodeSpec> = c.nodes.iter().filter(|n| &n.role == r).collect();
        if found.is_empty() {
            bail!("no node of role {r:?} in {}", c.origin());
        }
        nodes.extend(found);
    }
    for n in &a.nodes {
        nodes.push(c.node(n)?);
    }
    if nodes.is_empty() {
        bail!("say which nodes to build: node names, --all or --role ROLE");
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        let (name, generic) = if a.generic {
            (format!("{}-{}-{}", c.name, n.role, n.board.as_str()), true)
        } else {
            (n.hostname.clone(), false)
        };
        if seen.insert(name.clone()) {
            out.push(Target {
                name,
                node: n,
                generic,
            });
        }
    }
    Ok(out)
}

/// Build `targets` into `out`; returns the image directories.
pub fn build(s: &mut Session, a: &BuildArgs) -> Result<Vec<PathBuf>> {
    output::ensure_dir(&a.out)?;
    let epoch = source_date_epoch()?;
    let cluster = s.cluster.clone();
    let targets = targets(&cluster, a)?;
    let secrets: Option<Secrets> = if targets.iter().all(|t| t.generic) {
        None
    } else {
        let path = s
            .cluster_secrets_path(a)
            .context("locating the secrets file")?;
        // A build gives new nodes their password (like `init --update`); values are never shown.
        Some(crate::addons::ensure_secrets(&path, &cluster)?)
    };

    let mut bases: BTreeMap<Board, (Base, ManifestInput)> = BTreeMap::new();
    let mut bundles: BTreeMap<Arch, K3sBundle> = BTreeMap::new();
    for t in &targets {
        let board = t.node.board;
        if let std::collections::btree_map::Entry::Vacant(e) = bases.entry(board) {
            e.insert(s.base(board)?);
        }
        let arch = board.arch();
        if let std::collections::btree_map::Entry::Vacant(e) = bundles.entry(arch) {
            e.insert(s.k3s(arch)?);
        }
    }
    let mut dirs = Vec::new();
    for t in &targets {
        let (base, base_input) = &bases[&t.node.board];
        let bundle = &bundles[&t.node.board.arch()];
        let secrets = if t.generic { None } else { secrets.as_ref() };
        let dir = build_one(&cluster, t, base, base_input, bundle, secrets, a, epoch)?;
        dirs.push(dir);
    }
    s.save_lock()?;
    Ok(dirs)
}

impl Session {
    fn cluster_secrets_path(&self, a: &BuildArgs) -> Result<PathBuf> {
        Ok(a.common
            .secrets
            .clone()
            .unwrap_or_else(|| self.cluster.default_secrets_path()))
    }
}

#[allow(clippy::too_many_arguments)]
fn build_one(
    cluster: &Cluster,
    t: &Target,
    base: &Base,
    base_input: &ManifestInput,
    bundle: &K3sBundle,
    secrets: Option<&Secrets>,
    a: &BuildArgs,
    epoch: i64,
) -> Result<PathBuf> {
    let node = t.node;
    eprintln!(
        "building {} ({}, {}, {} base)",
        t.name,
        node.role,
        node.board.as_str(),
        base.family.name()
    );
    let seed = seed::render(cluster, node, secrets, base.family, epoch)
        .with_context(|| format!("rendering the seed of {}", t.name))?;
    let input = ComposeInput {
        base,
        seed: seed
            .files
            .iter()
            .map(|(n, b)| FatFile {
                path: n.clone(),
                data: FileData::Bytes(b.clone()),
            })
            .collect(),
        bundle: bundle_files(bundle)?,
        boot_overrides: boot_overrides(base, seed.pi.as_ref())?,
        size: a.size,
        timestamp: epoch,
        identity: format!("{}/{}", cluster.name, t.name),
    };
    let plan =
        compose::plan(&input).with_context(|| format!("planning the image of {}", t.name))?;

    let dir = a.out.join(&t.name);
    // A node image holds its cluster token and node password: the image, its compressed forms
    // and its directory are private; a generic image is meant to be published.
    let holds_secrets = secrets.is_some();
    if holds_secrets {
        output::ensure_private_dir(&dir)?;
    } else {
        output::ensure_dir(&dir)?;
    }
    let img = dir.join(format!("{}.img", t.name));
    let partial = Partial::new(&img);
    let img_mode = if holds_secrets {
        output::SECRET_FILE_MODE
    } else {
        0o644
    };
    drop(output::create_with_mode(partial.path(), img_mode)?);
    compose::write(&plan, &base.raw, partial.path())
        .with_context(|| format!("writing the image of {}", t.name))?;
    let bmap = crate::bmap::generate(partial.path())
        .with_context(|| format!("computing the block map of {}", img.display()))?;
    let img_sha = crate::hash::sha256_file(partial.path())?;
    let img = partial.commit()?;
    let bmap_path = dir.join(format!("{}.img.bmap", t.name));
    crate::bmap::write(&bmap, &bmap_path)?;

    let sbom_path = dir.join(crate::sbom::file_name(&t.name));
    let sbom = crate::sbom::image_sbom(
        cluster, node, &t.name, t.generic, base, base_input, bundle, &img_sha, epoch,
    )
    .with_context(|| format!("making the SBOM of {}", t.name))?;
    output::write_atomic(&sbom_path, &sbom)?;

    let mut files = vec![(bmap_path, None), (sbom_path, None)];
    for how in &a.compress {
        let dest = dir.join(format!("{}.img.{}", t.name, how.suffix()));
        output::compress(&img, &dest, *how)?;
        files.push((dest, None));
    }
    let manifest = Manifest {
        nodeforge_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: cluster.name.clone(),
        node: (!t.generic).then(|| node.hostname.clone()),
        role: node.role.clone(),
        board: node.board.as_str().to_string(),
        family: base.family.name().to_string(),
        k3s_version: bundle.version.clone(),
        generic: t.generic,
        instance_id: (!t.generic).then(|| seed.instance_id.clone()),
        sbom: crate::sbom::file_name(&t.name),
        source_date_epoch: epoch,
        inputs: {
            let mut v = vec![base_input.clone()];
            for e in bundle.lock_entries() {
                v.push(ManifestInput {
                    name: e.name,
                    url: e.url,
                    sha256: e.sha256,
                    size: e.size,
                });
            }
            v
        },
        image: ManifestImage {
            file: format!("{}.img", t.name),
            size: plan.disk_size,
            sha256: img_sha,
            partitions: plan.layout.clone(),
        },
    };
    files.push((output::write_manifest(&dir, &manifest)?, None));
    if a.no_raw {
        std::fs::remove_file(&img).with_context(|| format!("removing {}", img.display()))?;
    } else {
        files.push((img.clone(), Some(manifest.image.sha256.clone())));
    }
    output::write_sha256sums(&dir, &files)?;
    eprintln!("built {}", dir.display());
    Ok(dir)
}

/// Run `nodeforge build`.
pub fn cmd_build(a: &BuildArgs) -> Result<()> {
    let mut s = Session::open(&a.common)?;
    build(&mut s, a)?;
    Ok(())
}

/// Run `nodeforge fetch`: every base and k3s bundle the cluster needs, then the lock file.
pub fn cmd_fetch(a: &FetchArgs) -> Result<()> {
    let mut s = Session::open(&a.common)?;
    let boards: BTreeSet<Board> = s.cluster.nodes.iter().map(|n| n.board).collect();
    for b in &boards {
        s.base(*b)?;
    }
    let arches: BTreeSet<Arch> = boards.iter().map(|b| b.arch()).collect();
    for a in arches {
        s.k3s(a)?;
    }
    s.save_lock()?;
    eprintln!("wrote {}", s.lock_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("x").is_err());
    }
}
