//! `[addons.sealed-secrets]`: the sealed-secrets controller by HelmChart, and a sealing key pair
//! that nodeforge generates and keeps in the secrets file, placed as the controller's active key.
//!
//! The controller loads every `kubernetes.io/tls` Secret in its namespace that carries the label
//! `sealedsecrets.bitnami.com/sealed-secrets-key=active` and decrypts with any of them; kubeseal
//! finds the controller as `sealed-secrets-controller` in `kube-system` by default
//! (docs/addons.md#sealed-secrets). A cluster rebuilt with the same secrets file therefore
//! decrypts every SealedSecret sealed with this key. Automatic key renewal is turned off
//! (`keyrenewperiod: "0"`) so that the key in the secrets file stays the one new secrets are
//! sealed with.

use super::charts;
use crate::config::{cluster_path, load_cluster};
pub use crate::secrets::SealingKey;
use crate::secrets::Secrets;
use crate::yaml::to_yaml;
use anyhow::{Context, Result};
use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Pin name in `overlays/charts.toml`.
pub const CHART: &str = "sealed-secrets";
/// The controller's namespace (kubeseal's default `--controller-namespace`).
pub const NAMESPACE: &str = "kube-system";
/// The controller's name (kubeseal's default `--controller-name`), set as the chart's
/// `fullnameOverride`.
pub const CONTROLLER: &str = "sealed-secrets-controller";
/// The label the controller looks for on key Secrets, with value `active`.
pub const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// Name of the key Secret nodeforge places.
pub const KEY_SECRET: &str = "nodeforge-sealing-key";
/// Manifest file of the controller's HelmChart.
pub const CONTROLLER_FILE: &str = "sealed-secrets.yaml";
/// Manifest file of the key Secret (sorts before the HelmChart, so k3s applies it first).
pub const KEY_FILE: &str = "sealed-secrets-key.yaml";

/// The current UTC year (for the certificate's validity; no clock → 1970 is still a valid start).
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

impl SealingKey {
    /// A fresh RSA 4096 key and a self-signed certificate (subject `CN=sealed-secret,
    /// O=sealed-secret` like the controller's own, valid from 1 January of this year for ten
    /// years: the controller's default key TTL). Takes about a second.
    pub fn generate() -> Result<SealingKey> {
        use rcgen::{CertificateParams, DnType, KeyPair, RsaKeySize, PKCS_RSA_SHA256};
        let kp = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096)
            .context("cannot generate the RSA 4096 sealing key")?;
        let mut p = CertificateParams::new(Vec::<String>::new())
            .context("cannot set up the sealing certificate")?;
        p.distinguished_name
            .push(DnType::CommonName, "sealed-secret");
        p.distinguished_name
            .push(DnType::OrganizationName, "sealed-secret");
        let y = this_year();
        p.not_before = rcgen::date_time_ymd(y, 1, 1);
        p.not_after = rcgen::date_time_ymd(y + 10, 1, 1);
        let cert = p
            .self_signed(&kp)
            .context("cannot sign the sealing certificate")?;
        Ok(SealingKey {
            cert: cert.pem(),
            key: kp.serialize_pem(),
        })
    }
}

/// The controller's `HelmChart` (pinned chart, namespace and name kubeseal expects, no automatic
/// key renewal).
pub fn controller_manifest() -> Result<String> {
    let values = format!("fullnameOverride: {CONTROLLER}\nkeyrenewperiod: \"0\"\n");
    let chart = charts::helm_chart(CHART, NAMESPACE, false, Some(&values))?;
    Ok(format!(
        "# sealed-secrets (add-on `sealed-secrets`): decrypts SealedSecrets with the sealing key\n# from the secrets file ({KEY_FILE}).\n{chart}"
    ))
}

#[derive(Serialize)]
struct Meta {
    name: &'static str,
    namespace: &'static str,
    labels: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TlsSecret {
    api_version: &'static str,
    kind: &'static str,
    metadata: Meta,
    #[serde(rename = "type")]
    type_: &'static str,
    data: BTreeMap<&'static str, String>,
}

/// The active-key Secret (`kubernetes.io/tls`, `tls.crt` + `tls.key`, labelled active). Holds the
/// private key: write it mode 0600, into full seeds only. Same key → same bytes.
pub fn key_manifest(k: &SealingKey) -> Result<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut data = BTreeMap::new();
    data.insert("tls.crt", b64(&k.cert));
    data.insert("tls.key", b64(&k.key));
    let mut labels = BTreeMap::new();
    labels.insert(KEY_LABEL, "active");
    to_yaml(&TlsSecret {
        api_version: "v1",
        kind: "Secret",
        metadata: Meta {
            name: KEY_SECRET,
            namespace: NAMESPACE,
            labels,
        },
        type_: "kubernetes.io/tls",
        data,
    })
}

/// Arguments of `nodeforge secrets`.
#[derive(clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    cmd: SecretsCmd,
}

#[derive(clap::Subcommand)]
enum SecretsCmd {
    /// Print the sealed-secrets public certificate (PEM) for `kubeseal --cert`.
    SealingCert {
        /// Cluster file (default `cluster.toml`; the embedded example when that does not exist).
        #[arg(short = 'c', long = "cluster")]
        cluster: Option<PathBuf>,
        /// Secrets file (default `<dir of cluster file>/nodeforge-secrets.toml`).
        #[arg(long)]
        secrets: Option<PathBuf>,
    },
}

/// Run `nodeforge secrets …`.
pub fn cmd_secrets(a: &SecretsArgs) -> Result<()> {
    match &a.cmd {
        SecretsCmd::SealingCert { cluster, secrets } => {
            let spath = match secrets {
                Some(p) => p.clone(),
                None => {
                    let path = cluster_path(cluster.as_deref());
                    load_cluster(path.as_deref())?.default_secrets_path()
                }
            };
            let s = Secrets::load(&spath)?;
            let k = s.sealing_key.as_ref().with_context(|| {
                format!(
                    "{} has no sealing key: enable [addons.sealed-secrets] and run `nodeforge init --update`",
                    spath.display()
                )
            })?;
            print!("{}", k.cert);
            Ok(())
        }
    }
}
