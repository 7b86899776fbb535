//! k3s's `/etc/rancher/k3s/registries.yaml` from `[registries]` in the cluster file and
//! `[registry_auth."<host>"]` in the secrets file.
//!
//! Schema (docs/addons.md#registriesyaml, from docs.k3s.io/installation/private-registry):
//! `mirrors.<registry>.endpoint` (list of URLs) and `.rewrite` (regex → replacement);
//! `configs.<host>.auth.{username,password,auth,identitytoken}` and
//! `configs.<host>.tls.{ca_file,cert_file,key_file,insecure_skip_verify}`.
//! Credentials live in the secrets file only, so the file is written mode 0600 into full seeds.

pub use crate::config::{Mirror, Registries, RegistryConfig, Tls};
pub use crate::secrets::RegistryAuth;
use crate::yaml::to_yaml;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// Where k3s reads the file on every node (server and agent).
pub const PATH: &str = "/etc/rancher/k3s/registries.yaml";

#[derive(Serialize)]
struct ConfigOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a RegistryAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a Tls>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    mirrors: BTreeMap<&'a str, &'a Mirror>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<&'a str, ConfigOut<'a>>,
}

fn check_auth(host: &str, a: &RegistryAuth) -> Result<()> {
    let pair = a.username.is_some() || a.password.is_some();
    if pair && (a.username.is_none() || a.password.is_none()) {
        bail!("secrets file: [registry_auth.\"{host}\"] needs both `username` and `password`");
    }
    let kinds = [pair, a.auth.is_some(), a.identitytoken.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if kinds != 1 {
        bail!(
            "secrets file: [registry_auth.\"{host}\"] must hold exactly one of `username` + `password`, `auth`, `identitytoken`"
        );
    }
    Ok(())
}

/// The text of `registries.yaml`, or `None` when there is nothing to configure.
///
/// Errors (naming the table, never a value): a mirror without endpoints or with an endpoint that
/// is not an `http://`/`https://` URL; an auth entry with an incomplete or ambiguous credential.
pub fn registries_yaml(
    r: Option<&Registries>,
    auth: &BTreeMap<String, RegistryAuth>,
) -> Result<Option<String>> {
    let empty = Registries::default();
    let r = r.unwrap_or(&empty);
    if r.mirrors.is_empty() && r.configs.is_empty() && auth.is_empty() {
        return Ok(None);
    }
    for (name, m) in &r.mirrors {
        if m.endpoint.is_empty() {
            bail!("[registries.mirrors.\"{name}\"]: `endpoint` needs at least one URL");
        }
        for e in &m.endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://"))
                || e.contains(char::is_whitespace)
            {
                bail!(
                    "[registries.mirrors.\"{name}\"]: endpoint {e:?} is not an http:// or https:// URL"
                );
            }
        }
    }
    for (host, a) in auth {
        check_auth(host, a)?;
    }
    let mut configs: BTreeMap<&str, ConfigOut> = BTreeMap::new();
    for (host, c) in &r.configs {
        configs.insert(
            host,
            ConfigOut {
                auth: None,
                tls: c.tls.as_ref(),
            },
        );
    }
    for (host, a) in auth {
        configs
            .entry(host)
            .or_insert(ConfigOut {
                auth: None,
                tls: None,
            })
            .auth = Some(a);
    }
    let out = FileOut {
        mirrors: r.mirrors.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        configs,
    };
    Ok(Some(to_yaml(&out)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_write() {
        assert_eq!(registries_yaml(None, &BTreeMap::new()).unwrap(), None);
    }

    #[test]
    fn bad_input_is_an_error_without_values() {
        let mut r = Registries::default();
        r.mirrors.insert(
            "docker.io".into(),
            Mirror {
                endpoint: vec!["registry.lan:5000".into()],
                ..Default::default()
            },
        );
        let e = registries_yaml(Some(&r), &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("not an http"), "{e}");
        let mut auth = BTreeMap::new();
        auth.insert(
            "r.lan".to_string(),
            RegistryAuth {
                password: Some("S3CRET".into()),
                ..Default::default()
            },
        );
        let e = registries_yaml(None, &auth).unwrap_err().to_string();
        assert!(e.contains("username") && !e.contains("S3CRET"), "{e}");
        assert!(!format!("{:?}", auth["r.lan"]).contains("S3CRET"));
    }
}
