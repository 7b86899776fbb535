//! The homelab add-ons beyond the built-in manifests: k3s registry configuration on every node
//! (`[registries]`), the sealed-secrets controller with a sealing key kept in the secrets file
//! (`[addons.sealed-secrets]`), an API server VIP (`[addons.kube-vip]`), Argo CD with a root
//! Application (`[addons.argocd]`) and a Zot registry (`[addons.zot]`). Chart versions come from
//! one pins table (`overlays/charts.toml`).
//!
//! Rendering is pure (cluster + secrets → bytes); the seed module places the results. Facts and
//! their upstream sources: `docs/addons.md`.

pub mod argocd;
pub mod builtin;
pub mod charts;
mod check;
pub mod kube_vip;
pub mod registries;
pub mod sealed_secrets;
pub mod zot;

use crate::config::Cluster;
use crate::secrets::Secrets;
use anyhow::Result;
use std::path::Path;

pub use check::check_lines;

/// Server manifests without secrets (file name, bytes), for `seed::server_manifests`.
pub fn manifests(c: &Cluster) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(k) = &c.addons.kube_vip {
        out.push((
            kube_vip::FILE.to_string(),
            kube_vip::manifest(k)?.into_bytes(),
        ));
    }
    if c.addons.sealed_secrets.is_some() {
        out.push((
            sealed_secrets::CONTROLLER_FILE.to_string(),
            sealed_secrets::controller_manifest()?.into_bytes(),
        ));
    }
    if c.addons.argocd.is_some() {
        out.push((
            argocd::CHART_FILE.to_string(),
            argocd::chart_manifest()?.into_bytes(),
        ));
    }
    if let Some(z) = &c.addons.zot {
        out.push((zot::FILE.to_string(), zot::manifest(c, z)?.into_bytes()));
    }
    Ok(out)
}

/// Server manifests that hold secrets (file name, text): written with mode 0600, only into a
/// node's full seed (never a generic one).
///
/// Errors: an add-on needs a secret the secrets file lacks (the message says how to add it).
pub fn secret_manifests(c: &Cluster, s: &Secrets) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if c.addons.sealed_secrets.is_some() {
        let key = s.sealing_key.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "[addons.sealed-secrets] is on but the secrets file has no sealing key: run `nodeforge init --update` (or build) to generate it"
            )
        })?;
        out.push((
            sealed_secrets::KEY_FILE.to_string(),
            sealed_secrets::key_manifest(key)?,
        ));
    }
    if let Some(a) = &c.addons.argocd {
        out.push((
            argocd::ROOT_FILE.to_string(),
            argocd::root_manifest(a, s.argocd_repo.as_ref())?,
        ));
    }
    Ok(out)
}

/// Files every node gets in its full seed (absolute path, text), all mode 0600.
pub fn node_files(c: &Cluster, s: &Secrets) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(y) = registries::registries_yaml(c.registries.as_ref(), &s.registry_auth)? {
        out.push((registries::PATH.to_string(), y));
    }
    Ok(out)
}

/// Add the secrets the cluster's add-ons need and the file lacks (the sealing key); returns what
/// was added, never a value.
pub fn add_missing(s: &mut Secrets, c: &Cluster) -> Result<Vec<&'static str>> {
    let mut added = Vec::new();
    if c.addons.sealed_secrets.is_some() && s.sealing_key.is_none() {
        s.sealing_key = Some(sealed_secrets::SealingKey::generate()?);
        added.push("sealed-secrets sealing key");
    }
    Ok(added)
}

/// `secrets::ensure` plus the add-ons' secrets: loads (or creates) the secrets file at `path`,
/// adds node passwords and missing add-on secrets, saves (0600) when something was added.
pub fn ensure_secrets(path: &Path, c: &Cluster) -> Result<Secrets> {
    let mut s = crate::secrets::ensure(path, c.hostnames())?;
    let added = add_missing(&mut s, c)?;
    if !added.is_empty() {
        s.save(path)?;
        eprintln!("added {} to {}", added.join(", "), path.display());
    }
    Ok(s)
}
