//! `[addons.argocd]`: Argo CD by HelmChart (pinned in `overlays/charts.toml`) plus a root
//! `Application` (app of apps) that syncs `repo`/`path` at `revision`, so the first server's first
//! boot ends with the cluster pulling everything else from Git. Credentials of a private repository
//! come from the secrets file (`[argocd_repo]`) into a repository Secret labelled
//! `argocd.argoproj.io/secret-type: repository` (docs/addons.md#argo-cd), written mode 0600.
//!
//! The manifest creates the `argocd` Namespace first so the Secret and the Application can be
//! applied before the chart's job runs; the Application waits for the chart's CRD (k3s's deploy
//! controller retries a manifest until it applies).

pub use crate::config::ArgoCd;
pub use crate::secrets::RepoAuth;
use crate::yaml::to_yaml;
use anyhow::Result;
use serde_json::json;

/// Pin name in `overlays/charts.toml`.
pub const CHART: &str = "argo-cd";
/// Argo CD's namespace.
pub const NAMESPACE: &str = "argocd";
/// Manifest with the HelmChart (no secrets).
pub const CHART_FILE: &str = "argocd.yaml";
/// Manifest with the Namespace, the repository Secret (if any) and the root Application.
pub const ROOT_FILE: &str = "argocd-root.yaml";

/// The Argo CD HelmChart.
pub fn chart_manifest() -> Result<String> {
    let chart = super::charts::helm_chart(CHART, NAMESPACE, true, None)?;
    Ok(format!(
        "# Argo CD (add-on `argocd`); the root Application is in {ROOT_FILE}.\n{chart}"
    ))
}

/// Namespace, repository Secret (when `auth` is given) and root Application (YAML documents).
/// Holds credentials when `auth` is given: write it mode 0600, into full seeds only.
///
/// Errors: `auth` holds neither a complete username/password pair nor an SSH key (the message
/// names the table, never a value).
pub fn root_manifest(a: &ArgoCd, auth: Option<&RepoAuth>) -> Result<String> {
    let mut docs = vec![json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE },
    })];
    if let Some(r) = auth {
        let mut data = serde_json::Map::new();
        data.insert("type".into(), "git".into());
        data.insert("url".into(), a.repo.clone().into());
        match (&r.username, &r.password, &r.ssh_private_key) {
            (Some(u), Some(p), None) => {
                data.insert("username".into(), u.clone().into());
                data.insert("password".into(), p.clone().into());
            }
            (None, None, Some(k)) => {
                data.insert("sshPrivateKey".into(), k.clone().into());
            }
            _ => anyhow::bail!(
                "secrets file: [argocd_repo] needs `username` + `password`, or `ssh_private_key` (one of the two)"
            ),
        }
        docs.push(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "nodeforge-root-repo", "namespace": NAMESPACE,
                "labels": { "argocd.argoproj.io/secret-type": "repository" },
            },
            "type": "Opaque",
            "stringData": data,
        }));
    }
    docs.push(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": "root", "namespace": NAMESPACE },
        "spec": {
            "project": "default",
            "source": { "repoURL": a.repo, "path": a.path, "targetRevision": a.revision },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": NAMESPACE },
            "syncPolicy": { "automated": { "prune": true, "selfHeal": true } },
        },
    }));
    let mut out = String::from("# Argo CD root Application (app of apps), from [addons.argocd].\n");
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(d)?);
    }
    Ok(out)
}
