//! Seed rendering: snapshots, `cloud-init schema` for every role × datastore × network, network-config
//! parsed by cloud-init's own code, k3s keys per docs/k3s.md, determinism and instance-id behaviour.

use nodeforge::base::Family;
use nodeforge::config::{parse_cluster, Cluster};
use nodeforge::secrets::Secrets;
use nodeforge::seed::{self, Seed};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "FAKE-TOKEN-5e1f0c2a";
const DB_PW: &str = "FAKE-DBPW-9b7d";
/// The build time every test seed is rendered for (2026-01-01T00:00:00Z).
const EPOCH: i64 = 1_767_225_600;

fn secrets(c: &Cluster) -> Secrets {
    let mut node_passwords = BTreeMap::new();
    for n in &c.nodes {
        node_passwords.insert(n.hostname.clone(), format!("FAKE-NODEPW-{}", n.hostname));
    }
    Secrets {
        token: TOKEN.into(),
        datastore_password: Some(DB_PW.into()),
        node_passwords,
        // Secrets from before the cluster CA: the snapshots keep the short-token layout
        // (tests/cluster_trust.rs covers the CA).
        agent_token: None,
        ca: None,
        ..Default::default()
    }
}

/// A cluster with every role; `datastore` and static/DHCP networking vary.
fn cluster_text(datastore: &str, static_net: bool, servers: usize, addons: bool) -> String {
    let mut t = format!(
        r#"
[cluster]
name = "test"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
datastore = "{datastore}"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0000000000000000000 me@laptop"]
timezone = "Europe/Paris"
domain = "lan"

[boards.rpi4]
base = "raspios-lite-arm64"
[boards.x86_64]
base = "debian-13-generic-amd64"
"#
    );
    if addons {
        t.push_str(
            r#"
[addons.metallb]
addresses = ["10.0.0.200-10.0.0.220"]
[addons.longhorn]
[addons.nvidia-device-plugin]
"#,
        );
    }
    let mut nodes: Vec<(String, &str, &str)> = Vec::new();
    for i in 1..=servers {
        nodes.push((format!("cp{i}"), "server", "rpi4"));
    }
    nodes.push(("w1".into(), "agent", "rpi4"));
    nodes.push(("st1".into(), "arm-worker-storage", "rpi4"));
    nodes.push(("gpu1".into(), "gpu-worker", "x86_64"));
    for (i, (h, role, board)) in nodes.iter().enumerate() {
        t.push_str(&format!(
            "\n[[nodes]]\nhostname = \"{h}\"\nrole = \"{role}\"\nboard = \"{board}\"\n"
        ));
        if static_net {
            t.push_str(&format!(
                "address = \"10.0.0.{}/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\", \"1.1.1.1\"]\n",
                10 + i
            ));
            if *board == "x86_64" {
                t.push_str("interface = \"enp1s0\"\n");
            }
        }
        if *role == "arm-worker-storage" {
            t.push_str("data_disk = \"/dev/disk/by-id/usb-JMicron_data\"\nusb_quirks = [\"152d:0578\"]\nlabels = [\"zone=attic\"]\n");
        }
    }
    t
}

fn cluster(datastore: &str, static_net: bool, servers: usize, addons: bool) -> Cluster {
    parse_cluster(
        &cluster_text(datastore, static_net, servers, addons),
        Some(Path::new("/nonexistent-dir/cluster.toml")),
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn family_for(c: &Cluster, host: &str) -> Family {
    let n = c.node(host).unwrap();
    c.base(n.board).unwrap().expected_family(n.board)
}

fn render(c: &Cluster, host: &str, family: Family, with_secrets: bool) -> Seed {
    let s = secrets(c);
    seed::render(
        c,
        c.node(host).unwrap(),
        with_secrets.then_some(&s),
        family,
        EPOCH,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn text(seed: &Seed, name: &str) -> String {
    String::from_utf8(seed.file(name).unwrap_or_default().to_vec()).unwrap()
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Compare `actual` with `tests/snapshots/<name>`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot(name: &str, actual: &str) {
    let path = snapshot_dir().join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "snapshot {} missing: run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  - {a}\n  + {b}", i + 1))
            .collect();
        panic!(
            "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept):\n{}\n(expected {} lines, got {})",
            diff.join("\n"),
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

fn seed_dump(seed: &Seed) -> String {
    let mut out = format!("# instance-id {}\n", seed.instance_id);
    for (name, bytes) in &seed.files {
        out.push_str(&format!(
            "=== {name} ===\n{}",
            String::from_utf8_lossy(bytes)
        ));
    }
    if let Some(pi) = &seed.pi {
        out.push_str(&format!(
            "=== pi cmdline_add ===\n{}\n",
            pi.cmdline_add.join(" ")
        ));
        for (s, l) in &pi.config {
            out.push_str(&format!("=== pi config [{s}] {l}\n"));
        }
    }
    out
}

#[test]
fn snapshots() {
    let c = cluster("etcd", true, 3, true);
    for host in ["cp1", "cp2", "w1", "st1", "gpu1"] {
        let seed = render(&c, host, family_for(&c, host), true);
        snapshot(&format!("etcd-static-{host}.txt"), &seed_dump(&seed));
    }
    let c = cluster("postgres://k3s@db.lan:5432/k3s", false, 2, false);
    let seed = render(&c, "cp1", Family::UbuntuRaspi, true);
    snapshot("postgres-dhcp-cp1.txt", &seed_dump(&seed));
    let c = cluster("sqlite", true, 1, false);
    let seed = render(&c, "st1", Family::DebianRaspi, true);
    snapshot("sqlite-static-st1-debian-raspi.txt", &seed_dump(&seed));
    let seed = render(&c, "cp1", Family::Raspios, false);
    snapshot("sqlite-generic-cp1.txt", &seed_dump(&seed));
}

/// Run `cloud-init schema` and judge by its exit status only (22.4 prints "Valid cloud-config",
/// 25.x "Valid schema"): 0 = valid, 1 = invalid, anything else = the tool itself failed.
fn schema_status(mut cmd: Command, what: &str) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e})"));
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, msg),
        Some(1) => (false, msg),
        _ => panic!("{what} failed to run ({}): {msg}", out.status),
    }
}

/// The host's cloud-init (Debian 12: 22.4) checks user-data.
fn cloud_init_schema(path: &Path) -> (bool, String) {
    let mut c = Command::new("cloud-init");
    c.args(["schema", "--config-file"]).arg(path);
    schema_status(
        c,
        "`cloud-init schema` (install the Debian package `cloud-init`, tests/setup-host.sh)",
    )
}

/// Debian 13's cloud-init (25.x, in a cached chroot built by tests/tools/cloud-init-25.sh; root
/// needed) checks `path`; `args` add e.g. `--schema-type network-config`.
/// NODEFORGE_SKIP_CLOUD_INIT_25=1 skips these checks (README, "Tests").
fn cloud_init_25_schema(path: &Path, args: &[&str]) -> Option<(bool, String)> {
    if std::env::var_os("NODEFORGE_SKIP_CLOUD_INIT_25").is_some_and(|v| v == "1") {
        eprintln!("NODEFORGE_SKIP_CLOUD_INIT_25=1: cloud-init 25 schema checks skipped");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/cloud-init-25.sh");
    let mut c = Command::new(&script);
    c.arg(path).args(args);
    Some(schema_status(
        c,
        "tests/tools/cloud-init-25.sh (needs root, mmdebstrap and a Debian mirror; NODEFORGE_SKIP_CLOUD_INIT_25=1 skips)",
    ))
}

#[test]
fn cloud_init_schema_accepts_every_combination() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, PathBuf)> = Vec::new();
    for ds in ["sqlite", "etcd", "postgres://k3s@db.lan:5432/k3s"] {
        for static_net in [false, true] {
            let c = cluster(ds, static_net, 1, true);
            for host in ["cp1", "w1", "st1", "gpu1"] {
                let mut fams = vec![family_for(&c, host)];
                if host == "st1" {
                    fams.push(Family::DebianRaspi);
                }
                for fam in fams {
                    for full in [true, false] {
                        // the generic seed does not depend on the datastore or the network
                        if !full && (ds != "sqlite" || static_net) {
                            continue;
                        }
                        let seed = render(&c, host, fam, full);
                        let p = dir.path().join(format!("ud-{}", cases.len()));
                        std::fs::write(&p, seed.file("user-data").unwrap()).unwrap();
                        cases.push((
                            format!("{ds} static={static_net} {host} {fam:?} full={full}"),
                            p,
                        ));
                    }
                }
            }
        }
    }
    assert!(cases.len() >= 24);
    // cloud-init takes ~1 s to start: check in a few threads.
    let failures: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                sc.spawn(move || {
                    chunk
                        .iter()
                        .flat_map(|(what, p)| {
                            let (ok, msg) = cloud_init_schema(p);
                            let v22 = (!ok).then(|| format!("cloud-init 22.4: {what}: {msg}"));
                            let v25 = cloud_init_25_schema(p, &[])
                                .filter(|(ok, _)| !ok)
                                .map(|(_, msg)| format!("cloud-init 25: {what}: {msg}"));
                            v22.into_iter().chain(v25)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cloud_init_schema_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad");
    std::fs::write(
        &p,
        "#cloud-config\nssh_pwauth: 3\ngrowpart: {mode: bogus}\n",
    )
    .unwrap();
    assert!(!cloud_init_schema(&p).0);
    if let Some((ok, msg)) = cloud_init_25_schema(&p, &[]) {
        assert!(!ok, "cloud-init 25 accepted a bad config: {msg}");
    }
    let good = dir.path().join("good");
    std::fs::write(&good, "#cloud-config\nssh_pwauth: false\n").unwrap();
    assert!(cloud_init_schema(&good).0);
    if let Some((ok, msg)) = cloud_init_25_schema(&good, &[]) {
        assert!(ok, "cloud-init 25 refused a good config: {msg}");
    }
}

/// Every static network-config nodeforge renders passes cloud-init 25's network-config schema,
/// and that schema can fail.
#[test]
fn network_config_schema_on_cloud_init_25() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(
        &bad,
        "network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: 12\n",
    )
    .unwrap();
    let Some((ok, msg)) = cloud_init_25_schema(&bad, &["--schema-type", "network-config"]) else {
        return;
    };
    assert!(!ok, "cloud-init 25 accepted a bad network-config: {msg}");
    let c = cluster("sqlite", true, 1, false);
    for host in ["cp1", "w1", "st1", "gpu1"] {
        let seed = render(&c, host, family_for(&c, host), true);
        let p = dir.path().join(host);
        std::fs::write(&p, seed.file("network-config").expect("static node")).unwrap();
        let (ok, msg) =
            cloud_init_25_schema(&p, &["--schema-type", "network-config"]).expect("not skipped");
        assert!(
            ok,
            "{host}: cloud-init 25 refused the network-config: {msg}"
        );
    }
}

/// Parse a network-config with cloud-init's own v2 parser and render it for systemd-networkd.
fn cloud_init_networkd(path: &Path) -> String {
    let script = r#"
import sys, yaml
from cloudinit.net.network_state import parse_net_config_data
from cloudinit.net import networkd
cfg = yaml.safe_load(open(sys.argv[1]))
cfg = cfg.get("network", cfg)
ns = parse_net_config_data(cfg, skip_broken=False)
for name, text in sorted(networkd.Renderer({})._render_content(ns).items()):
    print(text)
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("cannot run /usr/bin/python3 (needs the cloud-init package)");
    assert!(
        out.status.success(),
        "cloud-init rejected the network-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn network_config_static_parsed_by_cloud_init() {
    let c = cluster("sqlite", true, 1, false);
    let dir = tempfile::tempdir().unwrap();
    for (host, iface, addr) in [
        ("cp1", "eth0", "10.0.0.10/24"),
        ("gpu1", "enp1s0", "10.0.0.13/24"),
    ] {
        let seed = render(&c, host, family_for(&c, host), true);
        let p = dir.path().join(host);
        std::fs::write(
            &p,
            seed.file("network-config")
                .expect("static node has network-config"),
        )
        .unwrap();
        let nd = cloud_init_networkd(&p);
        assert!(nd.contains(&format!("Name={iface}")), "{nd}");
        assert!(nd.contains(&format!("Address={addr}")), "{nd}");
        assert!(nd.contains("Gateway=10.0.0.1"), "{nd}");
        assert!(nd.contains("DNS=10.0.0.1 1.1.1.1"), "{nd}");
        assert!(
            !nd.contains("DHCP=yes") && !nd.contains("DHCP=ipv4"),
            "{nd}"
        );
    }
}

#[test]
fn dhcp_nodes_get_explicit_dhcp_on_their_nic() {
    // Pi DHCP nodes: an explicit DHCP network-config on eth0 (a base's own network-config is
    // dropped, so nothing foreign can apply); x86_64 without `interface`: no file, cloud-init's
    // fallback (DHCP on the first NIC) applies.
    let c = cluster("sqlite", false, 1, false);
    let dir = tempfile::tempdir().unwrap();
    for host in ["cp1", "w1", "st1"] {
        let seed = render(&c, host, family_for(&c, host), true);
        let names: Vec<&str> = seed.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["meta-data", "user-data", "network-config"]);
        let nc = text(&seed, "network-config");
        assert_eq!(
            nc, "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n",
            "{host}"
        );
        let p = dir.path().join(host);
        std::fs::write(&p, &nc).unwrap();
        let nd = cloud_init_networkd(&p);
        assert!(nd.contains("Name=eth0"), "{nd}");
        assert!(nd.contains("DHCP=ipv4"), "{nd}");
    }
    let seed = render(&c, "gpu1", family_for(&c, "gpu1"), true);
    let names: Vec<&str> = seed.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "user-data"]);
    // An x86_64 DHCP node that names its NIC gets it.
    let named = parse_cluster(
        &cluster_text("sqlite", false, 1, false).replace(
            "board = \"x86_64\"\n",
            "board = \"x86_64\"\ninterface = \"enp3s0\"\n",
        ),
        Some(Path::new("/nonexistent-dir/cluster.toml")),
    )
    .unwrap();
    let seed = render(&named, "gpu1", Family::DebianGeneric, true);
    assert!(text(&seed, "network-config").contains("enp3s0:\n      dhcp4: true\n"));
}

/// The k3s config.yaml embedded in user-data, parsed.
fn k3s_yaml(seed: &Seed) -> BTreeMap<String, serde_json::Value> {
    let ud: serde_json::Value = serde_saphyr::from_str(&text(seed, "user-data")).unwrap();
    let wf = ud["write_files"].as_array().unwrap();
    let f = wf
        .iter()
        .find(|f| f["path"] == "/etc/rancher/k3s/config.yaml")
        .expect("config.yaml in write_files");
    assert_eq!(f["permissions"], "0600");
    serde_saphyr::from_str(f["content"].as_str().unwrap()).unwrap()
}

/// k3s config keys nodeforge may write (docs/k3s.md + node-name).
const K3S_KEYS: &[&str] = &[
    "token",
    "server",
    "node-name",
    "cluster-init",
    "datastore-endpoint",
    "tls-san",
    "write-kubeconfig-mode",
    "node-taint",
    "node-label",
    "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention",
    "disable",
];

#[test]
fn k3s_keys_per_facts() {
    // etcd, 3 servers, agents, metallb
    let c = cluster("etcd", true, 3, true);
    let all: Vec<_> = ["cp1", "cp2", "cp3", "w1", "st1", "gpu1"]
        .iter()
        .map(|h| (*h, k3s_yaml(&render(&c, h, family_for(&c, h), true))))
        .collect();
    for (h, k) in &all {
        for key in k.keys() {
            assert!(
                K3S_KEYS.contains(&key.as_str()),
                "{h}: unexpected key {key}"
            );
        }
        assert_eq!(k["token"], TOKEN, "{h}");
        assert_eq!(k["node-name"], *h);
    }
    let get = |h: &str| all.iter().find(|x| x.0 == h).unwrap().1.clone();
    let cp1 = get("cp1");
    assert_eq!(cp1["cluster-init"], true);
    assert!(!cp1.contains_key("server"));
    assert_eq!(cp1["write-kubeconfig-mode"], "0600");
    assert!(cp1["tls-san"]
        .as_array()
        .unwrap()
        .contains(&"10.0.0.10".into()));
    assert_eq!(
        cp1["node-taint"],
        serde_json::json!(["CriticalAddonsOnly=true:NoExecute"])
    );
    assert_eq!(cp1["etcd-snapshot-schedule-cron"], "0 */12 * * *");
    assert_eq!(cp1["etcd-snapshot-retention"], 5);
    assert_eq!(cp1["disable"], serde_json::json!(["servicelb"]));
    for h in ["cp2", "cp3"] {
        let k = get(h);
        assert_eq!(k["server"], "https://10.0.0.10:6443");
        assert!(!k.contains_key("cluster-init"));
    }
    for h in ["w1", "st1", "gpu1"] {
        let k = get(h);
        assert_eq!(k["server"], "https://10.0.0.10:6443");
        for absent in [
            "cluster-init",
            "tls-san",
            "write-kubeconfig-mode",
            "disable",
            "datastore-endpoint",
        ] {
            assert!(!k.contains_key(absent), "{h} has {absent}");
        }
    }
    assert_eq!(
        get("st1")["node-label"],
        serde_json::json!(["node.longhorn.io/create-default-disk=true", "zone=attic"])
    );
    // gpu.present comes from the GPU setup once it succeeded (nvidia.sh), never at registration.
    assert!(!get("gpu1").contains_key("node-label"), "{:?}", get("gpu1"));

    // postgres: endpoint with the password from secrets, no cluster-init, no server key on servers
    let c = cluster("postgres://k3s@db.lan:5432/k3s", false, 2, false);
    for h in ["cp1", "cp2"] {
        let k = k3s_yaml(&render(&c, h, Family::Raspios, true));
        assert_eq!(
            k["datastore-endpoint"],
            format!("postgres://k3s:{DB_PW}@db.lan:5432/k3s")
        );
        assert!(!k.contains_key("server") && !k.contains_key("cluster-init"));
        assert!(!k.contains_key("etcd-snapshot-schedule-cron"));
    }
    // single sqlite server without agents: no taint
    let c = parse_cluster(
        cluster_text("sqlite", false, 1, false)
            .split("\n[[nodes]]\nhostname = \"w1\"")
            .next()
            .unwrap(),
        None,
    )
    .unwrap();
    let k = k3s_yaml(&render(&c, "cp1", Family::Raspios, true));
    assert!(!k.contains_key("node-taint"), "{k:?}");
    assert!(!k.contains_key("server"));
}

#[test]
fn user_data_content() {
    let c = cluster("etcd", true, 1, true);
    let ud = |h: &str, fam: Family| -> serde_json::Value {
        let t = text(&render(&c, h, fam, true), "user-data");
        assert!(t.starts_with("#cloud-config\n"));
        serde_saphyr::from_str(&t).unwrap()
    };
    let cp1 = ud("cp1", Family::Raspios);
    assert_eq!(cp1["hostname"], "cp1");
    assert_eq!(cp1["fqdn"], "cp1.lan");
    assert_eq!(cp1["timezone"], "Europe/Paris");
    assert_eq!(cp1["ssh_pwauth"], false);
    assert_eq!(cp1["disable_root"], true);
    assert_eq!(cp1["users"][0]["lock_passwd"], true);
    assert!(cp1.get("packages").is_none(), "servers install no packages");
    let paths: Vec<String> = cp1["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    for p in [
        "/etc/rancher/node/password",
        "/var/lib/rancher/k3s/server/manifests/metallb.yaml",
        "/var/lib/rancher/k3s/server/manifests/metallb-pool.yaml",
        "/var/lib/rancher/k3s/server/manifests/longhorn.yaml",
        "/var/lib/rancher/k3s/server/manifests/nvidia-device-plugin.yaml",
    ] {
        assert!(paths.contains(&p.to_string()), "missing {p} in {paths:?}");
    }
    let pw = cp1["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/rancher/node/password")
        .unwrap();
    assert_eq!(pw["content"], "FAKE-NODEPW-cp1");
    assert_eq!(pw["permissions"], "0600");
    let rc = cp1["runcmd"].as_array().unwrap();
    assert_eq!(
        rc[rc.len() - 2],
        serde_json::json!([
            "sh",
            "/usr/local/lib/nodeforge/install-k3s.sh",
            "server",
            "/boot/firmware"
        ])
    );
    // the last step takes the secrets off the seed
    assert_eq!(
        rc[rc.len() - 1],
        serde_json::json!([
            "sh",
            "/usr/local/lib/nodeforge/scrub-seed.sh",
            "/boot/firmware",
            "/usr/local/lib/nodeforge/user-data.scrubbed"
        ])
    );
    // agents get no manifests; Debian families find the seed on CIDATA
    let w1 = ud("w1", Family::DebianRaspi);
    let s = serde_json::to_string(&w1).unwrap();
    assert!(!s.contains("/server/manifests/"));
    let rc = w1["runcmd"].as_array().unwrap();
    let install = &rc[rc.len() - 2];
    assert_eq!(install[2], "agent");
    assert_eq!(install[3], "LABEL=CIDATA");
    assert_eq!(rc[rc.len() - 1][2], "LABEL=CIDATA");
    assert!(s.contains("pi-boot-persist.sh"));
    // storage: packages, iscsid, multipath, data disk before install
    let st = ud("st1", Family::Raspios);
    assert_eq!(
        st["packages"],
        serde_json::json!(["open-iscsi", "nfs-common"])
    );
    assert_eq!(st["package_update"], true);
    let rc: Vec<String> = st["runcmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| serde_json::to_string(x).unwrap())
        .collect();
    let pos = |needle: &str| {
        rc.iter()
            .position(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {rc:?}"))
    };
    assert!(pos("data-disk.sh") < pos("install-k3s.sh"));
    assert!(pos("iscsid") < pos("install-k3s.sh"));
    assert!(pos("multipathd") < pos("install-k3s.sh"));
    assert!(rc[pos("data-disk.sh")].contains("/var/lib/longhorn"));
    // gpu: NVIDIA (through its unit) before k3s, nouveau blacklisted, one conditional reboot
    let g = ud("gpu1", Family::DebianGeneric);
    let rc = serde_json::to_string(&g["runcmd"]).unwrap();
    assert!(
        rc.find("[\"systemctl\",\"start\",\"nodeforge-gpu-setup.service\"]")
            .unwrap()
            < rc.find("install-k3s.sh").unwrap(),
        "{rc}"
    );
    assert!(rc
        .find("\"enable\",\"nodeforge-gpu-setup.service\"")
        .is_some());
    let file = |v: &serde_json::Value, path: &str| -> serde_json::Value {
        v["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no {path}"))
            .clone()
    };
    let bl = file(&g, "/etc/modprobe.d/nodeforge-blacklist-nouveau.conf");
    assert!(bl["content"]
        .as_str()
        .unwrap()
        .lines()
        .any(|l| l == "blacklist nouveau"));
    let unit = file(&g, "/etc/systemd/system/nodeforge-gpu-setup.service");
    let unit = unit["content"].as_str().unwrap();
    assert!(unit.contains("ExecStart=/bin/sh /usr/local/lib/nodeforge/nvidia.sh\n"));
    assert!(unit.contains("Type=oneshot") && unit.contains("TimeoutStartSec="));
    assert!(unit.contains("WantedBy=multi-user.target"));
    assert!(
        !unit.contains("Before=k3s"),
        "the GPU setup must never hold the join"
    );
    assert_eq!(g["power_state"]["mode"], "reboot");
    assert_eq!(
        g["power_state"]["condition"],
        serde_json::json!(["test", "-e", "/run/nodeforge/gpu-reboot"])
    );
    assert!(cp1.get("power_state").is_none() && st.get("power_state").is_none());

    // clock: a floor at the build time on every boot, and k3s's first start waits (bounded)
    for (v, unit) in [(&cp1, "k3s"), (&w1, "k3s-agent"), (&g, "k3s-agent")] {
        assert_eq!(
            v["bootcmd"],
            serde_json::json!([[
                "sh",
                "-c",
                format!("[ \"$(date +%s)\" -ge {EPOCH} ] || date -u -s @{EPOCH}")
            ]])
        );
        let d = file(
            v,
            &format!("/etc/systemd/system/{unit}.service.d/10-nodeforge-clock.conf"),
        );
        assert!(d["content"].as_str().unwrap().contains(&format!(
            "ExecStartPre=/bin/sh /usr/local/lib/nodeforge/time-wait.sh {EPOCH} 180\n"
        )));
        file(v, "/usr/local/lib/nodeforge/time-wait.sh");
    }
}

/// The secret-free user-data a node puts on its seed after the first boot.
fn scrubbed(seed: &Seed) -> String {
    let ud: serde_json::Value = serde_saphyr::from_str(&text(seed, "user-data")).unwrap();
    let f = ud["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == seed::SCRUBBED_USER_DATA)
        .expect("scrubbed user-data in write_files")
        .clone();
    f["content"].as_str().unwrap().to_string()
}

#[test]
fn scrubbed_user_data_holds_no_secret_and_keeps_per_boot_settings() {
    let dir = tempfile::tempdir().unwrap();
    for ds in ["etcd", "postgres://k3s@db.lan:5432/k3s"] {
        let c = cluster(ds, true, 1, true);
        let s = secrets(&c);
        for host in ["cp1", "w1", "st1", "gpu1"] {
            let seed = render(&c, host, family_for(&c, host), true);
            let full = text(&seed, "user-data");
            let sc = scrubbed(&seed);
            assert!(full.contains(TOKEN), "{host}: the full seed has the token");
            assert!(!sc.contains(TOKEN), "{host}: token in the scrubbed copy");
            assert!(
                !sc.contains(DB_PW),
                "{host}: datastore password in the scrubbed copy"
            );
            assert!(!sc.contains(s.node_passwords[host].as_str()), "{host}");
            assert!(sc.starts_with("#cloud-config\n"), "{sc}");
            // what `inspect` reports: the kinds, before and after the scrub
            let mut want = vec!["cluster token", "node password"];
            if host == "cp1" && ds.starts_with("postgres") {
                want.insert(1, "datastore password");
            }
            assert_eq!(
                nodeforge::inspect::secrets_in_user_data(&full),
                want,
                "{host}"
            );
            assert!(nodeforge::inspect::secrets_in_user_data(&sc).is_empty());
            let v: serde_json::Value = serde_saphyr::from_str(&sc).unwrap();
            let f: serde_json::Value = serde_saphyr::from_str(&full).unwrap();
            for key in [
                "hostname", "fqdn", "bootcmd", "users", "growpart", "timezone",
            ] {
                assert_eq!(v[key], f[key], "{host}: {key}");
            }
            for gone in ["write_files", "runcmd", "power_state"] {
                assert!(v.get(gone).is_none(), "{host}: {gone} in the scrubbed copy");
            }
            let p = dir.path().join(format!("{host}-{}", ds.len()));
            std::fs::write(&p, &sc).unwrap();
            let (ok, msg) = cloud_init_schema(&p);
            assert!(ok, "{host}: {msg}");
        }
    }
    // the generic seed has nothing to scrub
    let c = cluster("sqlite", false, 1, false);
    let g = text(&render(&c, "cp1", Family::Raspios, false), "user-data");
    assert!(!g.contains("scrub-seed") && !g.contains("user-data.scrubbed"));
    assert!(nodeforge::inspect::secrets_in_user_data(&g).is_empty());
}

#[test]
fn yaml_quotes_yaml11_booleans() {
    let mut t = cluster_text("sqlite", false, 1, false);
    t = t.replace("name = \"test\"", "name = \"test\"\nadmin_user = \"yes\"");
    t = t.replace(
        "labels = [\"zone=attic\"]",
        "labels = [\"zone=attic\"]\n[nodes.k3s]\nkubelet-arg = [\"on\"]\nsnapshotter = \"no\"",
    );
    let c = parse_cluster(&t, None).unwrap_or_else(|e| panic!("{e:#}"));
    let ud = text(&render(&c, "st1", Family::Raspios, true), "user-data");
    assert!(
        ud.contains("name: \"yes\"") || ud.contains("name: 'yes'"),
        "{ud}"
    );
    let v: serde_json::Value = serde_saphyr::from_str(&ud).unwrap();
    assert_eq!(v["users"][0]["name"], "yes");
    // cloud-init's PyYAML (YAML 1.1) must read strings, not booleans
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ud");
    std::fs::write(&p, &ud).unwrap();
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); assert d['users'][0]['name']=='yes', d['users'][0]; \
             k=[f for f in d['write_files'] if f['path']=='/etc/rancher/k3s/config.yaml'][0]; c=yaml.safe_load(k['content']); \
             assert c['kubelet-arg']==['on'] and c['snapshotter']=='no', c",
        ])
        .arg(&p)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deterministic_and_instance_id_follows_content() {
    let c = cluster("etcd", true, 3, true);
    let a = render(&c, "cp2", Family::Raspios, true);
    let b = render(&c, "cp2", Family::Raspios, true);
    assert_eq!(a, b);
    assert!(text(&a, "meta-data").contains(&format!("instance-id: {}", a.instance_id)));
    assert!(text(&a, "meta-data").contains("local-hostname: cp2"));
    // a config change changes the instance-id
    let t = cluster_text("etcd", true, 3, true).replace("Europe/Paris", "UTC");
    let c2 = parse_cluster(&t, None).unwrap();
    let d = render(&c2, "cp2", Family::Raspios, true);
    assert_ne!(a.instance_id, d.instance_id);
    // so does an address change (network-config only)
    let t = cluster_text("etcd", true, 3, true)
        .replace("dns = [\"10.0.0.1\", \"1.1.1.1\"]", "dns = [\"10.0.0.1\"]");
    let c3 = parse_cluster(&t, None).unwrap();
    assert_ne!(
        a.instance_id,
        render(&c3, "cp2", Family::Raspios, true).instance_id
    );
}

#[test]
fn generic_seed_holds_no_identity() {
    let c = cluster("etcd", true, 3, true);
    let s = secrets(&c);
    let seed = render(&c, "cp1", Family::Raspios, false);
    let all: String = seed
        .files
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).to_string())
        .collect();
    assert!(!all.contains(TOKEN));
    for p in s.node_passwords.values() {
        assert!(!all.contains(p.as_str()));
    }
    assert!(!all.contains("hostname"), "{all}");
    assert!(!all.contains("install-k3s"), "{all}");
    assert!(seed.file("network-config").is_none());
    assert!(seed.pi.is_some());
}

#[test]
fn pi_boot_for_pi_nodes_only() {
    let c = cluster("sqlite", true, 1, false);
    let st = render(&c, "st1", Family::Raspios, true);
    let pi = st.pi.unwrap();
    assert!(pi.cmdline_add.contains(&"cgroup_enable=memory".to_string()));
    assert!(pi
        .cmdline_add
        .contains(&"usb-storage.quirks=152d:0578:u".to_string()));
    assert!(render(&c, "gpu1", Family::DebianGeneric, true).pi.is_none());
}

#[test]
fn manifests_are_valid_yaml() {
    let c = cluster("etcd", true, 1, true);
    for (name, bytes) in seed::server_manifests(&c).unwrap() {
        let t = String::from_utf8(bytes).unwrap();
        for doc in t.split("\n---\n") {
            let v: serde_json::Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                v["apiVersion"].is_string() && v["kind"].is_string(),
                "{name}"
            );
        }
    }
}

#[test]
fn missing_datastore_password_is_an_error_without_secrets() {
    let c = cluster("postgres://k3s@db.lan:5432/k3s", false, 2, false);
    let mut s = secrets(&c);
    s.datastore_password = None;
    let e = seed::render(&c, c.node("cp1").unwrap(), Some(&s), Family::Raspios, EPOCH).unwrap_err();
    let m = format!("{e:#}");
    assert!(m.contains("datastore_password"), "{m}");
    assert!(!m.contains(TOKEN));
}

/// The systemd units the seed writes (k3s's clock drop-in, the GPU setup unit) pass
/// `systemd-analyze verify`, next to a k3s unit shaped like the one k3s's install.sh writes.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let c = cluster("etcd", true, 1, true);
    let dir = tempfile::tempdir().unwrap();
    for (host, unit) in [("cp1", "k3s"), ("gpu1", "k3s-agent")] {
        let ud: serde_json::Value = serde_saphyr::from_str(&text(
            &render(&c, host, family_for(&c, host), true),
            "user-data",
        ))
        .unwrap();
        let d = dir.path().join(host);
        let unit_file = d.join(format!("{unit}.service"));
        std::fs::create_dir_all(d.join(format!("{unit}.service.d"))).unwrap();
        std::fs::write(
            &unit_file,
            "[Unit]\nDescription=k3s\nWants=network-online.target\nAfter=network-online.target\n\n\
             [Service]\nType=notify\nKillMode=process\nDelegate=yes\nTimeoutStartSec=0\nRestart=always\n\
             ExecStart=/bin/true server\n\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        let mut units = vec![unit_file];
        for f in ud["write_files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            let Some(rel) = path.strip_prefix("/etc/systemd/system/") else {
                continue;
            };
            let p = d.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f["content"].as_str().unwrap()).unwrap();
            if rel.ends_with(".service") {
                units.push(p);
            }
        }
        assert!(
            d.join(format!("{unit}.service.d/10-nodeforge-clock.conf"))
                .is_file(),
            "{host}: no clock drop-in"
        );
        assert_eq!(units.len(), if host == "gpu1" { 2 } else { 1 });
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .args(&units)
            .output()
            .expect("cannot run systemd-analyze (the Debian package systemd)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{host}: {err}"
        );
    }
}

/// `[nodes.k3s]` repeatable flags merge with nodeforge's own lists in every form k3s accepts.
#[test]
fn k3s_extra_lists_merge_with_nodeforge_lists() {
    for (sans, taints, disable) in [
        (
            r#""vip.lan,10.0.0.100""#,
            r#""dedicated=db:NoSchedule""#,
            r#""traefik""#,
        ),
        (
            r#"["vip.lan", "10.0.0.100"]"#,
            r#"["dedicated=db:NoSchedule"]"#,
            r#"["traefik"]"#,
        ),
        (
            r#"["vip.lan,10.0.0.100"]"#,
            r#""dedicated=db:NoSchedule""#,
            r#""traefik,servicelb""#,
        ),
    ] {
        let t = format!(
            r#"
[cluster]
name = "t"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
ssh_authorized_keys = ["ssh-ed25519 AAAA me@laptop"]

[addons.metallb]
addresses = ["10.0.0.200-10.0.0.220"]

[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
address = "10.0.0.10/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
[nodes.k3s]
tls-san = {sans}
node-taint = {taints}
disable = {disable}
kubelet-arg = "eviction-hard=memory.available<100Mi,nodefs.available<10%"

[[nodes]]
hostname = "w1"
role = "agent"
board = "rpi4"
[nodes.k3s]
node-label = "zone=attic,rack=r1"
"#
        );
        let c = parse_cluster(&t, Some(Path::new("/nonexistent-dir/cluster.toml")))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let seed = render(&c, "cp1", Family::Raspios, true);
        let k = k3s_yaml(&seed);
        let strs = |key: &str| -> Vec<String> {
            k[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is not a list: {:?}", k[key]))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            strs("tls-san"),
            ["10.0.0.10", "vip.lan", "10.0.0.100"],
            "{sans}"
        );
        assert_eq!(
            strs("node-taint"),
            [nodeforge::seed::SERVER_TAINT, "dedicated=db:NoSchedule"]
        );
        assert_eq!(strs("disable"), ["servicelb", "traefik"], "{disable}");
        // kubelet args hold commas of their own: never split
        assert_eq!(
            strs("kubelet-arg"),
            ["eviction-hard=memory.available<100Mi,nodefs.available<10%"]
        );
        let w = k3s_yaml(&render(&c, "w1", Family::Raspios, true));
        assert_eq!(
            w["node-label"],
            serde_json::json!(["zone=attic", "rack=r1"])
        );
    }
}
