//! Secrets of the add-ons, kept in the secrets file: registry credentials, the Argo CD
//! repository's credentials and the sealed-secrets sealing key. `Debug` never shows a value.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `[argocd_repo]` of the secrets file: `username` + `password` (HTTPS) or `ssh_private_key`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoAuth {
    /// HTTPS user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// HTTPS password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// SSH private key (PEM/OpenSSH text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_private_key: Option<String>,
}

impl fmt::Debug for RepoAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("RepoAuth")
            .field("username", &r(&self.username))
            .field("password", &r(&self.password))
            .field("ssh_private_key", &r(&self.ssh_private_key))
            .finish()
    }
}

/// `[registry_auth."<host>"]` of the secrets file: `username` + `password`, or `auth`
/// (base64 `user:password`), or `identitytoken`. `Debug` shows which fields are set, never values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Base64 `user:password` token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// OAuth identity token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identitytoken: Option<String>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("RegistryAuth")
            .field("username", &r(&self.username))
            .field("password", &r(&self.password))
            .field("auth", &r(&self.auth))
            .field("identitytoken", &r(&self.identitytoken))
            .finish()
    }
}

/// `[sealing_key]` of the secrets file: PEM certificate and PEM PKCS#8 private key (RSA 4096, as
/// the controller generates itself). `Debug` shows the certificate only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingKey {
    /// Self-signed certificate (public, what `kubeseal --cert` takes).
    pub cert: String,
    /// Private key.
    pub key: String,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}
