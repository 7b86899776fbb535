//! The cluster-file commands `init`, `check` and `render`. They compose the config, the
//! secrets, the add-ons and the seed renderer, so they live above all of them: the config module
//! itself never calls the renderer.

use crate::base::Family;
use crate::config::*;
use crate::secrets::{self, Secrets};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `nodeforge init`.
#[derive(clap::Args)]
pub struct InitArgs {
    /// Directory to write `cluster.toml` and `nodeforge-secrets.toml` into.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite existing files (a new token breaks an existing cluster: be sure).
    #[arg(long)]
    pub force: bool,
    /// Keep the existing cluster file and secrets; add node passwords for new nodes.
    #[arg(long, conflicts_with = "force")]
    pub update: bool,
    /// With `--update`: add a cluster CA and an agent token to secrets that have none. Safe only
    /// before the first server's first boot (see docs/k3s-trust.md).
    #[arg(long, requires = "update")]
    pub adopt_ca: bool,
    /// Cluster file for `--update` (default `<DIR>/cluster.toml`).
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<PathBuf>,
    /// Secrets file (default `<dir of cluster file>/nodeforge-secrets.toml`).
    #[arg(long)]
    pub secrets: Option<PathBuf>,
}

/// Arguments of `nodeforge check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Cluster file (default `cluster.toml`; the embedded example when that does not exist).
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<PathBuf>,
    /// Secrets file (default `<dir of cluster file>/nodeforge-secrets.toml`); checked if present.
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Print the findings as one JSON object on stdout (for editors and CI): `ok`, `file`,
    /// `errors` and `warnings`, each issue with severity, file, line, node, key, value, rule,
    /// source and message. Exits non-zero when there are errors.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `nodeforge render`.
#[derive(clap::Args)]
pub struct RenderArgs {
    /// The node to render.
    pub node: String,
    /// Cluster file (default `cluster.toml`; the embedded example when that does not exist).
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<PathBuf>,
    /// Secrets file (default `<dir of cluster file>/nodeforge-secrets.toml`).
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Output directory (default `seed-<NODE>`).
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
    /// Base family to render for (default: from the board's base).
    #[arg(long, value_parser = parse_family)]
    pub family: Option<Family>,
    /// Render the generic seed (no hostname, token or node identity).
    #[arg(long)]
    pub generic: bool,
}

fn parse_family(s: &str) -> std::result::Result<Family, String> {
    toml::Value::String(s.to_string())
        .try_into::<Family>()
        .map_err(|_| "expected raspios, ubuntu-raspi, debian-raspi or debian-generic".to_string())
}

/// Run `nodeforge init`.
pub fn cmd_init(a: &InitArgs) -> Result<()> {
    let cluster_file = a
        .cluster
        .clone()
        .unwrap_or_else(|| a.dir.join("cluster.toml"));
    let secrets_file = a
        .secrets
        .clone()
        .unwrap_or_else(|| secrets::default_path(Some(&cluster_file)));
    if a.update {
        let cluster = load_cluster(Some(&cluster_file))?;
        let names: Vec<&str> = cluster.nodes.iter().map(|n| n.hostname.as_str()).collect();
        if secrets_file.exists() {
            let mut s = Secrets::load(&secrets_file)?;
            if a.adopt_ca && s.adopt_ca()? {
                s.save(&secrets_file)?;
                println!(
                    "{}: added a cluster CA and an agent token: rebuild every image before the first server's first boot",
                    secrets_file.display()
                );
            }
            let added = s.add_missing(names)?;
            let extra = crate::addons::add_missing(&mut s, &cluster)?;
            if !extra.is_empty() {
                s.save(&secrets_file)?;
                println!("{}: added {}", secrets_file.display(), extra.join(", "));
            }
            if added.is_empty() {
                println!("{}: every node has its password", secrets_file.display());
            } else {
                s.save(&secrets_file)?;
                println!(
                    "{}: added node passwords for {}",
                    secrets_file.display(),
                    added.join(", ")
                );
            }
        } else {
            let mut s = Secrets::generate(names)?;
            crate::addons::add_missing(&mut s, &cluster)?;
            s.save(&secrets_file)?;
            println!("wrote {} (mode 0600): back it up", secrets_file.display());
        }
        return Ok(());
    }
    for f in [&cluster_file, &secrets_file] {
        if f.exists() && !a.force {
            bail!(
                "{} already exists: use `nodeforge init --update` to add new nodes, or --force to overwrite (a new token cannot join an existing cluster)",
                f.display()
            );
        }
    }
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create directory {}", a.dir.display()))?;
    let example = parse_cluster(EXAMPLE_CLUSTER, None)?;
    crate::output::write_atomic(&cluster_file, EXAMPLE_CLUSTER.as_bytes())?;
    let names: Vec<&str> = example.nodes.iter().map(|n| n.hostname.as_str()).collect();
    let mut s = Secrets::generate(names)?;
    crate::addons::add_missing(&mut s, &example)?;
    s.save(&secrets_file)?;
    println!(
        "wrote {} (edit it, then `nodeforge check`)",
        cluster_file.display()
    );
    println!(
        "wrote {} (mode 0600): keep it private and back it up",
        secrets_file.display()
    );
    Ok(())
}

fn print_warnings(c: &Cluster) {
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
}

/// Warnings `check` adds about what it cannot see without the base images: the time zone is
/// checked against a base's `/usr/share/zoneinfo` only when `build` opens it.
fn unverified_timezone(c: &Cluster) -> Vec<Issue> {
    if matches!(c.timezone.as_str(), "UTC" | "Etc/UTC") {
        return Vec::new();
    }
    let mut v = Vec::new();
    for b in Board::ALL {
        if let (true, Some(r)) = (c.nodes.iter().any(|n| n.board == b), c.boards.get(&b)) {
            let i = Issue::broken(
                Severity::Warning,
                None,
                "cluster.timezone",
                &c.timezone,
                &rules::Violation::new(
                    &rules::host::TIMEZONE,
                    format!(
                        "timezone {:?} is not yet checked against /usr/share/zoneinfo of the {b} base {} (build checks it once the base is fetched)",
                        c.timezone, r.base
                    ),
                ),
            );
            v.push(i);
        }
    }
    v
}

/// `check --json`: the report as one JSON object on stdout; errors make the command fail.
fn check_json(path: Option<&Path>) -> Result<()> {
    let origin = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the embedded example cluster".into());
    let report = match path {
        None => analyze_cluster(EXAMPLE_CLUSTER, None),
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read cluster file {}", p.display()))
            .and_then(|t| analyze_cluster(&t, Some(p))),
    };
    let (issues, ok) = match report {
        Ok(mut r) => {
            if let Some(c) = &r.cluster {
                r.issues.extend(unverified_timezone(c));
                // The add-ons' errors and advice (secrets not read here: file content only).
                for l in crate::addons::check_lines(c, None) {
                    if let Some(e) = l.strip_prefix("ERROR ") {
                        r.issues.push(Issue::error(None, e));
                    } else if let Some(w) = l.strip_prefix("warning: ") {
                        r.issues.push(Issue::warning(None, w));
                    }
                }
            }
            let ok = r.errors().next().is_none();
            (r.issues, ok)
        }
        // Not a cluster file at all (syntax, unknown key, unreadable): one error, line from TOML.
        Err(e) => {
            let msg = format!("{e:#}");
            let mut i = Issue::error(None, msg.clone());
            i.line = msg
                .split("line ")
                .nth(1)
                .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok());
            (vec![i], false)
        }
    };
    let pick = |sev: Severity| -> Vec<serde_json::Value> {
        issues
            .iter()
            .filter(|i| i.severity == sev)
            .map(|i| i.to_json(&origin))
            .collect()
    };
    let out = serde_json::json!({
        "file": origin,
        "ok": ok,
        "errors": pick(Severity::Error),
        "warnings": pick(Severity::Warning),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !ok {
        bail!("{origin}: the cluster file has errors (see the JSON on stdout)");
    }
    Ok(())
}

/// Run `nodeforge check`.
pub fn cmd_check(a: &CheckArgs) -> Result<()> {
    let path = cluster_path(a.cluster.as_deref());
    if a.json {
        return check_json(path.as_deref());
    }
    let cluster = load_cluster(path.as_deref())?;
    print_warnings(&cluster);
    for w in unverified_timezone(&cluster) {
        eprintln!("warning: {w}");
    }
    print!("{}", plan(&cluster));
    let spath = a
        .secrets
        .clone()
        .unwrap_or_else(|| cluster.default_secrets_path());
    let loaded = if spath.exists() {
        Some(Secrets::load(&spath)?)
    } else {
        None
    };
    let lines = crate::addons::check_lines(&cluster, loaded.as_ref());
    for l in &lines {
        println!("{l}");
    }
    if lines.iter().any(|l| l.starts_with("ERROR ")) {
        bail!(
            "{}: add-on settings have errors (see above)",
            cluster.origin()
        );
    }
    if let Some(s) = loaded {
        let missing: Vec<&str> = cluster
            .nodes
            .iter()
            .filter(|n| !s.node_passwords.contains_key(&n.hostname))
            .map(|n| n.hostname.as_str())
            .collect();
        if !missing.is_empty() {
            println!(
                "secrets: {} lacks node passwords for {} (run `nodeforge init --update` or build)",
                spath.display(),
                missing.join(", ")
            );
        } else {
            println!("secrets: {} has every node's password", spath.display());
        }
        print!("{}", s.trust_report()?);
        if matches!(cluster.datastore, Datastore::Postgres { .. }) && s.datastore_password.is_none()
        {
            bail!(
                "datastore is postgres but {} has no `datastore_password`",
                spath.display()
            );
        }
    } else {
        println!(
            "secrets: {} does not exist yet (run `nodeforge init{}`)",
            spath.display(),
            if cluster.file.is_some() {
                " --update"
            } else {
                ""
            }
        );
    }
    println!("ok");
    Ok(())
}

/// The plan `check` prints: nodes, roles, boards, bases, add-ons, what each image holds. No secrets.
pub fn plan(c: &Cluster) -> String {
    let mut s = String::new();
    s.push_str(&format!("cluster {} ({})\n", c.name, c.origin()));
    s.push_str(&format!(
        "  k3s {}  server {}  datastore {}\n",
        c.k3s_version,
        c.server,
        c.datastore.kind()
    ));
    s.push_str(&format!(
        "  k3s mirror {}{}\n",
        c.k3s_mirror,
        if c.airgap {
            " (airgap images bundled)"
        } else {
            ""
        }
    ));
    let used: Vec<Board> = Board::ALL
        .into_iter()
        .filter(|b| c.nodes.iter().any(|n| n.board == *b))
        .collect();
    for b in used {
        if let Some(r) = c.boards.get(&b) {
            s.push_str(&format!(
                "  base {b}: {}{} (family {})\n",
                r.base,
                r.sha256
                    .as_deref()
                    .map(|h| format!(" sha256 {h}"))
                    .or_else(|| r.sha512.as_deref().map(|h| format!(" sha512 {h}")))
                    .unwrap_or_default(),
                r.expected_family(b).name()
            ));
        }
    }
    let addons = c.addons.enabled();
    s.push_str(&format!(
        "  add-ons: {}\n",
        if addons.is_empty() {
            "none".to_string()
        } else {
            addons.join(", ")
        }
    ));
    s.push_str(&format!("  nodes ({}):\n", c.nodes.len()));
    for n in &c.nodes {
        let net = match &n.network {
            Network::Dhcp => "dhcp".to_string(),
            Network::Static {
                address, prefix, ..
            } => format!("{address}/{prefix} on {}", n.interface_name()),
        };
        s.push_str(&format!(
            "    {:<16} {:<20} {:<7} {:<6} {}\n",
            n.hostname,
            n.role,
            n.board.as_str(),
            n.k3s_role().as_str(),
            net
        ));
        let mut holds = vec![format!(
            "k3s {} {} ({}){}",
            c.k3s_version,
            n.board.arch().as_str(),
            n.k3s_role().as_str(),
            if c.airgap { " + airgap images" } else { "" }
        )];
        if n.first_server && c.datastore == Datastore::Etcd {
            holds.push("cluster-init".into());
        }
        if !n.profile.packages.is_empty() {
            holds.push(format!("packages {}", n.profile.packages.join(" ")));
        }
        if n.profile.nvidia {
            holds.push("NVIDIA driver + container toolkit".into());
        }
        if let (Some(d), Some(m)) = (&n.data_disk, &n.profile.data_disk_mount) {
            holds.push(format!("data disk {d} -> {m}"));
        }
        if n.board == Board::Rpi4 {
            holds.push("cgroup flags".into());
            if !n.usb_quirks.is_empty() {
                holds.push(format!("usb quirks {}", n.usb_quirks.join(",")));
            }
        }
        if n.is_server() {
            let mut m: Vec<&str> = addons.clone();
            m.extend(c.user_manifests.iter().map(|x| x.0.as_str()));
            if !m.is_empty() {
                holds.push(format!("manifests {}", m.join(" ")));
            }
        }
        s.push_str(&format!("      image: {}\n", holds.join("; ")));
    }
    s
}

/// Run `nodeforge render`.
pub fn cmd_render(a: &RenderArgs) -> Result<()> {
    let path = cluster_path(a.cluster.as_deref());
    let cluster = load_cluster(path.as_deref())?;
    print_warnings(&cluster);
    let node = cluster.node(&a.node)?;
    let family = match a.family {
        Some(f) => f,
        None => cluster.base(node.board)?.expected_family(node.board),
    };
    let secrets = if a.generic {
        None
    } else {
        let spath = a
            .secrets
            .clone()
            .unwrap_or_else(|| cluster.default_secrets_path());
        Some(Secrets::load(&spath)?)
    };
    let epoch = crate::pipeline::source_date_epoch()?;
    let seed = crate::seed::render(&cluster, node, secrets.as_ref(), family, epoch)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("seed-{}", node.hostname)));
    if !out.exists() {
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create directory {}", out.display()))?;
        // The seed holds secrets: keep the new directory private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {}", out.display()))?;
        }
    }
    let mut written = Vec::new();
    for (name, bytes) in &seed.files {
        crate::output::write_atomic_mode(&out.join(name), bytes, 0o600)?;
        written.push(name.clone());
    }
    if let Some(pi) = &seed.pi {
        let cmd = format!("{}\n", pi.cmdline_add.join(" "));
        crate::output::write_atomic_mode(&out.join("cmdline-add.txt"), cmd.as_bytes(), 0o600)?;
        let mut cfg = String::new();
        for (sec, line) in &pi.config {
            cfg.push_str(&format!("[{sec}] {line}\n"));
        }
        crate::output::write_atomic_mode(&out.join("config-add.txt"), cfg.as_bytes(), 0o600)?;
        written.push("cmdline-add.txt".into());
        written.push("config-add.txt".into());
    }
    println!(
        "rendered {} ({}, family {}{}) into {}: {}",
        node.hostname,
        node.role,
        family.name(),
        if a.generic { ", generic" } else { "" },
        out.display(),
        written.join(", ")
    );
    println!("files may hold secrets (mode 0600): do not share them");
    Ok(())
}
