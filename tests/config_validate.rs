//! cluster.toml parsing and validation: every rule fails where it should and names the node.

use nodeforge::config::{
    load_cluster, parse_cluster, resolve_ref, Board, Datastore, Network, EXAMPLE_CLUSTER,
};
use std::path::Path;

const HEAD: &str = r#"
[cluster]
name = "home"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
datastore = "DATASTORE"
ssh_authorized_keys = ["ssh-ed25519 AAAA me@laptop"]
"#;

fn node(h: &str, role: &str, board: &str, extra: &str) -> String {
    format!("\n[[nodes]]\nhostname = \"{h}\"\nrole = \"{role}\"\nboard = \"{board}\"\n{extra}\n")
}

fn text(ds: &str, nodes: &[String]) -> String {
    format!("{}{}", HEAD.replace("DATASTORE", ds), nodes.concat())
}

fn err(t: &str) -> String {
    match parse_cluster(t, Some(Path::new("/x/cluster.toml"))) {
        Ok(_) => panic!("expected an error for:\n{t}"),
        Err(e) => format!("{e:#}"),
    }
}

fn ok(t: &str) -> nodeforge::config::Cluster {
    parse_cluster(t, Some(Path::new("/x/cluster.toml"))).unwrap_or_else(|e| panic!("{e:#}"))
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{p:?} not in:\n{msg}");
    }
}

#[test]
fn embedded_example_loads() {
    let c = load_cluster(None).unwrap();
    assert_eq!(c.nodes.len(), 1);
    let n = c.node("cp1").unwrap();
    assert_eq!(n.board, Board::Rpi4);
    assert_eq!(n.board.arch().as_str(), "arm64");
    assert!(n.is_server());
    assert_eq!(c.base(Board::Rpi4).unwrap().base, "raspios-lite-arm64");
    assert_eq!(c.datastore, Datastore::Sqlite);
    assert!(!c.airgap);
    assert_eq!(
        c.k3s_mirror,
        "https://github.com/k3s-io/k3s/releases/download"
    );
    assert!(EXAMPLE_CLUSTER.contains("# "), "the example is commented");
    assert!(c.node("nope").unwrap_err().to_string().contains("cp1"));
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let t = text(
        "sqlite",
        &[node("cp1", "server", "rpi4", "colour = \"red\"")],
    );
    let line = t.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    let e = err(&t);
    assert_has(&e, &["/x/cluster.toml", "colour", &format!("line {line}")]);
    let e = err(&format!(
        "{}\n[k3s]\nmirorr = \"x\"\n",
        text("sqlite", &[node("cp1", "server", "rpi4", "")])
    ));
    assert_has(&e, &["mirorr"]);
}

#[test]
fn unknown_addon() {
    let t = format!(
        "{}\n[addons.traefik2]\n",
        text("sqlite", &[node("cp1", "server", "rpi4", "")])
    );
    assert_has(&err(&t), &["traefik2", "line"]);
}

#[test]
fn unknown_role_and_board() {
    let e = err(&text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node("w9", "wizard", "rpi4", ""),
        ],
    ));
    assert_has(
        &e,
        &["node w9", "unknown role \"wizard\"", "arm-worker-storage"],
    );
    let e = err(&text("sqlite", &[node("cp1", "server", "rpi5", "")]));
    assert_has(&e, &["node cp1", "unknown board \"rpi5\""]);
}

#[test]
fn duplicate_hostnames() {
    let t = text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node("cp1", "agent", "rpi4", ""),
        ],
    );
    let line = t.lines().position(|l| l == "hostname = \"cp1\"").unwrap() + 1;
    let e = err(&t);
    assert_has(
        &e,
        &[&format!("node cp1 (line {line})"), "duplicate hostname"],
    );
}

#[test]
fn duplicate_addresses() {
    let a = "address = \"10.0.0.10/24\"\ngateway = \"10.0.0.1\"";
    let e = err(&text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", a),
            node("w1", "agent", "rpi4", a),
        ],
    ));
    assert_has(&e, &["node w1", "duplicate address 10.0.0.10", "cp1"]);
}

#[test]
fn even_etcd_servers() {
    let e = err(&text(
        "etcd",
        &[
            node("cp1", "server", "rpi4", ""),
            node("cp2", "server", "rpi4", ""),
        ],
    ));
    assert_has(&e, &["node cp1, cp2", "odd number"]);
    ok(&text(
        "etcd",
        &[
            node("cp1", "server", "rpi4", ""),
            node("cp2", "server", "rpi4", ""),
            node("cp3", "server", "rpi4", ""),
        ],
    ));
}

#[test]
fn usb_booting_pi_with_a_data_disk_warns() {
    let c = ok(&text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node(
                "st1",
                "arm-worker-storage",
                "rpi4",
                "data_disk = \"/dev/sda\"",
            ),
        ],
    ));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("node st1") && w.contains("data_disk") && w.contains("PARTUUID")),
        "{:?}",
        c.warnings
    );
    assert!(!c.warnings.iter().any(|w| w.contains("node cp1")));
}

#[test]
fn postgres_single_server_warns() {
    let c = ok(&text(
        "postgres://k3s@db.lan:5432/k3s",
        &[node("cp1", "server", "rpi4", "")],
    ));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("node cp1") && w.contains("single server")),
        "{:?}",
        c.warnings
    );
    let c = ok(&text(
        "postgres://k3s@db.lan:5432/k3s",
        &[
            node("cp1", "server", "rpi4", ""),
            node("cp2", "server", "rpi4", ""),
        ],
    ));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // a password in the URL is refused
    let e = err(&text(
        "postgres://k3s:hunter2@db.lan:5432/k3s",
        &[node("cp1", "server", "rpi4", "")],
    ));
    assert_has(&e, &["datastore_password"]);
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn sqlite_multi_server() {
    let e = err(&text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node("cp2", "server", "rpi4", ""),
        ],
    ));
    assert_has(&e, &["node cp1, cp2", "sqlite"]);
}

#[test]
fn agents_without_server() {
    let e = err(&text(
        "sqlite",
        &[
            node("w1", "agent", "rpi4", ""),
            node("w2", "arm-worker-storage", "rpi4", ""),
        ],
    ));
    assert_has(&e, &["node w1, w2", "no node with role `server`"]);
}

#[test]
fn gpu_worker_on_rpi4() {
    let e = err(&text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node("g1", "gpu-worker", "rpi4", ""),
        ],
    ));
    assert_has(&e, &["node g1", "gpu-worker", "x86_64 only", "rpi4"]);
    ok(&text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node("g1", "gpu-worker", "x86_64", ""),
        ],
    ));
}

#[test]
fn rfc1123_hostnames() {
    for bad in ["CP1", "cp_1", "-cp", "cp-", "a.b", &"a".repeat(64)] {
        let e = err(&text("sqlite", &[node(bad, "server", "rpi4", "")]));
        assert_has(&e, &[&format!("node {bad}"), "RFC 1123"]);
    }
    ok(&text("sqlite", &[node("cp-1", "server", "rpi4", "")]));
}

#[test]
fn address_outside_gateway_subnet() {
    let e = err(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "rpi4",
            "address = \"10.0.1.10/24\"\ngateway = \"10.0.0.1\"",
        )],
    ));
    assert_has(&e, &["node cp1", "outside", "10.0.0.1"]);
    ok(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "rpi4",
            "address = \"10.0.1.10/16\"\ngateway = \"10.0.0.1\"",
        )],
    ));
}

#[test]
fn static_x86_needs_interface() {
    let a = "address = \"10.0.0.10/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]";
    let e = err(&text("sqlite", &[node("cp1", "server", "x86_64", a)]));
    assert_has(&e, &["node cp1", "interface"]);
    let c = ok(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "x86_64",
            &format!("{a}\ninterface = \"enp1s0\""),
        )],
    ));
    assert_eq!(c.nodes[0].interface_name(), "enp1s0");
    let c = ok(&text("sqlite", &[node("cp1", "server", "rpi4", a)]));
    assert_eq!(c.nodes[0].interface_name(), "eth0");
    assert!(matches!(
        c.nodes[0].network,
        Network::Static { prefix: 24, .. }
    ));
}

#[test]
fn node_level_checks() {
    let e = err(&text(
        "sqlite",
        &[node("cp1", "server", "rpi4", "data_disk = \"/dev/sdb\"")],
    ));
    assert_has(&e, &["node cp1", "data_disk"]);
    let e = err(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "x86_64",
            "usb_quirks = [\"152d:0578\"]",
        )],
    ));
    assert_has(&e, &["node cp1", "usb_quirks"]);
    let e = err(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "rpi4",
            "usb_quirks = [\"152d-0578\"]",
        )],
    ));
    assert_has(&e, &["node cp1", "152d-0578"]);
    let e = err(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "rpi4",
            "labels = [\"node-role.kubernetes.io/x=y\"]",
        )],
    ));
    assert_has(&e, &["node cp1", "kubernetes.io"]);
    let e = err(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "rpi4",
            "taints = [\"a=b:Sometimes\"]",
        )],
    ));
    assert_has(&e, &["node cp1", "effect"]);
    let e = err(&text(
        "sqlite",
        &[node("cp1", "server", "rpi4", "[nodes.k3s]\ntoken = \"x\"")],
    ));
    assert_has(&e, &["node cp1", "token"]);
    let e = err(&text(
        "sqlite",
        &[node("cp1", "server", "rpi4", "address = \"10.0.0.300/24\"")],
    ));
    assert_has(&e, &["node cp1", "10.0.0.300"]);
}

#[test]
fn relative_paths_resolve_against_cluster_dir() {
    assert_eq!(
        resolve_ref("raspios-lite-arm64", Path::new("/c")),
        "raspios-lite-arm64"
    );
    assert_eq!(
        resolve_ref("https://x/y.img.xz", Path::new("/c")),
        "https://x/y.img.xz"
    );
    assert_eq!(
        resolve_ref("file://bases/a.img", Path::new("/c")),
        "file:///c/bases/a.img"
    );
    assert_eq!(
        resolve_ref("bases/a.img", Path::new("/c")),
        "file:///c/bases/a.img"
    );
    assert_eq!(
        resolve_ref("a.img.xz", Path::new("/c")),
        "file:///c/a.img.xz"
    );
    assert_eq!(
        resolve_ref("/abs/a.img", Path::new("/c")),
        "file:///abs/a.img"
    );
    assert_eq!(
        resolve_ref("file:///abs/a.img", Path::new("/c")),
        "file:///abs/a.img"
    );
    let t = format!(
        "{}\n[boards.rpi4]\nbase = \"img/pi.img\"\nsha256 = \"00\"\nfamily = \"debian-raspi\"\n[k3s]\nmirror = \"file://mirror\"\nairgap = true\n",
        text("sqlite", &[node("cp1", "server", "rpi4", "")])
    );
    let c = ok(&t);
    let b = c.base(Board::Rpi4).unwrap();
    assert_eq!(b.base, "file:///x/img/pi.img");
    assert_eq!(b.family, Some(nodeforge::base::Family::DebianRaspi));
    assert_eq!(c.k3s_mirror, "file:///x/mirror");
    assert!(c.airgap);
    // an https base needs a sha256
    let t = format!(
        "{}\n[boards.rpi4]\nbase = \"https://example.org/pi.img.xz\"\n",
        text("sqlite", &[node("cp1", "server", "rpi4", "")])
    );
    assert_has(&err(&t), &["sha256"]);
}

#[test]
fn user_profiles_beside_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    std::fs::write(
        dir.path().join("profiles/edge.toml"),
        "description = \"edge\"\nk3s_role = \"agent\"\nboards = [\"rpi4\"]\npackages = [\"htop\"]\n[k3s]\nkubelet-arg = [\"max-pods=50\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles/broken.toml"),
        "k3s_role = \"agent\"\nwat = 1\n",
    )
    .unwrap();
    let t = text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node("e1", "edge", "rpi4", ""),
        ],
    );
    let f = dir.path().join("cluster.toml");
    std::fs::write(&f, &t).unwrap();
    // the broken profile is reported with its file name and key
    let e = format!("{:#}", load_cluster(Some(&f)).unwrap_err());
    assert_has(&e, &["broken.toml", "wat"]);
    std::fs::remove_file(dir.path().join("profiles/broken.toml")).unwrap();
    let c = load_cluster(Some(&f)).unwrap();
    let n = c.node("e1").unwrap();
    assert_eq!(n.profile.packages, ["htop"]);
    assert!(!n.is_server());
    // a node-level `profile` override
    let t = text(
        "sqlite",
        &[
            node("cp1", "server", "rpi4", ""),
            node("w1", "agent", "rpi4", "profile = \"edge\""),
        ],
    );
    std::fs::write(&f, &t).unwrap();
    let c = load_cluster(Some(&f)).unwrap();
    assert_eq!(c.node("w1").unwrap().profile.name, "edge");
    assert_eq!(c.node("w1").unwrap().role, "agent");
}

#[test]
fn missing_cluster_file_is_named() {
    let e = format!(
        "{:#}",
        load_cluster(Some(Path::new("/nonexistent/c.toml"))).unwrap_err()
    );
    assert_has(&e, &["/nonexistent/c.toml"]);
}

#[test]
fn examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("toml") {
            let c = load_cluster(Some(&p)).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!c.nodes.is_empty());
            n += 1;
        }
    }
    assert!(n >= 2);
    let c = load_cluster(Some(&dir.join("ha-cluster.toml"))).unwrap();
    assert_eq!(c.servers().count(), 3);
    // Its Pi storage nodes get the USB-boot advice, and nothing else.
    assert!(
        c.warnings
            .iter()
            .all(|w| w.contains("boots from USB and has a data_disk")),
        "{:?}",
        c.warnings
    );
    ok(&text(
        "sqlite",
        &[node(
            "cp1",
            "server",
            "rpi4",
            "labels = [\"topology.kubernetes.io/zone=a\", \"node.kubernetes.io/x=y\"]",
        )],
    ));
}

#[test]
fn registration_address_and_user_manifests() {
    let a = "address = \"10.0.0.11/24\"\ngateway = \"10.0.0.1\"";
    let c = ok(&text("sqlite", &[node("cp1", "server", "rpi4", a)]));
    assert!(
        c.warnings.iter().any(|w| w.contains("no server's address")),
        "{:?}",
        c.warnings
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("overlays/manifests")).unwrap();
    std::fs::write(
        dir.path().join("overlays/manifests/my-app.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    )
    .unwrap();
    let f = dir.path().join("cluster.toml");
    std::fs::write(&f, text("sqlite", &[node("cp1", "server", "rpi4", "")])).unwrap();
    let c = load_cluster(Some(&f)).unwrap();
    assert_eq!(c.user_manifests.len(), 1);
    let seed = nodeforge::seed::server_manifests(&c).unwrap();
    assert!(seed.iter().any(|(n, _)| n == "my-app.yaml"));
    std::fs::write(dir.path().join("overlays/manifests/My_App.yaml"), "x: 1\n").unwrap();
    let e = format!("{:#}", load_cluster(Some(&f)).unwrap_err());
    assert!(e.contains("My_App.yaml") && e.contains("RFC 1123"), "{e}");
}
