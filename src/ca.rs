//! The cluster's certificate authorities, made by nodeforge before any node exists, and the
//! secure (CA-pinning) join tokens derived from them.
//!
//! Layout and rules follow k3s's custom CA support (see `docs/k3s-trust.md` for the sources):
//! - a self-signed root CA and an intermediate CA signed by it; five leaf CAs signed by the
//!   intermediate (`server-ca`, `client-ca`, `request-header-ca`, `etcd/peer-ca`,
//!   `etcd/server-ca`), each certificate with `basicConstraints=critical,CA:true`,
//!   `keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign`, subject and authority key
//!   identifiers (k3s `contrib/util/generate-custom-ca-certs.sh`, its `v3_ca` section);
//! - every leaf `<name>.crt` is a bundle: leaf, intermediate, root (same script);
//! - `service.key`, the service-account signing key, is RSA 2048 as both k3s's own generator and the
//!   script make it; the CA keys are ECDSA P-256 (the script's leaf CAs are P-256);
//! - files are written into `/var/lib/rancher/k3s/server/tls/` with the modes k3s's own writer
//!   uses: keys 0600, certificates 0644 (rancher/dynamiclistener `cert.WriteKey`/`WriteCert`);
//! - the secure token is `K10<sha256 hex of the root certificate's DER>::<user>:<password>`
//!   (k3s `docs/cli/token.md`, "custom CA certificates"; k3s `pkg/clientaccess/token.go` `hashCA`).
//!
//! Root and intermediate private keys stay in the secrets file: server images carry only the
//! root and intermediate certificates, as the k3s script advises.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, RsaKeySize, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where k3s looks for custom CA files on a server (k3s `docs/cli/certificate.md`).
pub const TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls";
/// Root validity in days (the k3s script's `-days 7300`).
pub const ROOT_DAYS: i64 = 7300;
/// Intermediate and leaf CA validity in days (the k3s script's `-days 3700`, just over 10 years).
pub const CA_DAYS: i64 = 3700;
/// The user name in an agent token: k3s stores the agent token as passwd user `node`, and strips a
/// `K10<hash>::node:` prefix from it (k3s `pkg/passwd/passwd.go` `EnsureUser`).
pub const AGENT_USER: &str = "node";
/// The user name in a server token (k3s writes its own server token as `K10<hash>::server:<token>`,
/// and joining servers authenticate as `server`: `ParseAndValidateTokenForUser(…, "server")` in k3s
/// `pkg/cluster/bootstrap.go`).
pub const SERVER_USER: &str = "server";

/// A CA certificate (one PEM block) and its private key (PKCS#8 PEM).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaPair {
    pub crt: String,
    pub key: String,
}

/// The cluster's CAs as stored in the secrets file (`[ca]`). `Debug` shows no key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterCa {
    /// Service-account signing key (PKCS#8 PEM, RSA 2048); has no certificate.
    pub service_key: String,
    pub root: CaPair,
    pub intermediate: CaPair,
    pub server: CaPair,
    pub client: CaPair,
    pub request_header: CaPair,
    pub etcd_peer: CaPair,
    pub etcd_server: CaPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp = self.root_fingerprint().unwrap_or_else(|_| "invalid".into());
        f.debug_struct("ClusterCa")
            .field("root_sha256", &fp)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// One file of a server's `tls/` directory.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFile {
    /// Path relative to [`TLS_DIR`] (`server-ca.crt`, `etcd/peer-ca.key`, ...).
    pub path: String,
    pub content: String,
    /// Octal mode as cloud-init wants it (`"0600"` for keys, `"0644"` for certificates).
    pub mode: &'static str,
}

impl std::fmt::Debug for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} bytes, {})",
            self.path,
            self.content.len(),
            self.mode
        )
    }
}

/// What `check` shows about the CA: never a key.
#[derive(Debug, Clone)]
pub struct CaInfo {
    /// Subject common name of the root.
    pub root_cn: String,
    /// SHA-256 of the root certificate's DER, lowercase hex (the hash in a `K10` token).
    pub root_sha256: String,
    /// The earliest `notAfter` of every CA certificate, RFC 3339.
    pub expires: String,
    /// Whole days from now until `expires` (negative when expired).
    pub days_left: i64,
}

fn serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    // A positive, 16-byte serial (RFC 5280 4.1.2.2).
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

fn ca_params(cn: &str, days: i64, now: time::OffsetDateTime) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = now;
    p.not_after = now + time::Duration::days(days);
    p.serial_number = Some(serial()?);
    Ok(p)
}

fn ec_key() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("cannot generate an ECDSA key")
}

fn pem_der(pem_text: &str, what: &str) -> Result<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|_| anyhow::anyhow!("the {what} certificate is not PEM"))?;
    if p.label != "CERTIFICATE" {
        bail!("the {what} certificate is a PEM `{}` block", p.label);
    }
    Ok(p.contents)
}

fn parse_cert<'a>(
    der: &'a [u8],
    origin: &str,
) -> Result<x509_parser::certificate::X509Certificate<'a>> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|_| anyhow::anyhow!("{origin}: [ca]: not an X.509 certificate"))
}

impl ClusterCa {
    /// Generate a new root, intermediate, the five leaf CAs and the service-account key.
    /// CNs follow the k3s script: `k3s-root-ca@<unix time>`, `k3s-server-ca@<unix time>`, ...
    pub fn generate() -> Result<ClusterCa> {
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .context("clock")?;
        let ts = now.unix_timestamp();

        let root_key = ec_key()?;
        let root_key_pem = root_key.serialize_pem();
        let root = CertifiedIssuer::self_signed(
            ca_params(&format!("k3s-root-ca@{ts}"), ROOT_DAYS, now)?,
            root_key,
        )
        .context("cannot make the root CA")?;

        let int_key = ec_key()?;
        let int_key_pem = int_key.serialize_pem();
        let int_params = ca_params(&format!("k3s-intermediate-ca@{ts}"), CA_DAYS, now)?;
        let int_crt = int_params
            .signed_by(&int_key, &root)
            .context("cannot make the intermediate CA")?;
        let intermediate = Issuer::new(int_params, int_key);

        let leaf = |name: &str| -> Result<CaPair> {
            let key = ec_key()?;
            let crt = ca_params(&format!("k3s-{name}-ca@{ts}"), CA_DAYS, now)?
                .signed_by(&key, &intermediate)
                .with_context(|| format!("cannot make the {name} CA"))?;
            Ok(CaPair {
                crt: crt.pem(),
                key: key.serialize_pem(),
            })
        };
        let service = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            .context("cannot generate the service-account RSA key")?;
        let ca = ClusterCa {
            service_key: service.serialize_pem(),
            root: CaPair {
                crt: root.pem(),
                key: root_key_pem,
            },
            intermediate: CaPair {
                crt: int_crt.pem(),
                key: int_key_pem,
            },
            server: leaf("server")?,
            client: leaf("client")?,
            request_header: leaf("request-header")?,
            etcd_peer: leaf("etcd-peer")?,
            etcd_server: leaf("etcd-server")?,
        };
        ca.validate("generated CA")?;
        Ok(ca)
    }

    fn leaves(&self) -> [(&'static str, &CaPair); 5] {
        [
            ("server-ca", &self.server),
            ("client-ca", &self.client),
            ("request-header-ca", &self.request_header),
            ("etcd/peer-ca", &self.etcd_peer),
            ("etcd/server-ca", &self.etcd_server),
        ]
    }

    fn certs(&self) -> [(&'static str, &str); 7] {
        [
            ("root", &self.root.crt),
            ("intermediate", &self.intermediate.crt),
            ("server-ca", &self.server.crt),
            ("client-ca", &self.client.crt),
            ("request-header-ca", &self.request_header.crt),
            ("etcd/peer-ca", &self.etcd_peer.crt),
            ("etcd/server-ca", &self.etcd_server.crt),
        ]
    }

    /// Check that every certificate and key parses, that each key belongs to its certificate, and
    /// that the chain links by key identifier (root self-issued, intermediate under the root, each
    /// leaf CA under the intermediate). Errors name `origin` and the entry, never a value.
    pub fn validate(&self, origin: &str) -> Result<()> {
        use rcgen::PublicKeyData;
        use x509_parser::extensions::ParsedExtension;
        let mut ids: Vec<(&str, Vec<u8>, Vec<u8>)> = Vec::new();
        let keys = [
            &self.root.key,
            &self.intermediate.key,
            &self.server.key,
            &self.client.key,
            &self.request_header.key,
            &self.etcd_peer.key,
            &self.etcd_server.key,
        ];
        for ((name, pem_text), key) in self.certs().into_iter().zip(keys) {
            let der = pem_der(pem_text, name).with_context(|| format!("{origin}: [ca] {name}"))?;
            let (rest, c) = x509_parser::parse_x509_certificate(&der)
                .map_err(|_| anyhow::anyhow!("{origin}: [ca] {name}: not an X.509 certificate"))?;
            if !rest.is_empty() {
                bail!("{origin}: [ca] {name}: trailing bytes after the certificate");
            }
            if !c.is_ca() {
                bail!("{origin}: [ca] {name}: not a CA certificate");
            }
            let kp = KeyPair::from_pem(key).map_err(|_| {
                anyhow::anyhow!("{origin}: [ca] {name}: the key is not a PEM private key")
            })?;
            if kp.subject_public_key_info() != c.public_key().raw {
                bail!("{origin}: [ca] {name}: the key does not belong to the certificate");
            }
            let (mut ski, mut aki) = (Vec::new(), Vec::new());
            for e in c.iter_extensions() {
                match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(k) => ski = k.0.to_vec(),
                    ParsedExtension::AuthorityKeyIdentifier(a) => {
                        if let Some(k) = &a.key_identifier {
                            aki = k.0.to_vec();
                        }
                    }
                    _ => {}
                }
            }
            if ski.is_empty() || aki.is_empty() {
                bail!("{origin}: [ca] {name}: lacks a subject or authority key identifier");
            }
            ids.push((name, ski, aki));
        }
        if ids[0].2 != ids[0].1 {
            bail!("{origin}: [ca] root is not self-issued");
        }
        // Signatures: root by itself, intermediate by the root, leaves by the intermediate.
        let ders: Vec<Vec<u8>> = self
            .certs()
            .iter()
            .map(|(n, p)| pem_der(p, n))
            .collect::<Result<_>>()?;
        let root = parse_cert(&ders[0], origin)?;
        let int = parse_cert(&ders[1], origin)?;
        for (i, d) in ders.iter().enumerate() {
            let c = parse_cert(d, origin)?;
            let issuer = match i {
                0 | 1 => root.public_key(),
                _ => int.public_key(),
            };
            if c.verify_signature(Some(issuer)).is_err() {
                bail!(
                    "{origin}: [ca] {}: the signature does not verify against its issuer",
                    ids[i].0
                );
            }
        }
        if ids[1].2 != ids[0].1 {
            bail!("{origin}: [ca] intermediate is not issued by the root");
        }
        for (name, _, aki) in &ids[2..] {
            if *aki != ids[1].1 {
                bail!("{origin}: [ca] {name} is not issued by the intermediate");
            }
        }
        KeyPair::from_pem(&self.service_key)
            .map_err(|_| anyhow::anyhow!("{origin}: [ca] service_key is not a PEM private key"))?;
        Ok(())
    }

    /// DER of the root certificate.
    pub fn root_der(&self) -> Result<Vec<u8>> {
        pem_der(&self.root.crt, "root")
    }

    /// SHA-256 of the root certificate's DER, lowercase hex: the CA hash of a secure k3s token for
    /// custom CAs (k3s `docs/cli/token.md`; `hashCA` in k3s `pkg/clientaccess/token.go` hashes the
    /// DER of the root that the served bundle chains to).
    pub fn root_fingerprint(&self) -> Result<String> {
        Ok(ca_hash(&self.root_der()?))
    }

    /// The secure token `K10<root hash>::<user>:<password>`.
    pub fn secure_token(&self, user: &str, password: &str) -> Result<String> {
        Ok(format!(
            "K10{}::{user}:{password}",
            self.root_fingerprint()?
        ))
    }

    /// The latest `notBefore` of the cluster's CA certificates, in Unix seconds. A node whose clock
    /// reads earlier cannot validate the chain (RFC 5280 §6.1.3: the current time must lie inside
    /// every certificate's validity), so a k3s agent would refuse the join; the seed never lets a
    /// node's clock start before it (`docs/first-boot.md#the-clock`).
    ///
    /// Errors: a certificate of the secrets file that does not parse.
    pub fn valid_from(&self) -> Result<i64> {
        let mut latest = i64::MIN;
        for (name, pem_text) in self.certs() {
            let der = pem_der(pem_text, name)?;
            let (_, c) = x509_parser::parse_x509_certificate(&der)
                .map_err(|_| anyhow::anyhow!("[ca] {name}: not an X.509 certificate"))?;
            latest = latest.max(c.validity().not_before.timestamp());
        }
        Ok(latest)
    }

    /// Fingerprint, root CN and earliest expiry for `check`.
    pub fn info(&self) -> Result<CaInfo> {
        let mut earliest: Option<x509_parser::time::ASN1Time> = None;
        let mut root_cn = String::new();
        for (name, pem_text) in self.certs() {
            let der = pem_der(pem_text, name)?;
            let (_, c) = x509_parser::parse_x509_certificate(&der)
                .map_err(|_| anyhow::anyhow!("[ca] {name}: not an X.509 certificate"))?;
            if name == "root" {
                root_cn = c
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|a| a.as_str().ok())
                    .unwrap_or("")
                    .to_string();
            }
            let na = c.validity().not_after;
            if earliest.is_none_or(|e| na < e) {
                earliest = Some(na);
            }
        }
        let e = earliest.context("no CA certificate")?;
        let dt = e.to_datetime();
        let days_left = (dt - time::OffsetDateTime::now_utc()).whole_days();
        let expires = dt
            .format(&time::format_description::well_known::Rfc3339)
            .context("formatting the expiry")?;
        Ok(CaInfo {
            root_cn,
            root_sha256: self.root_fingerprint()?,
            expires,
            days_left,
        })
    }

    /// The files a server gets in [`TLS_DIR`], in a fixed order: the five CA bundles
    /// (`<leaf>, intermediate, root`) and their keys, `service.key`, and the root and intermediate
    /// certificates as the k3s script leaves them (`root-ca.pem`/`.crt`, `intermediate-ca.pem`,
    /// `intermediate-ca.crt` = intermediate + root). No root or intermediate key.
    pub fn server_files(&self) -> Vec<TlsFile> {
        let chain = |leaf: &str| format!("{leaf}{}{}", self.intermediate.crt, self.root.crt);
        let mut out = Vec::new();
        for (name, pair) in self.leaves() {
            out.push(TlsFile {
                path: format!("{name}.crt"),
                content: chain(&pair.crt),
                mode: "0644",
            });
            out.push(TlsFile {
                path: format!("{name}.key"),
                content: pair.key.clone(),
                mode: "0600",
            });
        }
        out.push(TlsFile {
            path: "service.key".into(),
            content: self.service_key.clone(),
            mode: "0600",
        });
        for (path, content) in [
            ("root-ca.pem", self.root.crt.clone()),
            ("root-ca.crt", self.root.crt.clone()),
            ("intermediate-ca.pem", self.intermediate.crt.clone()),
            (
                "intermediate-ca.crt",
                format!("{}{}", self.intermediate.crt, self.root.crt),
            ),
        ] {
            out.push(TlsFile {
                path: path.into(),
                content,
                mode: "0644",
            });
        }
        out
    }

    /// What a server serves at `/cacerts` (its `server-ca.crt`): the bundle a joining agent hashes.
    pub fn served_bundle(&self) -> String {
        format!(
            "{}{}{}",
            self.server.crt, self.intermediate.crt, self.root.crt
        )
    }
}

/// SHA-256 of `der`, lowercase hex.
pub fn ca_hash(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The kind of a k3s join token, as `inspect` reports it (never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum TokenKind {
    /// `K10<hash>::<user>:<password>`: pins the CA whose hash it carries.
    Secure {
        ca_sha256: String,
        /// `node` for an agent token, `server` for a server token.
        user: String,
    },
    /// A bare password: the joining node trusts whatever CA the server presents.
    Short,
    /// Neither form (k3s would refuse it).
    Invalid,
}

/// Classify a token by k3s's parsing rules (`parseToken` in k3s `pkg/clientaccess/token.go`).
pub fn token_kind(token: &str) -> TokenKind {
    let Some(rest) = token.strip_prefix("K10") else {
        return if token.is_empty() {
            TokenKind::Invalid
        } else {
            TokenKind::Short
        };
    };
    let Some((hash, creds)) = rest.split_once("::") else {
        return TokenKind::Invalid;
    };
    let hex_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    match creds.split_once(':') {
        Some((user, pw)) if hex_ok && !pw.is_empty() => TokenKind::Secure {
            ca_sha256: hash.to_string(),
            user: user.to_string(),
        },
        _ => TokenKind::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_validates_and_hashes_the_root_der() {
        let ca = ClusterCa::generate().unwrap();
        ca.validate("t").unwrap();
        let der = ca.root_der().unwrap();
        assert_eq!(ca.root_fingerprint().unwrap(), ca_hash(&der));
        let t = ca.secure_token(AGENT_USER, "pw").unwrap();
        assert_eq!(
            token_kind(&t),
            TokenKind::Secure {
                ca_sha256: ca_hash(&der),
                user: "node".into()
            }
        );
        // One changed byte of the root changes the pinned hash.
        let mut bad = der.clone();
        let i = bad.len() / 2;
        bad[i] ^= 1;
        assert_ne!(ca_hash(&bad), ca.root_fingerprint().unwrap());
        let info = ca.info().unwrap();
        assert!(info.days_left >= 3650, "{info:?}");
        assert!(info.root_cn.starts_with("k3s-root-ca@"));
    }

    #[test]
    fn server_files_layout_and_modes() {
        let ca = ClusterCa::generate().unwrap();
        let files = ca.server_files();
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for want in [
            "server-ca.crt",
            "server-ca.key",
            "client-ca.crt",
            "client-ca.key",
            "request-header-ca.crt",
            "request-header-ca.key",
            "etcd/peer-ca.crt",
            "etcd/peer-ca.key",
            "etcd/server-ca.crt",
            "etcd/server-ca.key",
            "service.key",
            "root-ca.crt",
            "intermediate-ca.crt",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for f in &files {
            let key = f.path.ends_with(".key");
            assert_eq!(f.mode, if key { "0600" } else { "0644" }, "{f:?}");
            assert_eq!(key, f.content.contains("PRIVATE KEY"), "{f:?}");
        }
        assert!(!files.iter().any(|f| f.content.contains(&ca.root.key)));
        assert!(!files
            .iter()
            .any(|f| f.content.contains(&ca.intermediate.key)));
        assert_eq!(files[0].content, ca.served_bundle());
        assert!(format!("{ca:?}").contains(&ca.root_fingerprint().unwrap()));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn validate_rejects_a_foreign_leaf() {
        let a = ClusterCa::generate().unwrap();
        let b = ClusterCa::generate().unwrap();
        let mut mixed = a.clone();
        mixed.client = b.client.clone();
        let e = mixed.validate("s.toml").unwrap_err().to_string();
        assert!(e.contains("client-ca"), "{e}");
        let mut broken = a.clone();
        broken.root.crt = "garbage".into();
        let e = format!("{:#}", broken.validate("s.toml").unwrap_err());
        assert!(e.contains("root") && !e.contains("garbage"), "{e}");
    }

    #[test]
    fn token_kinds() {
        assert_eq!(token_kind("abc"), TokenKind::Short);
        assert_eq!(token_kind(""), TokenKind::Invalid);
        assert_eq!(token_kind("K10abc::node:pw"), TokenKind::Invalid);
        let h = "a".repeat(64);
        assert_eq!(
            token_kind(&format!("K10{h}::server:pw")),
            TokenKind::Secure {
                ca_sha256: h,
                user: "server".into()
            }
        );
    }
}
