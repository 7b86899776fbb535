//! The secrets file: cluster token, agent token, the cluster CA, per-node k3s node passwords,
//! optional datastore password.
//!
//! Created by `nodeforge init` with mode 0600 beside the cluster file (`nodeforge-secrets.toml`).
//! Secret values never reach `Debug` output, logs or error messages: parse errors report the line
//! only, and `Debug` redacts.

use crate::ca::{self, ClusterCa};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// File name of the secrets file, beside the cluster file.
pub const SECRETS_FILE: &str = "nodeforge-secrets.toml";

/// The cluster's secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// k3s cluster token (short form; it can never change once the cluster exists).
    pub token: String,
    /// Password of k3s's separate agent token (`agent-token` on servers): joins agents, cannot
    /// join servers. Absent in secrets made before nodeforge had it (agents then get `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    /// Password of the external datastore (postgres), inserted into `datastore-endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_password: Option<String>,
    /// k3s node password per hostname (`/etc/rancher/node/password`): keeps a rebuilt node's identity.
    #[serde(default)]
    pub node_passwords: BTreeMap<String, String>,
    /// The cluster's CAs (see [`crate::ca`]). Absent in secrets made before nodeforge had it: such
    /// a cluster keeps its k3s-made CA and short tokens until the CA is adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<ClusterCa>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("token", &"<redacted>")
            .field(
                "agent_token",
                &self.agent_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "datastore_password",
                &self.datastore_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "node_passwords",
                &self.node_passwords.keys().collect::<Vec<_>>(),
            )
            .field("ca", &self.ca)
            .finish()
    }
}

/// The default secrets path for a cluster file: `<dir of cluster file>/nodeforge-secrets.toml`
/// (the current directory for the embedded default cluster).
pub fn default_path(cluster_file: Option<&Path>) -> PathBuf {
    match cluster_file.and_then(|p| p.parent()) {
        Some(d) if !d.as_os_str().is_empty() => d.join(SECRETS_FILE),
        _ => PathBuf::from(SECRETS_FILE),
    }
}

/// `len` random bytes from the OS, hex encoded.
fn random_hex(len: usize) -> Result<String> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    Ok(hex::encode(buf))
}

impl Secrets {
    /// Fresh secrets: a random token, a random agent token, a new cluster CA and a random node
    /// password for each of `hostnames`.
    pub fn generate<'a>(hostnames: impl IntoIterator<Item = &'a str>) -> Result<Secrets> {
        let mut s = Secrets {
            token: random_hex(32)?,
            ..Default::default()
        };
        s.adopt_ca()?;
        s.add_missing(hostnames)?;
        Ok(s)
    }

    /// Add a cluster CA and an agent token where missing; returns whether anything was added.
    /// Safe only before the first server's first boot (k3s takes custom CAs only then; a running
    /// cluster needs `k3s certificate rotate-ca`, see docs/k3s-trust.md).
    pub fn adopt_ca(&mut self) -> Result<bool> {
        let mut changed = false;
        if self.ca.is_none() {
            self.ca = Some(ClusterCa::generate()?);
            changed = true;
        }
        if self.agent_token.is_none() {
            self.agent_token = Some(random_hex(32)?);
            changed = true;
        }
        Ok(changed)
    }

    /// The token agents join with: the agent token (secure `K10<root hash>::node:<password>` when
    /// the cluster has its CA, else the bare password), or the cluster token for secrets that have
    /// no agent token. k3s accepts an agent token with user `node` on servers and agents alike
    /// (k3s `pkg/passwd/passwd.go` `EnsureUser` strips `K10<hash>::node:`; agents authenticate as
    /// `node`, `clientaccess.WithUser("node")`).
    pub fn agent_join_token(&self) -> Result<String> {
        match (&self.agent_token, &self.ca) {
            (Some(at), Some(c)) => c.secure_token(ca::AGENT_USER, at),
            (Some(at), None) => Ok(at.clone()),
            (None, _) => Ok(self.token.clone()),
        }
    }

    /// What `check` prints about the cluster's trust root: the CA's fingerprint and expiry and
    /// which token agents get, or, for secrets without a CA, how to adopt one. Never a secret.
    pub fn trust_report(&self) -> Result<String> {
        let mut r = String::new();
        match &self.ca {
            Some(c) => {
                let i = c.info()?;
                r.push_str(&format!(
                    "ca: {} sha256 {}\nca: expires {} ({} days left; renew with `k3s certificate rotate-ca` before then)\n",
                    i.root_cn, i.root_sha256, i.expires, i.days_left
                ));
                if i.days_left < 365 {
                    r.push_str("warning: a cluster CA certificate expires within a year\n");
                }
            }
            None => r.push_str(
                "ca: none in the secrets file: k3s makes its own CA on the first server and nodes join with the short token (the CA is not pinned)\n\
                 ca: to adopt a nodeforge CA before the first server's first boot: `nodeforge init --update --adopt-ca`, then rebuild every image;\n\
                 ca: on a running cluster, stage the CA files and load them with `k3s certificate rotate-ca` first (docs/k3s-trust.md)\n",
            ),
        }
        r.push_str(match (&self.agent_token, &self.ca) {
            (Some(_), Some(_)) => "tokens: servers get token + agent-token; agents get the agent token only, secure K10 form (pins the CA)\n",
            (Some(_), None) => "tokens: servers get token + agent-token; agents get the agent token only, short form (CA not pinned)\n",
            (None, _) => "tokens: every node gets the cluster token (no agent token in the secrets file)\n",
        });
        Ok(r)
    }

    /// Add a random node password for every hostname that has none; returns the hostnames added.
    pub fn add_missing<'a>(
        &mut self,
        hostnames: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>> {
        let mut added = Vec::new();
        for h in hostnames {
            if !self.node_passwords.contains_key(h) {
                self.node_passwords.insert(h.to_string(), random_hex(24)?);
                added.push(h.to_string());
            }
        }
        Ok(added)
    }

    /// The node password of `hostname`; an error (without secrets) telling how to add it.
    pub fn node_password(&self, hostname: &str) -> Result<&str> {
        self.node_passwords
            .get(hostname)
            .map(String::as_str)
            .with_context(|| {
                format!(
                    "the secrets file has no node password for {hostname}: run `nodeforge init --update`"
                )
            })
    }

    /// Parse secrets from TOML text; errors name `origin` and the line, never a value.
    pub fn parse(text: &str, origin: &str) -> Result<Secrets> {
        let s: Secrets = toml::from_str(text).map_err(|e| {
            // toml's messages quote the offending source line, which may hold a secret: keep only the line.
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => anyhow::anyhow!(
                    "cannot parse secrets file {origin}: invalid entry at line {l} (expected keys: token, agent_token, datastore_password, [node_passwords], [ca.*])"
                ),
                None => anyhow::anyhow!("cannot parse secrets file {origin}"),
            }
        })?;
        if s.token.trim().is_empty() {
            bail!("secrets file {origin}: `token` is empty");
        }
        if let Some(at) = &s.agent_token {
            if at.trim().is_empty() || at.contains(':') {
                bail!(
                    "secrets file {origin}: `agent_token` must be a non-empty password without `:`"
                );
            }
        }
        if let Some(c) = &s.ca {
            c.validate(&format!("secrets file {origin}"))?;
        }
        Ok(s)
    }

    /// Load the secrets file. A missing file is an error telling to run `nodeforge init`;
    /// a file readable by group or others is refused.
    pub fn load(path: &Path) -> Result<Secrets> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "secrets file {} not found: run `nodeforge init` (or `nodeforge init --update` for an existing cluster file) to create it",
                path.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read secrets file {}", path.display()))
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "secrets file {} has mode {:04o}: it must be readable by its owner only (run `chmod 600 {}`)",
                    path.display(),
                    mode,
                    path.display()
                );
            }
        }
        let _ = meta;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read secrets file {}", path.display()))?;
        Secrets::parse(&text, &path.display().to_string())
    }

    /// The file's TOML text, with a header comment.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(self).context("cannot serialise the secrets")?;
        Ok(format!(
            "# nodeforge secrets: keep this file private (mode 0600) and back it up.\n\
             # The token can never change once the cluster exists; agents join with agent_token only.\n\
             # [ca] is the cluster's CA (root and intermediate keys live only here). A node keeps its\n\
             # identity through its node password. Add `datastore_password = \"...\"` for postgres.\n\n{body}"
        ))
    }

    /// Write the secrets to `path` atomically with mode 0600 (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.to_toml()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
        crate::output::write_atomic_mode(path, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write secrets file {}", path.display()))
    }
}

/// Load the secrets at `path`, creating the file (or adding missing node passwords) for `hostnames`.
/// Used by `build` so new nodes get their password; prints which nodes were added, never values.
pub fn ensure<'a>(path: &Path, hostnames: impl IntoIterator<Item = &'a str>) -> Result<Secrets> {
    let names: Vec<&str> = hostnames.into_iter().collect();
    if !path.exists() {
        let s = Secrets::generate(names.iter().copied())?;
        s.save(path)?;
        eprintln!(
            "created secrets file {} (mode 0600): back it up",
            path.display()
        );
        return Ok(s);
    }
    let mut s = Secrets::load(path)?;
    let added = s.add_missing(names.iter().copied())?;
    if !added.is_empty() {
        s.save(path)?;
        eprintln!(
            "added node passwords for {} to {}",
            added.join(", "),
            path.display()
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let s = Secrets::generate(["a", "b"]).unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains(&s.token));
        for p in s.node_passwords.values() {
            assert!(!d.contains(p.as_str()));
        }
        assert!(d.contains("\"a\""));
    }

    #[test]
    fn debug_redacts_agent_token_and_ca_keys() {
        let s = Secrets::generate(["a"]).unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains(s.agent_token.as_deref().unwrap()));
        assert!(
            !d.contains("PRIVATE KEY") && !d.contains("CERTIFICATE"),
            "{d}"
        );
        let ca = s.ca.as_ref().unwrap();
        assert!(d.contains(&ca.root_fingerprint().unwrap()));
    }

    #[test]
    fn secrets_from_before_the_ca_still_load() {
        let old = "token = \"t0ken-from-2025\"\n\n[node_passwords]\ncp1 = \"pw\"\n";
        let s = Secrets::parse(old, "old.toml").unwrap();
        assert!(s.ca.is_none() && s.agent_token.is_none());
        assert_eq!(s.agent_join_token().unwrap(), "t0ken-from-2025");
        let mut t = s.clone();
        assert!(t.adopt_ca().unwrap());
        assert!(!t.adopt_ca().unwrap(), "adopting twice changes nothing");
        assert_eq!(t.token, s.token);
        assert!(t.agent_join_token().unwrap().starts_with("K10"));
        let e = Secrets::parse("token = \"t\"\nagent_token = \"a:b\"\n", "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent_token"), "{e}");
    }

    #[test]
    fn roundtrip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SECRETS_FILE);
        let mut s = Secrets::generate(["cp1"]).unwrap();
        s.datastore_password = Some("pw".into());
        s.save(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Secrets::load(&p).unwrap(), s);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secrets::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn missing_file_says_init() {
        let e = Secrets::load(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodeforge init"), "{e}");
    }

    #[test]
    fn parse_error_hides_values() {
        let text = "token = \"supersecretvalue\"\nbogus = \"othersecret\"\n";
        let e = format!("{:#}", Secrets::parse(text, "s.toml").unwrap_err());
        assert!(
            !e.contains("supersecretvalue") && !e.contains("othersecret"),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn ensure_creates_then_adds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SECRETS_FILE);
        let a = ensure(&p, ["cp1"]).unwrap();
        assert!(p.exists());
        let b = ensure(&p, ["cp1", "w1"]).unwrap();
        assert_eq!(a.token, b.token);
        assert_eq!(a.node_passwords["cp1"], b.node_passwords["cp1"]);
        assert!(Secrets::load(&p).unwrap().node_passwords.contains_key("w1"));
        assert_eq!(
            default_path(Some(Path::new("/c/cluster.toml"))),
            Path::new("/c/nodeforge-secrets.toml")
        );
        assert_eq!(default_path(None), Path::new(SECRETS_FILE));
    }

    #[test]
    fn add_missing_keeps_existing() {
        let mut s = Secrets::generate(["a"]).unwrap();
        let old = s.node_passwords["a"].clone();
        let added = s.add_missing(["a", "b"]).unwrap();
        assert_eq!(added, vec!["b".to_string()]);
        assert_eq!(s.node_passwords["a"], old);
        assert_ne!(s.node_passwords["b"], old);
    }
}
