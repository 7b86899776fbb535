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

fn secrets(c: &Cluster) -> Secrets {
    let mut node_passwords = BTreeMap::new();
    for n in &c.nodes {
        node_passwords.insert(n.hostname.clone(), format!("FAKE-NODEPW-{}", n.hostname));
    }
    Secrets {
        token: TOKEN.into(),
        datastore_password: Some(DB_PW.into()),
        node_passwords,
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
    seed::render(c, c.node(host).unwrap(), with_secrets.then_some(&s), family)
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

fn cloud_init_schema(path: &Path) -> (bool, String) {
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `cloud-init schema` ({e}): install the Debian package `cloud-init` (tests/setup-host.sh)")
        });
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && msg.contains("Valid cloud-config"),
        msg,
    )
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
                        .filter_map(|(what, p)| {
                            let (ok, msg) = cloud_init_schema(p);
                            (!ok).then(|| format!("{what}: {msg}"))
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
fn dhcp_nodes_have_no_network_config() {
    let c = cluster("sqlite", false, 1, false);
    for host in ["cp1", "w1", "st1", "gpu1"] {
        let seed = render(&c, host, family_for(&c, host), true);
        assert!(seed.file("network-config").is_none());
        let names: Vec<&str> = seed.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["meta-data", "user-data"]);
    }
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
    assert_eq!(
        get("gpu1")["node-label"],
        serde_json::json!(["nvidia.com/gpu.present=true"])
    );

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
    let last = cp1["runcmd"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        serde_json::json!([
            "sh",
            "/usr/local/lib/nodeforge/install-k3s.sh",
            "server",
            "/boot/firmware"
        ])
    );
    // agents get no manifests; Debian families find the seed on CIDATA
    let w1 = ud("w1", Family::DebianRaspi);
    let s = serde_json::to_string(&w1).unwrap();
    assert!(!s.contains("/server/manifests/"));
    let last = w1["runcmd"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last[2], "agent");
    assert_eq!(last[3], "LABEL=CIDATA");
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
    // gpu: NVIDIA before k3s
    let g = ud("gpu1", Family::DebianGeneric);
    let rc = serde_json::to_string(&g["runcmd"]).unwrap();
    assert!(rc.find("nvidia.sh").unwrap() < rc.find("install-k3s.sh").unwrap());
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
    let e = seed::render(&c, c.node("cp1").unwrap(), Some(&s), Family::Raspios).unwrap_err();
    let m = format!("{e:#}");
    assert!(m.contains("datastore_password"), "{m}");
    assert!(!m.contains(TOKEN));
}
