//! Every cluster-file value against its consumer's rule: one table per rule, each bad row must be
//! refused with the rule's name, the value and its line; good rows load. Also `check --json` and a
//! BOM + CRLF file.

use nodeforge::config::parse_cluster;
use std::path::Path;

const FILE: &str = "/x/cluster.toml";

/// A cluster with `cluster_extra` under [cluster] and one rpi4 server with `node_extra`.
fn text(cluster_extra: &str, node_extra: &str) -> String {
    format!(
        r#"[cluster]
name = "home"
k3s_version = "v1.33.5+k3s1"
ssh_authorized_keys = ["ssh-ed25519 AAAA me@laptop"]
{cluster_extra}

[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
{node_extra}
"#
    )
}

const SERVER: &str = "server = \"https://10.0.0.10:6443\"";

/// Load `t`; return the error text, or `None` when it loads.
fn load(t: &str) -> Result<nodeforge::config::Cluster, String> {
    parse_cluster(t, Some(Path::new(FILE))).map_err(|e| format!("{e:#}"))
}

/// The line (1-based) of the first line of `t` containing `needle`.
fn line_of(t: &str, needle: &str) -> usize {
    t.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{t}"))
        + 1
}

/// Each `bad` value (set by `set(value)` as one TOML line) is refused naming `rule`, the value and
/// the line; each `good` value loads.
fn table(rule: &str, good: &[&str], bad: &[&str], make: impl Fn(&str) -> String, line_key: &str) {
    for v in good {
        let t = make(v);
        if let Err(e) = load(&t) {
            panic!("rule {rule}: {v:?} should load:\n{e}");
        }
    }
    for v in bad {
        let t = make(v);
        let e = match load(&t) {
            Ok(_) => panic!("rule {rule}: {v:?} should be refused:\n{t}"),
            Err(e) => e,
        };
        let shown = format!("{v:?}");
        let line = line_of(&t, line_key);
        for part in [FILE, &format!("rule {rule}"), &format!("line {line}")] {
            assert!(e.contains(part), "rule {rule}: {v:?}: {part:?} not in\n{e}");
        }
        assert!(
            e.contains(&shown) || e.contains(v),
            "rule {rule}: the value {v:?} is not named in\n{e}"
        );
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

#[test]
fn admin_user() {
    table(
        "user-name",
        &["k3s-admin", "alice", "a", "ops_1", &"a".repeat(31)],
        &[
            "root",
            "k3s admin",
            "-admin",
            "Admin",
            &"a".repeat(38),
            &"a".repeat(32),
            "",
            "1admin",
            "admin$",
            "daemon",
            "www-data",
            "ad:min",
            "adm\u{e9}n",
        ],
        |v| text(&format!("{SERVER}\nadmin_user = \"{}\"", esc(v)), ""),
        "admin_user",
    );
}

#[test]
fn server_url() {
    table(
        "server-url",
        &[
            "https://10.0.0.10:6443",
            "https://cp1.lan:6443",
            "https://[fd00::10]:6443",
            "https://K3S.Home.Lan:443",
        ],
        &[
            "https://10.0.0.10",
            "https://fd00::10:6443",
            "http://10.0.0.10:6443",
            "https://10.0.0.10:6443/",
            "https://10.0.0.10:6443/api",
            "https://10.0.0.10:0",
            "https://10.0.0.10:65536",
            "https://10.0.0.10:64x3",
            "https://10.0.0.10:06443",
            "https://:6443",
            "https://user@10.0.0.10:6443",
            "https://[fd00::zz]:6443",
            "https://bad_host:6443",
            "https://300.1.1.1:6443",
            "10.0.0.10:6443",
            "https://10.0.0.10:6443?x=1",
        ],
        |v| text(&format!("server = \"{}\"", esc(v)), ""),
        "server =",
    );
}

#[test]
fn domain() {
    table(
        "rfc1123-domain",
        &["lan", "home.lan", "Home.Example.org", "a-b.c1"],
        &[
            "home..lan",
            "-home.lan",
            "home_lan",
            ".lan",
            "lan.",
            "h\u{f6}me.lan",
            &format!("{}.lan", "a".repeat(64)),
        ],
        |v| text(&format!("{SERVER}\ndomain = \"{}\"", esc(v)), ""),
        "domain =",
    );
}

#[test]
fn hostname() {
    for v in ["CP1", "cp_1", "-cp1", "cp1.lan", &"c".repeat(64)] {
        let t = text(SERVER, "").replace("hostname = \"cp1\"", &format!("hostname = \"{v}\""));
        let e = load(&t).expect_err(v);
        assert!(e.contains("rule rfc1123-hostname"), "{v}: {e}");
        assert!(
            e.contains(&format!("line {}", line_of(&t, "hostname"))),
            "{e}"
        );
    }
}

#[test]
fn tls_san() {
    table(
        "tls-san",
        &["vip.lan", "10.0.0.100", "fd00::100", "*.k3s.lan", "K3S.lan"],
        &[
            "https://vip.lan",
            "vip.lan:6443",
            "[fd00::1]",
            "vip lan",
            "10.0.0.300",
            "",
            "a..b",
        ],
        |v| text(&format!("{SERVER}\ntls_san = [\"{}\"]", esc(v)), ""),
        "tls_san",
    );
}

#[test]
fn labels() {
    table(
        "k8s-",
        &[
            "zone=attic",
            "team=",
            "example.com/role=db",
            "node.kubernetes.io/pool=a",
            "topology.kubernetes.io/zone=attic",
            "notk8s.io/x=y",
            "notkubernetes.io/x=y",
            "Zone.Name_1=A-b.c",
        ],
        &[
            "zone=attic room",
            "my label=x",
            &format!("team={}", "x".repeat(70)),
            "zone",
            "=x",
            "a/b/c=x",
            "Example.com/x=y",
            "x=-bad",
            "k8s.io/x=y",
            "foo.k8s.io/x=y",
            "node-role.kubernetes.io/worker=true",
            "kubernetes.io/role=x",
            &format!("{}=x", "k".repeat(64)),
        ],
        |v| text(SERVER, &format!("labels = [\"{}\"]", esc(v))),
        "labels",
    );
    // the exact rule names
    let e = load(&text(SERVER, "labels = [\"zone=attic room\"]")).unwrap_err();
    assert!(e.contains("rule k8s-label-value"), "{e}");
    let e = load(&text(SERVER, "labels = [\"my label=x\"]")).unwrap_err();
    assert!(e.contains("rule k8s-qualified-name"), "{e}");
    let e = load(&text(SERVER, "labels = [\"k8s.io/x=y\"]")).unwrap_err();
    assert!(e.contains("rule k8s-node-label"), "{e}");
}

#[test]
fn taints() {
    table(
        "k8s-",
        &[
            "dedicated=db:NoSchedule",
            "gpu:NoExecute",
            "example.com/x=y:PreferNoSchedule",
        ],
        &[
            "dedicated=db team:NoSchedule",
            "dedicated=db",
            "dedicated=db:NoRun",
            "dedicated=db:noschedule",
            ":NoSchedule",
            "=x:NoSchedule",
        ],
        |v| text(SERVER, &format!("taints = [\"{}\"]", esc(v))),
        "taints",
    );
    let e = load(&text(SERVER, "taints = [\"dedicated=db:NoRun\"]")).unwrap_err();
    assert!(e.contains("rule k8s-node-taint"), "{e}");
}

#[test]
fn timezone() {
    table(
        "iana-timezone",
        &[
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "America/Port-au-Prince",
        ],
        &[
            "Europe/Berlin ",
            "/usr/share/zoneinfo/UTC",
            "Europe/../etc",
            "",
            "Europe//Berlin",
            "+0100",
            "America/ThisNameIsTooLong",
        ],
        |v| text(&format!("{SERVER}\ntimezone = \"{}\"", esc(v)), ""),
        "timezone",
    );
}

#[test]
fn static_network() {
    let node = |extra: &str| text(SERVER, &format!("address = \"10.0.0.10/24\"\n{extra}"));
    for (extra, rule, key) in [
        (
            "gateway = \"10.0.1.1\"\ndns = [\"10.0.0.1\"]",
            "gateway-in-prefix",
            "gateway",
        ),
        (
            "gateway = \"10.0.0.10\"\ndns = [\"10.0.0.1\"]",
            "gateway-in-prefix",
            "gateway",
        ),
        (
            "gateway = \"fd00::1\"\ndns = [\"10.0.0.1\"]",
            "gateway-in-prefix",
            "gateway",
        ),
        (
            "gateway = \"10.0.0.1\"\ndns = [\"dns.lan\"]",
            "static-dns",
            "dns",
        ),
        (
            "gateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\ninterface = \"eth/0\"",
            "interface-name",
            "interface",
        ),
        (
            "gateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\ninterface = \"averyveryverylongnic\"",
            "interface-name",
            "interface",
        ),
        (
            "gateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\ninterface = \"en p1\"",
            "interface-name",
            "interface",
        ),
        (
            "gateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\ninterface = \"123\"",
            "interface-name",
            "interface",
        ),
        (
            "gateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\ninterface = \"en*\"",
            "interface-name",
            "interface",
        ),
    ] {
        let t = node(extra);
        let e = load(&t).expect_err(extra);
        assert!(e.contains(&format!("rule {rule}")), "{extra}: {e}");
        assert!(
            e.contains(&format!("line {}", line_of(&t, &format!("{key} =")))),
            "{extra}: {e}"
        );
    }
    for addr in [
        "10.0.0.10",
        "10.0.0.10/33",
        "10.0.0.10/0",
        "fd00::10/64",
        "10.0.0/24",
        "10.0.0.10/024",
        "10.0.0.10/+24",
        "224.0.0.1/24",
    ] {
        let t = text(
            SERVER,
            &format!("address = \"{addr}\"\ndns = [\"10.0.0.1\"]"),
        );
        let e = load(&t).expect_err(addr);
        assert!(e.contains("rule static-address"), "{addr}: {e}");
        assert!(
            e.contains(&format!("line {}", line_of(&t, "address ="))),
            "{e}"
        );
    }
    // x86 without dns: error; Pi without dns: warning
    let x86 = |dns: &str| {
        text(
            SERVER,
            &format!(
                "address = \"10.0.0.10/24\"\ngateway = \"10.0.0.1\"\ninterface = \"enp1s0\"\n{dns}"
            ),
        )
        .replace("board = \"rpi4\"", "board = \"x86_64\"")
    };
    let e = load(&x86("")).unwrap_err();
    assert!(e.contains("rule static-dns"), "{e}");
    load(&x86("dns = [\"10.0.0.1\"]")).unwrap();
    let c = load(&node("gateway = \"10.0.0.1\"")).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("rule static-dns")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn metallb() {
    let with = |pool: &str| {
        format!(
            "{}\n[addons.metallb]\naddresses = [\"{pool}\"]\n",
            text(
                SERVER,
                "address = \"10.0.0.10/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]"
            )
        )
    };
    for good in [
        "10.0.0.200-10.0.0.220",
        "10.0.0.192/27",
        "fd00::100-fd00::1ff",
        "10.0.1.0/24",
    ] {
        load(&with(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "10.0.0.220-10.0.0.200",
        "10.0.0.5-10.0.0.20",
        "10.0.0.0/24",
        "10.0.0.200",
        "10.0.0.200-fd00::1",
        "10.0.0.0/40",
        "pool",
    ] {
        let t = with(bad);
        let e = load(&t).expect_err(bad);
        assert!(e.contains("rule metallb-range"), "{bad}: {e}");
        assert!(
            e.contains(&format!("line {}", line_of(&t, "addresses ="))),
            "{bad}: {e}"
        );
    }
    let e = load(&with("10.0.0.5-10.0.0.20")).unwrap_err();
    assert!(e.contains("node cp1") || e.contains("cp1"), "{e}");
}

#[test]
fn usb_quirks_and_data_disk() {
    table(
        "usb-storage-quirk",
        &["152d:0578", "152d:0578:u", "0BC2:AB38:uf"],
        &[
            "152d-0578",
            "152d:578:u",
            "152d:0578:",
            "152d:0578:U",
            "152d:0578:q",
            "xyzw:0578",
            "152d:0578:u:1",
            "152d:0578,u",
        ],
        |v| text(SERVER, &format!("usb_quirks = [\"{}\"]", esc(v))),
        "usb_quirks",
    );
    let storage = |disk: &str| {
        text(SERVER, "")
            + &format!(
                "\n[[nodes]]\nhostname = \"st1\"\nrole = \"arm-worker-storage\"\nboard = \"rpi4\"\ndata_disk = \"{}\"\n",
                esc(disk)
            )
    };
    for good in [
        "/dev/disk/by-id/usb-JMicron_data-0:0",
        "/dev/disk/by-uuid/1234-ABCD",
        "/dev/disk/by-path/platform-fd500000.pcie-usb-0:2:1.0-scsi-0:0:0:0",
    ] {
        load(&storage(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "sda",
        "/dev/disk/by-id/",
        "/dev/disk/by-id/../../sda",
        "/mnt/data",
        "/dev/disk/by-id/a b",
        "dev/sda",
    ] {
        let t = storage(bad);
        let e = load(&t).expect_err(bad);
        assert!(e.contains("rule data-disk-path"), "{bad}: {e}");
        assert!(
            e.contains(&format!("line {}", line_of(&t, "data_disk ="))),
            "{bad}: {e}"
        );
    }
    let c = load(&storage("/dev/sdb")).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("rule data-disk-path") && w.contains("/dev/sdb")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn datastore_urls() {
    for good in [
        "postgres://k3s@db.lan:5432/k3s",
        "postgresql://k3s@[fd00::5]:5432/k3s",
        "postgres://k3s@db.lan/k3s",
    ] {
        load(&text(&format!("{SERVER}\ndatastore = \"{good}\""), ""))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "postgres://db.lan:5432/k3s",
        "postgres://k3s:hunter2@db.lan:5432/k3s",
        "postgres://k3s@:5432/k3s",
        "postgres://k3s@db.lan:port/k3s",
        "postgres://k3s@fd00::5:5432/k3s",
    ] {
        let t = text(&format!("{SERVER}\ndatastore = \"{bad}\""), "");
        let e = load(&t).expect_err(bad);
        assert!(e.contains("rule datastore-url"), "{bad}: {e}");
        assert!(
            e.contains(&format!("line {}", line_of(&t, "datastore ="))),
            "{bad}: {e}"
        );
        assert!(!e.contains("hunter2"), "the password leaked: {e}");
    }
    let e = load(&text(
        &format!("{SERVER}\ndatastore = \"mysql://u:hunter2@db/k3s\""),
        "",
    ))
    .unwrap_err();
    assert!(
        !e.contains("hunter2") && e.contains("unknown `datastore`"),
        "{e}"
    );
}

#[test]
fn etcd_server_count() {
    let servers = |n: usize| {
        let mut t = text(&format!("{SERVER}\ndatastore = \"etcd\""), "");
        for i in 2..=n {
            t.push_str(&format!(
                "\n[[nodes]]\nhostname = \"cp{i}\"\nrole = \"server\"\nboard = \"rpi4\"\n"
            ));
        }
        t
    };
    let c = load(&servers(1)).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("rule etcd-quorum") && w.contains("three")),
        "{:?}",
        c.warnings
    );
    for n in [2, 4] {
        let e = load(&servers(n)).unwrap_err();
        assert!(e.contains("rule etcd-quorum"), "{n}: {e}");
    }
    let c = load(&servers(3)).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.contains("etcd-quorum")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn k3s_keys() {
    let server = |kv: &str| text(SERVER, &format!("[nodes.k3s]\n{kv}"));
    for good in [
        "tls-san = \"vip.lan,10.0.0.100\"",
        "tls-san = [\"vip.lan\"]",
        "kubelet-arg = \"max-pods=200\"",
        "kube-apiserver-arg = [\"audit-log-maxage=30\"]",
        "disable = [\"traefik\"]",
        "write-kubeconfig-mode = \"0640\"",
        "etcd-snapshot-retention = 10",
        "secrets-encryption = true",
        "node-label = \"zone=attic,rack=r1\"",
    ] {
        load(&server(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for (bad, key) in [
        ("tls-sans = \"vip.lan\"", "tls-sans"),
        ("--tls-san = \"vip.lan\"", "--tls-san"),
        ("secrets-encryption = \"yes\"", "secrets-encryption"),
        ("kubelet-arg = 5", "kubelet-arg"),
        ("tls-san = \"vip.lan,https://x\"", "tls-san"),
        ("node-label = \"zone=attic room\"", "node-label"),
        ("node-taint = [\"x=y:Never\"]", "node-taint"),
    ] {
        let t = server(bad);
        let e = load(&t).expect_err(bad);
        assert!(e.contains(key), "{bad}: {e}");
        assert!(
            e.contains(&format!("line {}", line_of(&t, bad))),
            "{bad}: {e}"
        );
    }
    // a server-only flag on an agent
    let t = text(SERVER, "") + "\n[[nodes]]\nhostname = \"w1\"\nrole = \"agent\"\nboard = \"rpi4\"\n[nodes.k3s]\ntls-san = \"vip.lan\"\n";
    let e = load(&t).unwrap_err();
    assert!(
        e.contains("rule k3s-flag") && e.contains("`tls-san` is a k3s server flag"),
        "{e}"
    );
    let e = load(&server("token = \"x\"")).unwrap_err();
    assert!(e.contains("set by nodeforge"), "{e}");
}

#[test]
fn bom_and_crlf_are_accepted_with_lines() {
    let t = text(SERVER, "labels = [\"zone=attic\"]");
    let crlf = format!("\u{feff}{}", t.replace('\n', "\r\n"));
    let c = load(&crlf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.nodes[0].labels, ["zone=attic"]);
    let bad = format!(
        "\u{feff}{}",
        text(SERVER, "labels = [\"zone=attic room\"]").replace('\n', "\r\n")
    );
    let e = load(&bad).unwrap_err();
    let line = line_of(&bad, "labels");
    assert!(e.contains(&format!("line {line}")), "{e}");
}

#[test]
fn check_json_lists_errors_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cluster.toml");
    let t = text(
        &format!("{SERVER}\nadmin_user = \"root\"\ntimezone = \"Europe/Paris\""),
        "labels = [\"zone=attic room\"]\ndata_disk = \"/dev/sdb\"",
    )
    .replace("role = \"server\"", "role = \"arm-worker-storage\"")
        + "\n[[nodes]]\nhostname = \"cp9\"\nrole = \"server\"\nboard = \"rpi4\"\n";
    std::fs::write(&p, &t).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .args(["check", "--json", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(j["ok"], false);
    let errors = j["errors"].as_array().unwrap();
    let find = |rule: &str| {
        errors
            .iter()
            .find(|e| e["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} in {j:#}"))
    };
    let u = find("user-name");
    assert_eq!(u["value"], "root");
    assert_eq!(u["key"], "cluster.admin_user");
    assert_eq!(u["line"], line_of(&t, "admin_user") as u64);
    assert_eq!(u["file"], p.display().to_string());
    assert!(u["source"].as_str().unwrap().contains("adduser"));
    let l = find("k8s-label-value");
    assert_eq!(l["node"], "cp1");
    assert_eq!(l["key"], "labels");
    assert_eq!(l["line"], line_of(&t, "labels") as u64);
    let warnings = j["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w["rule"] == "data-disk-path"),
        "{j:#}"
    );
    // a clean file: ok, exit 0, warnings only
    let clean = t
        .replace("admin_user = \"root\"", "admin_user = \"alice\"")
        .replace("zone=attic room", "zone=attic");
    std::fs::write(&p, &clean).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .args(["check", "--json", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{j:#}");
    assert_eq!(j["ok"], true);
    assert!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["rule"] == "iana-timezone"),
        "{j:#}"
    );
    // not TOML: still JSON
    std::fs::write(&p, "[cluster\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .args(["check", "--json", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["errors"][0]["line"], 1);
}
