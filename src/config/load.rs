//! Reading `cluster.toml`: the raw file as written (unknown keys refused with their line), role
//! profiles, user manifests, and the resolution of every node into a [`NodeSpec`], with the
//! issues found on the way.

use super::*;

fn default_datastore() -> String {
    "sqlite".into()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_admin() -> String {
    "k3s-admin".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster: RawCluster,
    #[serde(default)]
    boards: RawBoards,
    #[serde(default)]
    k3s: RawK3s,
    #[serde(default)]
    addons: Addons,
    #[serde(default)]
    registries: Option<Registries>,
    #[serde(default)]
    nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    k3s_version: String,
    server: String,
    #[serde(default = "default_datastore")]
    datastore: String,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default = "default_admin")]
    admin_user: String,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    tls_san: Vec<String>,
    #[serde(default)]
    etcd_snapshot_schedule: Option<String>,
    #[serde(default)]
    etcd_snapshot_retention: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBoards {
    #[serde(default)]
    rpi4: Option<BaseRef>,
    #[serde(default)]
    x86_64: Option<BaseRef>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawK3s {
    #[serde(default)]
    mirror: Option<String>,
    #[serde(default)]
    airgap: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    hostname: toml::Spanned<String>,
    role: String,
    board: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    usb_quirks: Vec<String>,
    #[serde(default)]
    data_disk: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    taints: Vec<String>,
    #[serde(default)]
    k3s: toml::Table,
    #[serde(default)]
    profile: Option<String>,
}

/// Resolve a base/mirror reference: URLs and catalog names stay; `file://relative` and plain paths
/// (anything with a `/`, an image extension, or naming an existing file) become absolute `file://`
/// URLs against `dir`. Other bare words stay as they are (the catalog reports unknown names).
pub fn resolve_ref(s: &str, dir: &Path) -> String {
    let path = if let Some(p) = s.strip_prefix("file://") {
        p
    } else if s.contains("://") || is_catalog_name(s) {
        return s.to_string();
    } else {
        let image_ext = [".img", ".raw", ".xz", ".gz", ".zst", ".tar", ".iso"]
            .iter()
            .any(|e| s.ends_with(e));
        if !(s.contains('/') || image_ext || dir.join(s).exists()) {
            return s.to_string();
        }
        s
    };
    let p = Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let base = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|c| c.join(dir))
                .unwrap_or_else(|_| dir.to_path_buf())
        };
        base.join(p)
    };
    format!("file://{}", abs.display())
}

/// True when `s` names an entry of the pinned base catalog.
pub fn is_catalog_name(s: &str) -> bool {
    matches!(crate::catalog::lookup(s), Ok(Some(_)))
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Load the cluster file at `path`, or the embedded example when `None`.
pub fn load_cluster(path: Option<&Path>) -> Result<Cluster> {
    match path {
        None => parse_cluster(EXAMPLE_CLUSTER, None),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read cluster file {}", p.display()))?;
            parse_cluster(&text, Some(p))
        }
    }
}

/// The cluster file to use: `arg` when given, else `./cluster.toml` when it exists, else `None`
/// (the embedded example).
pub fn cluster_path(arg: Option<&Path>) -> Option<PathBuf> {
    match arg {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = PathBuf::from("cluster.toml");
            p.exists().then_some(p)
        }
    }
}

/// A cluster file checked: the cluster when it could be resolved, and every issue found (with file
/// lines filled in), for `check` and `check --json`.
#[derive(Debug)]
pub struct Report {
    /// The cluster file's name for messages.
    pub origin: String,
    /// The resolved cluster (`None` when resolving failed); its `warnings` are filled in.
    pub cluster: Option<Cluster>,
    /// Errors and warnings, in the order found.
    pub issues: Vec<Issue>,
}

impl Report {
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }
    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Issue> {
        self.issues
            .iter()
            .filter(|i| i.severity == Severity::Warning)
    }
}

/// Parse, resolve and validate cluster text. `file` names it in messages and gives the directory
/// for relative paths and user `profiles/`/`overlays/`. Validation errors fail (one line each:
/// node, line, key, value, rule and its source); warnings are kept in `Cluster::warnings`.
pub fn parse_cluster(text: &str, file: Option<&Path>) -> Result<Cluster> {
    let report = analyze_cluster(text, file)?;
    let errors: Vec<String> = report.errors().map(Issue::to_string).collect();
    if !errors.is_empty() {
        bail!("{}:\n  {}", report.origin, errors.join("\n  "));
    }
    report
        .cluster
        .with_context(|| format!("{}: the cluster could not be resolved", report.origin))
}

/// Parse, resolve and validate cluster text, returning every issue rather than failing on the
/// first. Fails only when the text is not a valid cluster file at all (TOML syntax, unknown keys,
/// wrong types) or a user profile cannot be read.
pub fn analyze_cluster(text: &str, file: Option<&Path>) -> Result<Report> {
    let origin = match file {
        Some(p) => p.display().to_string(),
        None => "the embedded example cluster".to_string(),
    };
    let raw: RawFile =
        toml::from_str(text).with_context(|| format!("invalid cluster file {origin}"))?;
    let key_lines = KeyLines::parse(text);
    let dir: PathBuf = match file.and_then(|p| p.parent()) {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let user_dir = file.map(|_| dir.clone());
    let mut issues: Vec<Issue> = Vec::new();

    let datastore = match Datastore::parse(&raw.cluster.datastore) {
        Ok(d) => d,
        Err(e) => {
            let mut i = Issue::error(None, format!("{e:#}"));
            i.key = Some("cluster.datastore".into());
            i.value = Some(rules::net::redact_password(&raw.cluster.datastore));
            issues.push(i);
            Datastore::Sqlite
        }
    };

    let mut boards = BTreeMap::new();
    for (b, r) in [
        (Board::Rpi4, raw.boards.rpi4),
        (Board::X86_64, raw.boards.x86_64),
    ] {
        let r = match r {
            Some(mut r) => {
                r.base = resolve_ref(&r.base, &dir);
                if !r.is_catalog() && r.sha256.is_none() && r.sha512.is_none() {
                    let mut i = Issue::error(
                        None,
                        format!(
                            "[boards.{b}] base {} is a URL or path: it needs `sha256` or `sha512`",
                            r.base
                        ),
                    );
                    i.key = Some(format!("boards.{b}.base"));
                    issues.push(i);
                }
                r
            }
            None => BaseRef {
                base: DEFAULT_BASES
                    .iter()
                    .find(|(db, _)| *db == b)
                    .map(|x| x.1.to_string())
                    .unwrap_or_default(),
                sha256: None,
                sha512: None,
                family: None,
            },
        };
        boards.insert(b, r);
    }

    let profiles = ProfileSet::load(user_dir.as_deref())?;
    let mut nodes = Vec::new();
    // hostname -> index of its first [[nodes]] entry (for key paths) and that entry's line
    let mut entry: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut seen_first_server = false;
    for (idx, rn) in raw.nodes.into_iter().enumerate() {
        let at = line_of(text, rn.hostname.span().start);
        let line = Some(at);
        let hostname = rn.hostname.get_ref().clone();
        entry.entry(hostname.clone()).or_insert((idx, at));
        let who = Some(hostname.clone());
        let board = match Board::parse(&rn.board) {
            Some(b) => b,
            None => {
                let mut i = Issue::error(
                    who,
                    format!(
                        "unknown board {:?} (known: {})",
                        rn.board,
                        Board::ALL.map(|b| b.as_str()).join(", ")
                    ),
                );
                i.key = Some("board".into());
                issues.push(i);
                continue;
            }
        };
        if !profiles.has(&rn.role) {
            let mut i = Issue::error(
                who,
                format!(
                    "unknown role {:?} (known: {}; or add profiles/{}.toml beside the cluster file)",
                    rn.role,
                    profiles.names().join(", "),
                    rn.role
                ),
            );
            i.key = Some("role".into());
            issues.push(i);
            continue;
        }
        let pname = rn.profile.clone().unwrap_or_else(|| rn.role.clone());
        let profile = match profiles.get(&pname) {
            Some(p) => p.clone(),
            None => {
                let mut i = Issue::error(
                    who,
                    format!(
                        "unknown profile {pname:?} (known: {})",
                        profiles.names().join(", ")
                    ),
                );
                i.key = Some("profile".into());
                issues.push(i);
                continue;
            }
        };
        let network = match parse_network(&rn) {
            Ok(n) => n,
            Err(mut i) => {
                i.node = who;
                issues.push(*i);
                continue;
            }
        };
        let first_server = profile.k3s_role == K3sRole::Server && !seen_first_server;
        seen_first_server |= profile.k3s_role == K3sRole::Server;
        nodes.push(NodeSpec {
            hostname,
            role: rn.role,
            board,
            network,
            interface: rn.interface,
            usb_quirks: rn.usb_quirks,
            data_disk: rn.data_disk,
            labels: rn.labels,
            taints: rn.taints,
            k3s_extra: rn.k3s,
            profile,
            first_server,
            line,
        });
    }

    let user_manifests = match &user_dir {
        Some(d) => read_user_manifests(d)?,
        None => Vec::new(),
    };
    let mut cluster = Cluster {
        name: raw.cluster.name,
        k3s_version: raw.cluster.k3s_version,
        server: raw.cluster.server,
        datastore,
        ssh_authorized_keys: raw.cluster.ssh_authorized_keys,
        timezone: raw.cluster.timezone,
        admin_user: raw.cluster.admin_user,
        domain: raw.cluster.domain,
        tls_san: raw.cluster.tls_san,
        etcd_snapshot_schedule: raw
            .cluster
            .etcd_snapshot_schedule
            .unwrap_or_else(|| "0 */12 * * *".into()),
        etcd_snapshot_retention: raw.cluster.etcd_snapshot_retention.unwrap_or(5),
        boards,
        k3s_mirror: resolve_ref(
            raw.k3s.mirror.as_deref().unwrap_or(DEFAULT_K3S_MIRROR),
            &dir,
        ),
        airgap: raw.k3s.airgap,
        addons: raw.addons,
        registries: raw.registries,
        nodes,
        file: file.map(Path::to_path_buf),
        user_manifests,
        warnings: Vec::new(),
    };
    issues.extend(validate(&cluster));
    // Point each issue at its line: the value's own line, else its node entry's.
    for i in &mut issues {
        let node = i.node.as_deref().and_then(|n| entry.get(n));
        i.line = match (&i.key, node) {
            (Some(k), Some((idx, l))) => key_lines
                .get(&format!("nodes.{idx}.{k}"))
                .filter(|_| !k.starts_with("profile ") && !k.starts_with("cluster."))
                .or_else(|| {
                    k.starts_with("cluster.")
                        .then(|| key_lines.get(k))
                        .flatten()
                })
                .or(Some(*l)),
            (None, Some((_, l))) => Some(*l),
            (Some(k), None) => key_lines.get(k),
            (None, None) => None,
        };
    }
    cluster.warnings = issues
        .iter()
        .filter(|i| i.severity == Severity::Warning)
        .map(Issue::to_string)
        .collect();
    let errors = issues.iter().any(|i| i.severity == Severity::Error);
    Ok(Report {
        origin,
        cluster: (!errors).then_some(cluster),
        issues,
    })
}

/// The node's network from its raw entry; a value breaking its rule comes back as an issue
/// (without node and line, which the caller adds).
fn parse_network(rn: &RawNode) -> std::result::Result<Network, Box<Issue>> {
    let broken = |key: &str, value: &str, v: rules::Violation| {
        Box::new(Issue::broken(Severity::Error, None, key, value, &v))
    };
    let Some(addr) = &rn.address else {
        if rn.gateway.is_some() || !rn.dns.is_empty() {
            return Err(Box::new(Issue::error(
                None,
                "`gateway`/`dns` need a static `address` (omit them for DHCP)",
            )));
        }
        return Ok(Network::Dhcp);
    };
    let (address, prefix) =
        rules::net::static_address(addr).map_err(|v| broken("address", addr, v))?;
    let gateway = match &rn.gateway {
        Some(g) => {
            Some(rules::net::gateway(address, prefix, g).map_err(|v| broken("gateway", g, v))?)
        }
        None => None,
    };
    let mut dns = Vec::new();
    for (i, d) in rn.dns.iter().enumerate() {
        dns.push(rules::net::dns_server(d).map_err(|v| broken(&format!("dns.{i}"), d, v))?);
    }
    Ok(Network::Static {
        address,
        prefix,
        gateway,
        dns,
    })
}

fn read_user_manifests(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mdir = dir.join("overlays").join("manifests");
    if !mdir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&mdir).with_context(|| format!("cannot list {}", mdir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", mdir.display()))?;
        let name = e.file_name().to_string_lossy().to_string();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let bytes = std::fs::read(e.path())
            .with_context(|| format!("cannot read {}", e.path().display()))?;
        out.push((name, bytes));
    }
    out.sort();
    Ok(out)
}

/// The profiles available to a cluster: built-in, then `<dir>/profiles/*.toml` (which may override).
pub struct ProfileSet {
    map: BTreeMap<String, Profile>,
}

impl ProfileSet {
    /// Built-in profiles plus the user's `<dir>/profiles/*.toml`.
    pub fn load(user_dir: Option<&Path>) -> Result<ProfileSet> {
        let mut map = BTreeMap::new();
        for (name, text) in BUILTIN_PROFILES {
            let p = Profile::parse(name, text, &format!("profiles/{name}.toml (built in)"))?;
            map.insert(name.to_string(), p);
        }
        if let Some(d) = user_dir {
            let pdir = d.join("profiles");
            if pdir.is_dir() {
                for e in std::fs::read_dir(&pdir)
                    .with_context(|| format!("cannot list {}", pdir.display()))?
                {
                    let e = e.with_context(|| format!("cannot list {}", pdir.display()))?;
                    let path = e.path();
                    if path.extension().and_then(|x| x.to_str()) != Some("toml") {
                        continue;
                    }
                    let name = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .with_context(|| format!("bad profile file name {}", path.display()))?
                        .to_string();
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read profile {}", path.display()))?;
                    let p = Profile::parse(&name, &text, &path.display().to_string())?;
                    map.insert(name, p);
                }
            }
        }
        Ok(ProfileSet { map })
    }
    /// True when `name` is a known profile.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
    /// The profile `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.map.get(name)
    }
    /// Known profile names.
    pub fn names(&self) -> Vec<&str> {
        self.map.keys().map(String::as_str).collect()
    }
}
