//! The cluster's trust root: the CA nodeforge makes, checked with openssl; the CA files servers
//! carry; the secure agent token whose hash openssl computes independently; least privilege
//! (agents never carry the server token or a CA key); determinism; `check`, `init --adopt-ca`
//! and `inspect` through the binary.

mod common;

use common::{stderr, Lab};
use nodeforge::base::Family;
use nodeforge::ca::{ca_hash, token_kind, TokenKind, TLS_DIR};
use nodeforge::config::{parse_cluster, Cluster};
use nodeforge::secrets::Secrets;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

const CLUSTER: &str = r#"
[cluster]
name = "trust"
k3s_version = "v1.33.5+k3s1"
server = "https://k3s.lan:6443"
datastore = "etcd"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0000000000000000000 me@laptop"]

[boards.rpi4]
base = "raspios-lite-arm64"
[boards.x86_64]
base = "debian-13-generic-amd64"

[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
address = "10.0.0.10/24"
gateway = "10.0.0.1"

[[nodes]]
hostname = "cp2"
role = "server"
board = "rpi4"

[[nodes]]
hostname = "cp3"
role = "server"
board = "x86_64"
interface = "enp1s0"

[[nodes]]
hostname = "w1"
role = "agent"
board = "rpi4"

[[nodes]]
hostname = "st1"
role = "arm-worker-storage"
board = "rpi4"

[[nodes]]
hostname = "gpu1"
role = "gpu-worker"
board = "x86_64"
interface = "enp1s0"
"#;

const SERVERS: [&str; 3] = ["cp1", "cp2", "cp3"];
const AGENTS: [&str; 3] = ["w1", "st1", "gpu1"];

fn cluster() -> Cluster {
    parse_cluster(CLUSTER, None).unwrap()
}

fn secrets(c: &Cluster) -> Secrets {
    Secrets::generate(c.nodes.iter().map(|n| n.hostname.as_str())).unwrap()
}

/// The node's `user-data` as JSON.
fn user_data(c: &Cluster, s: &Secrets, host: &str) -> (String, Value) {
    let seed = nodeforge::seed::render(
        c,
        c.node(host).unwrap(),
        Some(s),
        Family::Raspios,
        1_577_836_800,
    )
    .unwrap();
    let text = String::from_utf8(seed.file("user-data").unwrap().to_vec()).unwrap();
    let v: Value = serde_saphyr::from_str(&text).unwrap();
    (text, v)
}

/// (path, content, permissions) of every write_files entry.
fn write_files(ud: &Value) -> Vec<(String, String, String)> {
    ud["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["content"].as_str().unwrap().to_string(),
                f["permissions"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn k3s_config(ud: &Value) -> Value {
    let (_, text, _) = write_files(ud)
        .into_iter()
        .find(|(p, _, _)| p == "/etc/rancher/k3s/config.yaml")
        .expect("k3s config.yaml");
    serde_saphyr::from_str(&text).unwrap()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let o = cmd
        .output()
        .expect("run an external tool (openssl, sha256sum)");
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn openssl(args: &[&str], dir: &Path) -> String {
    let o = run(Command::new("openssl").args(args).current_dir(dir));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// sha256sum of `bytes`, through coreutils.
fn sha256sum(bytes: &[u8], dir: &Path) -> String {
    let f = dir.join("hashme.bin");
    fs::write(&f, bytes).unwrap();
    let o = run(Command::new("sha256sum").arg(&f));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Write a server's CA files as cloud-init would (content, mode) under `dir`.
fn lay_out_tls(files: &[(String, String, String)], dir: &Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut n = 0;
    for (path, content, mode) in files {
        let Some(rel) = path.strip_prefix(&format!("{TLS_DIR}/")) else {
            continue;
        };
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        let m = u32::from_str_radix(mode, 8).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        n += 1;
    }
    n
}

#[test]
fn server_ca_files_verify_with_openssl_and_carry_k3s_extensions() {
    let c = cluster();
    let s = secrets(&c);
    let (_, ud) = user_data(&c, &s, "cp1");
    let files = write_files(&ud);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert_eq!(lay_out_tls(&files, d), 15, "CA files on the server");

    // Every intermediate and leaf CA chains to the root (openssl, strict X.509 checks).
    let v = openssl(
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            "root-ca.pem",
            "intermediate-ca.pem",
        ],
        d,
    );
    assert!(v.contains(": OK"), "{v}");
    for leaf in [
        "server-ca",
        "client-ca",
        "request-header-ca",
        "etcd/peer-ca",
        "etcd/server-ca",
    ] {
        let crt = format!("{leaf}.crt");
        let v = openssl(
            &[
                "verify",
                "-x509_strict",
                "-CAfile",
                "root-ca.pem",
                "-untrusted",
                "intermediate-ca.pem",
                &crt,
            ],
            d,
        );
        assert!(v.contains(": OK"), "{leaf}: {v}");
        // The extensions of the k3s script's v3_ca section.
        let ext = openssl(
            &[
                "x509",
                "-in",
                &crt,
                "-noout",
                "-ext",
                "basicConstraints,keyUsage,subjectKeyIdentifier,authorityKeyIdentifier",
            ],
            d,
        );
        assert!(
            ext.contains("Basic Constraints: critical") && ext.contains("CA:TRUE"),
            "{leaf}: {ext}"
        );
        assert!(
            ext.contains("Key Usage: critical")
                && ext.contains("Digital Signature, Key Encipherment, Certificate Sign"),
            "{leaf}: {ext}"
        );
        assert!(ext.contains("Subject Key Identifier") && ext.contains("Authority Key Identifier"));
        // The bundle is leaf, intermediate, root, as the k3s script writes it.
        let bundle = fs::read_to_string(d.join(&crt)).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 3, "{leaf}");
        // The key is an EC P-256 key and belongs to the certificate.
        let key = format!("{leaf}.key");
        let kt = openssl(&["pkey", "-in", &key, "-noout", "-text"], d);
        assert!(kt.contains("prime256v1"), "{leaf}: not P-256");
        let pub_k = openssl(&["pkey", "-in", &key, "-pubout"], d);
        let pub_c = openssl(&["x509", "-in", &crt, "-noout", "-pubkey"], d);
        assert_eq!(pub_k, pub_c, "{leaf}: key and certificate differ");
        // Validity: at least 10 years from now.
        let o = Command::new("openssl")
            .args(["x509", "-in", &crt, "-noout", "-checkend"])
            .arg((10 * 365 * 86400).to_string())
            .current_dir(d)
            .output()
            .unwrap();
        assert!(o.status.success(), "{leaf} expires within 10 years");
    }
    let root_ext = openssl(&["x509", "-in", "root-ca.pem", "-noout", "-text"], d);
    assert!(root_ext.contains("CA:TRUE") && root_ext.contains("Certificate Sign"));
    // service.key is RSA 2048, like k3s's own and the script's.
    let sk = openssl(&["pkey", "-in", "service.key", "-noout", "-text"], d);
    assert!(sk.contains("2048 bit"), "service.key: {}", &sk[..40]);

    // Modes as k3s writes them: keys 0600, certificates 0644; no root or intermediate key.
    for (path, content, mode) in files.iter().filter(|f| f.0.starts_with(TLS_DIR)) {
        if path.ends_with(".key") {
            assert_eq!(mode, "0600", "{path}");
        } else {
            assert_eq!(mode, "0644", "{path}");
            assert!(!content.contains("PRIVATE KEY"), "{path}");
        }
    }
    let ca = s.ca.as_ref().unwrap();
    for (_, content, _) in &files {
        assert!(!content.contains(ca.root.key.as_str()));
        assert!(!content.contains(ca.intermediate.key.as_str()));
    }
    // Written before k3s's first start: cloud-init runs write_files before runcmd, and the CA
    // files precede the install script in write_files too.
    let pos = |p: &str| files.iter().position(|f| f.0 == p).unwrap();
    assert!(
        pos(&format!("{TLS_DIR}/server-ca.crt")) < pos("/usr/local/lib/nodeforge/install-k3s.sh")
    );
}

#[test]
fn seeds_with_the_ca_pass_cloud_init_schema() {
    let c = cluster();
    let s = secrets(&c);
    let tmp = tempfile::tempdir().unwrap();
    for host in ["cp1", "w1"] {
        let (text, _) = user_data(&c, &s, host);
        let p = tmp.path().join(format!("{host}.yaml"));
        fs::write(&p, text).unwrap();
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&p)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `cloud-init schema` ({e}): install the Debian package `cloud-init` (tests/setup-host.sh)")
            });
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && msg.contains("Valid cloud-config"),
            "{host}: {}",
            msg.lines().take(5).collect::<Vec<_>>().join(" / ")
        );
    }
}

#[test]
fn agent_token_pins_the_root_as_openssl_fingerprints_it() {
    let c = cluster();
    let s = secrets(&c);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ca = s.ca.as_ref().unwrap();
    fs::write(d.join("root.pem"), &ca.root.crt).unwrap();
    let der = run(Command::new("openssl")
        .args(["x509", "-in", "root.pem", "-outform", "DER"])
        .current_dir(d))
    .stdout;
    let independent = sha256sum(&der, d);
    assert_eq!(ca.root_fingerprint().unwrap(), independent);

    let agent_pw = s.agent_token.clone().unwrap();
    let want = format!("K10{independent}::node:{agent_pw}");
    for host in AGENTS {
        let (text, ud) = user_data(&c, &s, host);
        let k = k3s_config(&ud);
        assert_eq!(k["token"], want.as_str(), "{host}");
        assert!(k.get("agent-token").is_none(), "{host}");
        // Least privilege: the server token and CA material never reach an agent.
        assert!(!text.contains(&s.token), "{host} carries the server token");
        assert!(!text.contains("PRIVATE KEY"), "{host} carries a key");
        assert!(!text.contains(TLS_DIR), "{host} carries CA files");
    }
    // The first server keeps the short server token; servers joining the etcd cluster pin the
    // root with `K10<hash>::server:<token>`, whose password part (what k3s derives the datastore
    // keys from, docs/k3s-trust.md) is the server token itself.
    let server_want = format!("K10{independent}::server:{}", s.token);
    for host in SERVERS {
        let (text, ud) = user_data(&c, &s, host);
        let k = k3s_config(&ud);
        let tok = k["token"].as_str().unwrap();
        if host == "cp1" {
            assert_eq!(tok, s.token.as_str(), "{host}");
        } else {
            assert_eq!(tok, server_want.as_str(), "{host}");
            // k3s's parseToken: strip K10, split the hash off at "::", the user off at ":".
            let (hash, creds) = tok[3..].split_once("::").unwrap();
            let (user, password) = creds.split_once(':').unwrap();
            assert_eq!((hash, user), (independent.as_str(), "server"), "{host}");
            assert_eq!(password, s.token, "{host}");
            assert_eq!(
                text.matches("K10").count(),
                2,
                "{host}: token and agent-token"
            );
        }
        assert_eq!(k["agent-token"], want.as_str(), "{host}");
    }

    // One changed byte of the root gives another hash (openssl and sha256sum again).
    let mut bad = der.clone();
    let i = bad.len() - 80; // inside the signature: still parses
    bad[i] ^= 0x01;
    let tampered = sha256sum(&bad, d);
    assert_ne!(tampered, independent);
    assert_eq!(ca_hash(&bad), tampered);
    assert!(!want.contains(&tampered));
    // ...and a secrets file whose root was tampered with is refused, naming the entry.
    let mut toml_text = s.to_toml().unwrap();
    let line = ca.root.crt.lines().nth(3).unwrap().to_string();
    let mut flipped = line.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    toml_text = toml_text.replacen(&line, std::str::from_utf8(&flipped).unwrap(), 1);
    let e = format!("{:#}", Secrets::parse(&toml_text, "s.toml").unwrap_err());
    assert!(e.contains("s.toml") && e.contains("root"), "{e}");
    assert!(!e.contains(&s.token) && !e.contains(&line), "{e}");

    // The bundle a server serves at /cacerts ends with this root (what k3s's hashCA hashes).
    let served = ca.served_bundle();
    assert!(served.ends_with(ca.root.crt.as_str()));
    assert_eq!(served.matches("BEGIN CERTIFICATE").count(), 3);
}

#[test]
fn same_secrets_same_seed_new_secrets_new_ca() {
    let c = cluster();
    let s = secrets(&c);
    // Through the secrets file's text, as a later build would read it.
    let again = Secrets::parse(&s.to_toml().unwrap(), "s.toml").unwrap();
    assert_eq!(again, s);
    for host in SERVERS.iter().chain(AGENTS.iter()) {
        assert_eq!(
            user_data(&c, &s, host).0,
            user_data(&c, &again, host).0,
            "{host}"
        );
    }
    let other = secrets(&c);
    assert_ne!(other.ca, s.ca);
    let (_, a) = user_data(&c, &s, "cp1");
    let (_, b) = user_data(&c, &other, "cp1");
    let ca_of = |v: &Value| {
        write_files(v)
            .into_iter()
            .filter(|f| f.0.starts_with(TLS_DIR))
            .map(|f| f.1)
            .collect::<Vec<_>>()
    };
    let (fa, fb) = (ca_of(&a), ca_of(&b));
    assert_eq!(fa.len(), fb.len());
    assert!(
        fa.iter().zip(&fb).all(|(x, y)| x != y),
        "every CA file changes"
    );
}

#[test]
fn secrets_without_a_ca_keep_the_short_token() {
    let c = cluster();
    let mut s = secrets(&c);
    s.ca = None;
    s.agent_token = None;
    for host in SERVERS.iter().chain(AGENTS.iter()) {
        let (text, ud) = user_data(&c, &s, host);
        let k = k3s_config(&ud);
        assert_eq!(k["token"], s.token.as_str(), "{host}");
        assert!(k.get("agent-token").is_none());
        assert!(!text.contains(TLS_DIR));
    }
}

#[test]
fn inspect_reads_token_kinds_from_user_data() {
    let c = cluster();
    let s = secrets(&c);
    let (text, _) = user_data(&c, &s, "w1");
    let t = nodeforge::inspect::trust_of(text.as_bytes()).unwrap();
    assert_eq!(t.role.as_deref(), Some("agent"));
    let hash = s.ca.as_ref().unwrap().root_fingerprint().unwrap();
    assert_eq!(
        t.token,
        Some(TokenKind::Secure {
            ca_sha256: hash.clone(),
            user: "node".into()
        })
    );
    assert!(t.agent_token.is_none() && t.ca_files.is_empty());
    let (text, _) = user_data(&c, &s, "cp1");
    let t = nodeforge::inspect::trust_of(text.as_bytes()).unwrap();
    assert_eq!(t.token, Some(TokenKind::Short), "the first server");
    let (text, _) = user_data(&c, &s, "cp2");
    let t = nodeforge::inspect::trust_of(text.as_bytes()).unwrap();
    assert_eq!(t.role.as_deref(), Some("server"));
    assert_eq!(
        t.token,
        Some(TokenKind::Secure {
            ca_sha256: hash.clone(),
            user: "server".into()
        }),
        "a joining etcd server"
    );
    assert_eq!(
        t.agent_token
            .map(|k| k == token_kind(&s.agent_join_token().unwrap())),
        Some(true)
    );
    assert!(t.ca_files.contains(&"server-ca.key 0600".to_string()));
    assert_eq!(t.ca_files.len(), 15);
    // A generic seed has no k3s config at all.
    let g = nodeforge::seed::render(
        &c,
        c.node("w1").unwrap(),
        None,
        Family::Raspios,
        1_577_836_800,
    )
    .unwrap();
    assert!(nodeforge::inspect::trust_of(g.file("user-data").unwrap()).is_none());
}

#[test]
fn check_prints_the_fingerprint_and_adopt_ca_adds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("cluster.toml"), CLUSTER).unwrap();
    let nf = |args: &[&str]| {
        Command::new(common::BIN)
            .args(args)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let o = nf(&["init", "--update", "-c", "cluster.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = Secrets::load(&d.join("nodeforge-secrets.toml")).unwrap();
    let o = nf(&["check", "-c", "cluster.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let ca = s.ca.as_ref().unwrap();
    fs::write(d.join("root.pem"), &ca.root.crt).unwrap();
    let fp = openssl(
        &[
            "x509",
            "-in",
            "root.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        d,
    );
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert!(out.contains(&format!("sha256 {fp}")), "{out}");
    let end = openssl(&["x509", "-in", "root.pem", "-noout", "-enddate"], d);
    assert!(out.contains("expires 20"), "{out} ({end})");
    assert!(!out.contains(&s.token) && !out.contains(s.agent_token.as_deref().unwrap()));
    assert!(!out.contains("PRIVATE"));

    // Secrets from before the CA: check explains adoption; --adopt-ca adds CA and agent token
    // and keeps the token and node passwords.
    let mut old = s.clone();
    old.ca = None;
    old.agent_token = None;
    old.save(&d.join("nodeforge-secrets.toml")).unwrap();
    let o = nf(&["check", "-c", "cluster.toml"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("--adopt-ca") && out.contains("rotate-ca"),
        "{out}"
    );
    let o = nf(&["init", "--update", "-c", "cluster.toml"]);
    assert!(o.status.success());
    assert_eq!(
        Secrets::load(&d.join("nodeforge-secrets.toml")).unwrap(),
        old,
        "--update alone never adds a CA to an existing cluster"
    );
    let o = nf(&["init", "--update", "--adopt-ca", "-c", "cluster.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let new = Secrets::load(&d.join("nodeforge-secrets.toml")).unwrap();
    assert!(new.ca.is_some() && new.agent_token.is_some());
    assert_eq!(new.token, old.token);
    assert_eq!(new.node_passwords, old.node_passwords);
}

#[test]
fn built_images_carry_the_right_token_kind() {
    let lab = Lab::new();
    let o = lab.build(&["--all"]);
    assert!(o.status.success(), "build: {}", stderr(&o));
    let s = Secrets::load(&lab.path("nodeforge-secrets.toml")).unwrap();
    let hash = s.ca.as_ref().unwrap().root_fingerprint().unwrap();
    let inspect = |img: &str| -> Value {
        let o = lab.run(&["inspect", "--json", img]);
        assert!(o.status.success(), "inspect {img}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(!text.contains(&s.token), "inspect printed a token");
        serde_json::from_str(&text).unwrap()
    };
    let cp1 = inspect("out/cp1/cp1.img");
    assert_eq!(cp1["trust"]["role"], "server");
    assert_eq!(cp1["trust"]["token"]["format"], "short");
    assert_eq!(cp1["trust"]["agent_token"]["ca_sha256"], hash.as_str());
    assert_eq!(cp1["trust"]["ca_files"].as_array().unwrap().len(), 15);
    let w1 = inspect("out/w1/w1.img");
    assert_eq!(w1["trust"]["role"], "agent");
    assert_eq!(w1["trust"]["token"]["format"], "secure");
    assert_eq!(w1["trust"]["token"]["user"], "node");
    assert_eq!(w1["trust"]["token"]["ca_sha256"], hash.as_str());
    // The agent image holds neither the server token nor any CA key, in any byte.
    let img = fs::read(lab.path("out/w1/w1.img")).unwrap();
    let ca = s.ca.as_ref().unwrap();
    let needles: Vec<String> = [&ca.server.key, &ca.root.key, &ca.service_key]
        .iter()
        .map(|k| k.lines().nth(1).unwrap().to_string())
        .chain([s.token.clone()])
        .collect();
    for n in &needles {
        assert!(
            !common::contains(&img, n.as_bytes()),
            "w1.img holds a server secret"
        );
    }
    let img = fs::read(lab.path("out/cp1/cp1.img")).unwrap();
    assert!(common::contains(
        &img,
        ca.server.key.lines().nth(1).unwrap().as_bytes()
    ));
    // The table output names the kind, never the value.
    let o = lab.run(&["inspect", "out/w1/w1.img"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("agent token, secure K10"), "{text}");
    assert!(!text.contains(s.agent_token.as_deref().unwrap()));
}

/// The node's clock floor (bootcmd and the k3s clock drop-in) is never before the CA's
/// certificates begin, whatever SOURCE_DATE_EPOCH says: read the latest notBefore with openssl.
#[test]
fn clock_floor_is_not_before_the_cluster_ca() {
    let c = cluster();
    let s = secrets(&c);
    let dir = tempfile::tempdir().unwrap();
    let (_, ud) = user_data(&c, &s, "w1");
    let files = write_files(&ud);
    // Every CA certificate a server gets, as openssl reads its start date.
    let (_, server) = user_data(&c, &s, "cp1");
    let mut latest = 0i64;
    for (path, content, _) in write_files(&server) {
        if !path.ends_with(".crt") && !path.ends_with(".pem") {
            continue;
        }
        let f = dir.path().join("c.pem");
        std::fs::write(&f, &content).unwrap();
        let out = openssl(
            &[
                "x509",
                "-in",
                "c.pem",
                "-noout",
                "-startdate",
                "-dateopt",
                "iso_8601",
            ],
            dir.path(),
        );
        let when = out.trim().trim_start_matches("notBefore=").trim();
        let t = time::OffsetDateTime::parse(
            &when.replace(' ', "T"),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{when}: {e}"));
        latest = latest.max(t.unix_timestamp());
    }
    assert!(latest > 1_577_836_800, "CA not parsed: {latest}");
    let bootcmd = serde_json::to_string(&ud["bootcmd"]).unwrap();
    assert!(
        bootcmd.contains(&format!("-ge {latest} ]")) && bootcmd.contains(&format!("@{latest}")),
        "bootcmd does not floor the clock at the CA's notBefore {latest}: {bootcmd}"
    );
    let (_, dropin, _) = files
        .iter()
        .find(|(p, _, _)| p.ends_with("10-nodeforge-clock.conf"))
        .expect("clock drop-in");
    assert!(
        dropin.contains(&format!("time-wait.sh {latest} ")),
        "{dropin}"
    );
    // Without a CA the build time stays the floor.
    let mut bare = s.clone();
    bare.ca = None;
    let (_, ud) = user_data(&c, &bare, "w1");
    assert!(serde_json::to_string(&ud["bootcmd"])
        .unwrap()
        .contains("@1577836800"));
}
