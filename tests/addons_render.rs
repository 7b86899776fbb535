//! Add-ons of src/addons: registries.yaml (snapshot, YAML 1.1 parse by PyYAML, k3s's documented
//! keys), the sealed-secrets key (openssl checks, determinism, absent from generic seeds), the
//! manifests against `kubernetes-validate`, and the `init --update` / `secrets sealing-cert` CLI.

mod common;

use common::snapshot;
use nodeforge::addons::{self, registries, sealed_secrets};
use nodeforge::base::Family;
use nodeforge::config::{parse_cluster, Cluster};
use nodeforge::secrets::Secrets;
use nodeforge::seed;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const CLUSTER: &str = r#"
[cluster]
name = "home"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
datastore = "etcd"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0000000000000000000 me@laptop"]

[boards.rpi4]
base = "raspios-lite-arm64"
[boards.x86_64]
base = "debian-13-generic-amd64"

[addons.sealed-secrets]

[registries.mirrors."docker.io"]
endpoint = ["https://registry.lan:5000"]
rewrite = { "^rancher/(.*)" = "mirror/rancher/$1" }
[registries.mirrors."registry.lan:5000"]
endpoint = ["https://registry.lan:5000"]
[registries.configs."registry.lan:5000".tls]
ca_file = "/usr/local/share/ca-certificates/lan-ca.crt"

[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
[[nodes]]
hostname = "w1"
role = "agent"
board = "x86_64"
"#;

/// The Kubernetes minor of the pinned k3s above, for kubernetes-validate.
const K8S: &str = "1.33.0";
const REG_PW: &str = "FAKE-REGPW-41c2";

fn cluster() -> Cluster {
    parse_cluster(CLUSTER, None).unwrap()
}

/// One sealing key for the whole test binary (RSA 4096 generation takes about a second).
fn key() -> &'static sealed_secrets::SealingKey {
    static K: OnceLock<sealed_secrets::SealingKey> = OnceLock::new();
    K.get_or_init(|| sealed_secrets::SealingKey::generate().unwrap())
}

fn secrets(c: &Cluster) -> Secrets {
    let mut s = Secrets {
        token: "FAKE-TOKEN".into(),
        ..Default::default()
    };
    for n in &c.nodes {
        s.node_passwords
            .insert(n.hostname.clone(), format!("FAKE-NODEPW-{}", n.hostname));
    }
    s.registry_auth.insert(
        "registry.lan:5000".into(),
        registries::RegistryAuth {
            username: Some("puller".into()),
            password: Some(REG_PW.into()),
            ..Default::default()
        },
    );
    s.sealing_key = Some(key().clone());
    s
}

fn tool(name: &str, args: &[&str], stdin_file: Option<&Path>) -> (bool, String) {
    let mut c = Command::new(name);
    c.args(args);
    if let Some(f) = stdin_file {
        c.stdin(std::fs::File::open(f).unwrap());
    }
    let out = c.output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): install it with tests/setup-host.sh (pip: kubernetes-validate check-jsonschema; apt: openssl python3-yaml)")
    });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Find a pip-installed tool on PATH or in ~/.local/bin.
fn pip_tool(name: &str) -> String {
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".local/bin").join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    name.to_string()
}

fn registries_text() -> String {
    let c = cluster();
    let s = secrets(&c);
    registries::registries_yaml(c.registries.as_ref(), &s.registry_auth)
        .unwrap()
        .unwrap()
}

#[test]
fn registries_yaml_snapshot() {
    snapshot("registries.yaml", &registries_text());
}

/// Parse with PyYAML (a YAML 1.1 loader, like k3s's) and hold every key to the schema that
/// docs.k3s.io/installation/private-registry documents (docs/addons.md#registriesyaml).
#[test]
fn registries_yaml_matches_k3s_schema_under_yaml_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("registries.yaml");
    std::fs::write(&f, registries_text()).unwrap();
    let script = r#"
import sys, yaml, json
d = yaml.safe_load(open(sys.argv[1]))
allowed = {"mirrors": None, "configs": None}
assert set(d) <= set(allowed), d.keys()
for name, m in d.get("mirrors", {}).items():
    assert set(m) <= {"endpoint", "rewrite"}, (name, m)
    assert isinstance(m["endpoint"], list) and all(isinstance(e, str) for e in m["endpoint"])
    for k, v in m.get("rewrite", {}).items():
        assert isinstance(k, str) and isinstance(v, str)
for host, c in d.get("configs", {}).items():
    assert set(c) <= {"auth", "tls"}, (host, c)
    assert set(c.get("auth", {})) <= {"username", "password", "auth", "identitytoken"}
    assert all(isinstance(v, str) for v in c.get("auth", {}).values())
    tls = c.get("tls", {})
    assert set(tls) <= {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}
    for k, v in tls.items():
        assert isinstance(v, bool if k == "insecure_skip_verify" else str), (k, v)
print(json.dumps(d, sort_keys=True))
"#;
    let (ok, out) = tool("python3", &["-c", script, f.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["mirrors"]["docker.io"]["endpoint"][0],
        "https://registry.lan:5000"
    );
    assert_eq!(
        v["configs"]["registry.lan:5000"]["auth"]["password"],
        REG_PW
    );
    assert_eq!(
        v["configs"]["registry.lan:5000"]["tls"]["ca_file"],
        "/usr/local/share/ca-certificates/lan-ca.crt"
    );
    // The checker can fail: an unknown key is refused.
    std::fs::write(&f, "mirrors:\n  docker.io:\n    endpoints: [x]\n").unwrap();
    let (ok, _) = tool("python3", &["-c", script, f.to_str().unwrap()], None);
    assert!(!ok);
}

/// Every node's full seed writes registries.yaml with mode 0600; generic seeds have none (it can
/// hold credentials).
#[test]
fn registries_yaml_on_every_node_0600_never_generic() {
    let c = cluster();
    let s = secrets(&c);
    for n in &c.nodes {
        let full = seed::render(&c, n, Some(&s), Family::DebianGeneric, 1_577_836_800).unwrap();
        let ud: serde_json::Value =
            serde_saphyr::from_str(std::str::from_utf8(full.file("user-data").unwrap()).unwrap())
                .unwrap();
        let wf = ud["write_files"].as_array().unwrap();
        let reg = wf
            .iter()
            .find(|f| f["path"] == registries::PATH)
            .unwrap_or_else(|| panic!("{}: no registries.yaml", n.hostname));
        assert_eq!(reg["permissions"], "0600");
        assert_eq!(reg["content"].as_str().unwrap(), registries_text());
        let generic = seed::render(&c, n, None, Family::DebianGeneric, 1_577_836_800).unwrap();
        for (name, b) in &generic.files {
            let t = String::from_utf8_lossy(b);
            assert!(
                !t.contains(REG_PW) && !t.contains("registries.yaml"),
                "{name}"
            );
        }
    }
}

#[test]
fn sealing_cert_and_key_pass_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let keyf = dir.path().join("key.pem");
    std::fs::write(&cert, &key().cert).unwrap();
    std::fs::write(&keyf, &key().key).unwrap();
    let c = cert.to_str().unwrap();
    let k = keyf.to_str().unwrap();
    let (ok, text) = tool("openssl", &["x509", "-in", c, "-noout", "-text"], None);
    assert!(ok, "{text}");
    assert!(text.contains("Public-Key: (4096 bit)"), "{text}");
    assert!(
        text.contains("CN=sealed-secret") || text.contains("CN = sealed-secret"),
        "{text}"
    );
    let (ok, cert_pub) = tool("openssl", &["x509", "-in", c, "-noout", "-pubkey"], None);
    assert!(ok, "{cert_pub}");
    let (ok, key_pub) = tool("openssl", &["pkey", "-in", k, "-pubout"], None);
    assert!(ok, "{key_pub}");
    assert_eq!(
        cert_pub, key_pub,
        "the private key does not match the certificate"
    );
    let (ok, out) = tool("openssl", &["pkey", "-in", k, "-check", "-noout"], None);
    assert!(ok, "{out}");
    // The compare can fail: another key's public half differs.
    let other = sealed_secrets::SealingKey::generate().unwrap();
    std::fs::write(&keyf, &other.key).unwrap();
    let (_, other_pub) = tool("openssl", &["pkey", "-in", k, "-pubout"], None);
    assert_ne!(cert_pub, other_pub);
}

#[test]
fn same_secrets_same_bytes_and_key_only_in_full_server_seed() {
    let c = cluster();
    let s = secrets(&c);
    let cp1 = c.node("cp1").unwrap();
    let a = seed::render(&c, cp1, Some(&s), Family::Raspios, 1_577_836_800).unwrap();
    let b = seed::render(&c, cp1, Some(&s.clone()), Family::Raspios, 1_577_836_800).unwrap();
    assert_eq!(a.files, b.files);
    let m1 = addons::secret_manifests(&c, &s).unwrap();
    assert_eq!(m1, addons::secret_manifests(&c, &s).unwrap());
    snapshot(
        "sealed-secrets.yaml",
        &sealed_secrets::controller_manifest().unwrap(),
    );

    let ud = String::from_utf8(a.file("user-data").unwrap().to_vec()).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&ud).unwrap();
    let files = v["write_files"].as_array().unwrap();
    let key_path = format!("{}/{}", seed::MANIFEST_DIR, sealed_secrets::KEY_FILE);
    let kf = files
        .iter()
        .find(|f| f["path"] == key_path.as_str())
        .unwrap();
    assert_eq!(kf["permissions"], "0600");
    // Both manifests are written, the key first (k3s applies the directory in name order).
    let names: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
    let ki = names.iter().position(|p| *p == key_path).unwrap();
    let ci = names
        .iter()
        .position(|p| p.ends_with(&format!("/{}", sealed_secrets::CONTROLLER_FILE)))
        .unwrap();
    assert!(ki < ci, "{names:?}");
    assert!(sealed_secrets::KEY_FILE < sealed_secrets::CONTROLLER_FILE);

    // The private key (PEM and its base64 form) appears nowhere else: not in the agent's seed,
    // not in a generic seed, not in the non-secret manifests.
    let key_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key().key.as_bytes())
    };
    let key_line = key().key.lines().nth(1).unwrap().to_string();
    let mut elsewhere: Vec<(String, Vec<u8>)> = Vec::new();
    let w1 = c.node("w1").unwrap();
    elsewhere.extend(
        seed::render(&c, w1, Some(&s), Family::DebianGeneric, 1_577_836_800)
            .unwrap()
            .files,
    );
    for n in &c.nodes {
        elsewhere.extend(
            seed::render(&c, n, None, Family::DebianGeneric, 1_577_836_800)
                .unwrap()
                .files,
        );
    }
    elsewhere.extend(seed::server_manifests(&c).unwrap());
    for (name, b) in &elsewhere {
        let t = String::from_utf8_lossy(b);
        assert!(
            !t.contains(&key_b64) && !t.contains(&key_line) && !t.contains("PRIVATE KEY"),
            "{name} holds the sealing key"
        );
    }
    assert!(ud.contains(&key_b64));
    assert!(!format!("{s:?}").contains(&key_line));
}

/// Core objects against the Kubernetes schema of the pinned k3s's minor.
#[test]
fn kubernetes_validate_accepts_the_key_secret() {
    let c = cluster();
    let s = secrets(&c);
    let dir = tempfile::tempdir().unwrap();
    let kv = pip_tool("kubernetes-validate");
    for (name, text) in addons::secret_manifests(&c, &s).unwrap() {
        let f = dir.path().join(&name);
        std::fs::write(&f, &text).unwrap();
        let (ok, out) = tool(&kv, &["-k", K8S, "--strict", f.to_str().unwrap()], None);
        assert!(ok, "{name}: {out}");
        assert!(out.contains("passed"), "{name}: {out}");
    }
    // The validator can fail: a Secret with an unknown field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ntype: kubernetes.io/tls\nbogus: 1\n",
    )
    .unwrap();
    let (ok, out) = tool(&kv, &["-k", K8S, "--strict", bad.to_str().unwrap()], None);
    assert!(!ok, "{out}");
}

fn nodeforge(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// `init --update` adds the key once and keeps it; `secrets sealing-cert` prints the certificate
/// (openssl parses it) and never the key; `check` says what the add-ons need.
#[test]
fn cli_init_update_keeps_the_key_and_prints_the_cert() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cluster.toml"), CLUSTER).unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("sealed-secrets: chart sealed-secrets"),
        "{text}"
    );
    assert!(
        text.contains(
            "registries: docker.io mirrored by https://registry.lan:5000 (no secrets file yet)"
        ),
        "{text}"
    );

    let out = nodeforge(d, &["init", "--update", "-c", "cluster.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sp = d.join("nodeforge-secrets.toml");
    let first = Secrets::load(&sp).unwrap().sealing_key.unwrap();
    let out = nodeforge(d, &["init", "--update", "-c", "cluster.toml"]);
    assert!(out.status.success());
    assert_eq!(Secrets::load(&sp).unwrap().sealing_key.unwrap(), first);

    let out = nodeforge(d, &["secrets", "sealing-cert", "-c", "cluster.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    assert_eq!(pem, first.cert);
    assert!(!pem.contains("PRIVATE"));
    let f = d.join("cert.pem");
    std::fs::write(&f, &pem).unwrap();
    let (ok, o) = tool(
        "openssl",
        &["x509", "-in", f.to_str().unwrap(), "-noout"],
        None,
    );
    assert!(ok, "{o}");

    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("sealing key present"), "{text}");
    assert!(text.contains("registries:"), "{text}");
}

#[test]
fn sealing_cert_without_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = CLUSTER.replace("[addons.sealed-secrets]\n", "");
    std::fs::write(d.join("cluster.toml"), plain).unwrap();
    let out = nodeforge(d, &["init", "--update", "-c", "cluster.toml"]);
    assert!(out.status.success());
    let s = Secrets::load(&d.join("nodeforge-secrets.toml")).unwrap();
    assert!(s.sealing_key.is_none());
    let out = nodeforge(d, &["secrets", "sealing-cert", "-c", "cluster.toml"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no sealing key"), "{e}");
}

/// examples/homelab/renovate.json passes Renovate's schema (as vendored by check-jsonschema) and
/// its regex finds every pin of overlays/charts.toml with the pinned version (Python's `re`, after
/// turning JavaScript's `(?<name>` into Python's `(?P<name>`).
#[test]
fn renovate_snippet_is_valid_and_finds_every_pin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = root.join("examples/homelab/renovate.json");
    let cj = pip_tool("check-jsonschema");
    let (ok, out) = tool(
        &cj,
        &["--builtin-schema", "vendor.renovate", cfg.to_str().unwrap()],
        None,
    );
    assert!(ok, "{out}");
    let script = r#"
import json, re, sys
c = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
for ms in c["customManagers"][0]["matchStrings"]:
    for m in re.finditer(ms.replace("(?<", "(?P<"), text):
        d = m.groupdict()
        print(d["depName"], d["currentValue"], d["datasource"], d.get("registryUrl") or "-")
"#;
    let pins_file = root.join("overlays/charts.toml");
    let (ok, out) = tool(
        "python3",
        &[
            "-c",
            script,
            cfg.to_str().unwrap(),
            pins_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    let pins = addons::charts::pins().unwrap();
    let images = addons::charts::image_pins().unwrap();
    assert!(images.contains_key("kube-vip"));
    let found: Vec<&str> = out.lines().collect();
    assert_eq!(found.len(), pins.len() + images.len(), "{out}");
    for p in pins.values() {
        let want = format!("{} {} helm {}", p.chart, p.version, p.repo);
        assert!(found.contains(&want.as_str()), "{want} not in {out}");
    }
    for i in images.values() {
        let want = format!("{} {} docker -", i.image, i.version);
        assert!(found.contains(&want.as_str()), "{want} not in {out}");
    }
}

fn ha_cluster(server: &str, vip: &str) -> String {
    let mut t = format!(
        r#"
[cluster]
name = "ha"
k3s_version = "v1.33.5+k3s1"
server = "https://{server}:6443"
datastore = "etcd"

[addons.kube-vip]
address = "{vip}"
interface = "eth0"
"#
    );
    for i in 0..3 {
        t.push_str(&format!(
            "[[nodes]]\nhostname = \"cp{}\"\nrole = \"server\"\nboard = \"rpi4\"\naddress = \"10.0.0.1{i}/24\"\ngateway = \"10.0.0.1\"\n",
            i + 1
        ));
    }
    t.push_str("[[nodes]]\nhostname = \"w1\"\nrole = \"agent\"\nboard = \"rpi4\"\n");
    t
}

#[test]
fn kube_vip_manifest_snapshot_validates_and_tls_san() {
    let c = parse_cluster(&ha_cluster("10.0.0.9", "10.0.0.9"), None).unwrap();
    let m = seed::server_manifests(&c).unwrap();
    let (_, bytes) = m
        .iter()
        .find(|(n, _)| n == addons::kube_vip::FILE)
        .expect("kube-vip.yaml among the server manifests");
    let text = String::from_utf8(bytes.clone()).unwrap();
    snapshot("kube-vip.yaml", &text);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("kube-vip.yaml");
    std::fs::write(&f, &text).unwrap();
    let kv = pip_tool("kubernetes-validate");
    let (ok, out) = tool(&kv, &["-k", K8S, "--strict", f.to_str().unwrap()], None);
    assert!(ok, "{out}");
    for kind in [
        "serviceaccount",
        "clusterrole/",
        "clusterrolebinding",
        "daemonset",
    ] {
        assert!(
            out.to_lowercase().contains(kind),
            "{kind} not validated: {out}"
        );
    }
    let s = secrets(&c);
    for n in c.servers() {
        let k = seed::k3s_config(&c, n, &s).unwrap();
        let sans = k.get("tls-san").unwrap().as_array().unwrap();
        assert!(
            sans.iter().any(|v| v == "10.0.0.9"),
            "{}: {sans:?}",
            n.hostname
        );
    }
    // Agents get no manifests.
    let w1 = seed::render(
        &c,
        c.node("w1").unwrap(),
        Some(&s),
        Family::Raspios,
        1_577_836_800,
    )
    .unwrap();
    assert!(!String::from_utf8_lossy(w1.file("user-data").unwrap()).contains("kube-vip"));
}

#[test]
fn check_warns_without_fixed_address_and_refuses_a_taken_vip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Registration through cp1's own address with etcd and 3 servers: an error that explains
    // (the VIP exists but nodes would not register through it).
    std::fs::write(d.join("cluster.toml"), ha_cluster("10.0.0.10", "10.0.0.9")).unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("ERROR cluster.server https://10.0.0.10:6443 is cp1's own address")
            && text.contains("set cluster.server = \"https://10.0.0.9:6443\"")
            && text.contains("required with etcd and 3 servers"),
        "{text}"
    );
    assert!(
        text.contains("kube-vip: VIP 10.0.0.9:6443")
            && text.contains("address free (no node has it), inside cp1's subnet 10.0.0.0/24; cluster.server does not use it"),
        "{text}"
    );
    // The same by a node's name, without kube-vip: an error naming the way out.
    let by_name = ha_cluster("cp1.lan", "10.0.0.9").replace(
        "[addons.kube-vip]\naddress = \"10.0.0.9\"\ninterface = \"eth0\"\n",
        "",
    );
    std::fs::write(d.join("cluster.toml"), &by_name).unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("is cp1's own address") && text.contains("add [addons.kube-vip]"),
        "{text}"
    );
    // An external datastore with several servers: a warning, check passes.
    let pg = by_name.replace("\"etcd\"", "\"postgres://k3s@db.lan:5432/k3s\"");
    assert_ne!(pg, by_name);
    std::fs::write(d.join("cluster.toml"), pg).unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("warning: cluster.server https://cp1.lan:6443 is cp1's own address"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("ERROR"), "{text}");
    // A DNS name that is no node's: fine.
    std::fs::write(
        d.join("cluster.toml"),
        by_name.replace("cp1.lan", "k3s.lan"),
    )
    .unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && !text.contains("own address"),
        "{text}"
    );
    // Through the VIP: no warning.
    std::fs::write(d.join("cluster.toml"), ha_cluster("10.0.0.9", "10.0.0.9")).unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && !text.contains("own address"),
        "{text}"
    );
    // A VIP that is a node's address: check fails.
    std::fs::write(d.join("cluster.toml"), ha_cluster("10.0.0.11", "10.0.0.11")).unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("node cp2's own address"), "{text}");
    // Outside the servers' subnet: a warning.
    std::fs::write(d.join("cluster.toml"), ha_cluster("10.0.5.9", "10.0.5.9")).unwrap();
    let out = nodeforge(d, &["check", "-c", "cluster.toml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("outside every server's subnet"), "{text}");
}

const GIT_PW: &str = "FAKE-GITPW-77aa";

#[test]
fn argocd_chart_and_root_application_with_private_repo() {
    let text = format!(
        "{CLUSTER}\n[addons.argocd]\nrepo = \"https://github.com/me/homelab\"\npath = \"clusters/home\"\nrevision = \"main\"\n"
    )
    .replacen("[addons.sealed-secrets]\n", "", 1);
    let c = parse_cluster(&text, None).unwrap();
    let mut s = secrets(&c);
    s.argocd_repo = Some(nodeforge::addons::argocd::RepoAuth {
        username: Some("me".into()),
        password: Some(GIT_PW.into()),
        ..Default::default()
    });
    let chart = seed::server_manifests(&c)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == addons::argocd::CHART_FILE)
        .unwrap();
    snapshot("argocd.yaml", &String::from_utf8(chart.1).unwrap());
    let root = addons::secret_manifests(&c, &s)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == addons::argocd::ROOT_FILE)
        .unwrap()
        .1;
    snapshot("argocd-root.yaml", &root);

    // Core objects (Namespace, Secret) with kubernetes-validate; the Application is a CRD object.
    let docs: Vec<&str> = root.split("\n---\n").collect();
    assert_eq!(docs.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("core.yaml");
    std::fs::write(&f, format!("{}\n---\n{}\n", docs[0], docs[1])).unwrap();
    let kv = pip_tool("kubernetes-validate");
    let (ok, out) = tool(&kv, &["-k", K8S, "--strict", f.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let secret: serde_json::Value = serde_saphyr::from_str(docs[1]).unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
        "repository"
    );
    assert_eq!(secret["stringData"]["url"], "https://github.com/me/homelab");
    let app: serde_json::Value = serde_saphyr::from_str(docs[2]).unwrap();
    assert_eq!(app["kind"], "Application");
    assert_eq!(app["spec"]["source"]["path"], "clusters/home");
    assert_eq!(app["spec"]["source"]["targetRevision"], "main");

    // The credentials: only in the server's full seed, in a 0600 file.
    let cp1 = c.node("cp1").unwrap();
    let full = seed::render(&c, cp1, Some(&s), Family::Raspios, 1_577_836_800).unwrap();
    let ud: serde_json::Value =
        serde_saphyr::from_str(std::str::from_utf8(full.file("user-data").unwrap()).unwrap())
            .unwrap();
    let path = format!("{}/{}", seed::MANIFEST_DIR, addons::argocd::ROOT_FILE);
    let wf = ud["write_files"].as_array().unwrap();
    let f = wf.iter().find(|f| f["path"] == path.as_str()).unwrap();
    assert_eq!(f["permissions"], "0600");
    for n in &c.nodes {
        for (name, b) in seed::render(&c, n, None, Family::Raspios, 1_577_836_800)
            .unwrap()
            .files
        {
            assert!(!String::from_utf8_lossy(&b).contains(GIT_PW), "{name}");
        }
    }
    for (name, b) in seed::server_manifests(&c).unwrap() {
        assert!(!String::from_utf8_lossy(&b).contains(GIT_PW), "{name}");
    }
    assert!(!format!("{s:?}").contains(GIT_PW));
    // Half a credential is an error that shows no value.
    s.argocd_repo = Some(nodeforge::addons::argocd::RepoAuth {
        password: Some(GIT_PW.into()),
        ..Default::default()
    });
    let e = format!("{:#}", addons::secret_manifests(&c, &s).unwrap_err());
    assert!(e.contains("[argocd_repo]") && !e.contains(GIT_PW), "{e}");
}
