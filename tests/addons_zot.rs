//! `[addons.zot]`: the HelmChart (snapshot; Helm values read back by PyYAML, a YAML 1.1 loader,
//! keep the node selector a string), refused settings, and what `check` says. The HelmChart
//! schema check is in tests/addons_schema.rs.

mod common;

use common::snapshot;
use nodeforge::addons::zot;
use nodeforge::config::parse_cluster;
use nodeforge::seed;
use std::process::Command;

const CLUSTER: &str = r#"
[cluster]
name = "home"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"

[addons.longhorn]
[addons.zot]
storage = "longhorn"
size = "50Gi"

[registries.mirrors."registry.lan:30500"]
endpoint = ["http://10.0.0.21:30500"]

[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
address = "10.0.0.10/24"
gateway = "10.0.0.1"
[[nodes]]
hostname = "st1"
role = "arm-worker-storage"
board = "rpi4"
address = "10.0.0.21/24"
gateway = "10.0.0.1"
labels = ["nodeforge.io/registry=true"]
"#;

fn zot_manifest(text: &str) -> anyhow::Result<String> {
    let c = parse_cluster(text, None)?;
    let m = seed::server_manifests(&c)?;
    let (_, b) = m
        .into_iter()
        .find(|(n, _)| n == zot::FILE)
        .expect("zot.yaml among the server manifests");
    Ok(String::from_utf8(b)?)
}

#[test]
fn zot_chart_snapshot_and_values_under_yaml_1_1() {
    let text = zot_manifest(CLUSTER).unwrap();
    snapshot("zot.yaml", &text);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("zot.yaml");
    std::fs::write(&f, &text).unwrap();
    // PyYAML (YAML 1.1, like Helm's values loader treats `true`/`yes` as booleans): the node
    // selector value must stay the string "true" (a nodeSelector is map[string]string).
    let script = r#"
import sys, yaml, json
d = yaml.safe_load(open(sys.argv[1]))
v = yaml.safe_load(d["spec"]["valuesContent"])
print(json.dumps({"d": d, "v": v}, sort_keys=True))
"#;
    let out = Command::new("python3")
        .args(["-c", script, f.to_str().unwrap()])
        .output()
        .expect("python3 with PyYAML (tests/setup-host.sh installs python3-yaml)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (d, v) = (&j["d"], &j["v"]);
    assert_eq!(d["spec"]["chart"], "zot");
    assert_eq!(d["spec"]["repo"], "https://zotregistry.dev/helm-charts");
    assert_eq!(d["spec"]["targetNamespace"], "zot");
    assert_eq!(v["nodeSelector"]["nodeforge.io/registry"], "true");
    assert_eq!(v["persistence"], true);
    assert_eq!(v["pvc"]["storageClassName"], "longhorn");
    assert_eq!(v["pvc"]["storage"], "50Gi");
    assert_eq!(v["service"]["type"], "NodePort");
    assert_eq!(v["service"]["nodePort"], 30500);

    let lp = zot_manifest(&CLUSTER.replace("\"longhorn\"", "\"local-path\"")).unwrap();
    assert!(lp.contains("storageClassName: local-path"), "{lp}");
}

#[test]
fn zot_refuses_bad_settings() {
    let no_longhorn = CLUSTER.replace("[addons.longhorn]\n", "");
    let e = format!("{:#}", zot_manifest(&no_longhorn).unwrap_err());
    assert!(e.contains("needs [addons.longhorn]"), "{e}");
    let e = format!(
        "{:#}",
        zot_manifest(&CLUSTER.replace("size = \"50Gi\"", "size = \"50Gi\"\nnode_port = 5000"))
            .unwrap_err()
    );
    assert!(e.contains("30000-32767"), "{e}");
    let e = format!(
        "{:#}",
        zot_manifest(&CLUSTER.replace("size = \"50Gi\"", "size = \"50Gi\"\nnode_label = \"x\""))
            .unwrap_err()
    );
    assert!(e.contains("key=value"), "{e}");
    assert!(parse_cluster(&CLUSTER.replace("\"longhorn\"\n", "\"nfs\"\n"), None).is_err());
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.toml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .current_dir(dir.path())
        .args(["check", "-c", "cluster.toml"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_says_where_zot_runs_and_who_mirrors_it() {
    let (ok, out) = check(CLUSTER);
    assert!(ok, "{out}");
    assert!(
        out.contains("zot: chart zot 0.1.122; on nodes labelled nodeforge.io/registry=true: st1; 50Gi longhorn volume; registry on every node at NodePort 30500 (e.g. http://10.0.0.21:30500)"),
        "{out}"
    );
    assert!(
        out.contains("zot: mirror registry.lan:30500 points at the Zot NodePort"),
        "{out}"
    );
    assert!(
        out.contains("longhorn: chart longhorn 1.9.1; default disks on nodes labelled node.longhorn.io/create-default-disk=true: st1"),
        "{out}"
    );
    let (ok, out) = check(&CLUSTER.replace("labels = [\"nodeforge.io/registry=true\"]\n", ""));
    assert!(ok, "{out}");
    assert!(out.contains("warning: zot: no node carries"), "{out}");
    let (ok, out) = check(&CLUSTER.replace("[addons.longhorn]\n", ""));
    assert!(!ok, "{out}");
    assert!(
        out.contains("ERROR zot:") && out.contains("needs [addons.longhorn]"),
        "{out}"
    );
    // `check --json` carries the add-on error too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.toml"),
        CLUSTER.replace("[addons.longhorn]\n", ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .current_dir(dir.path())
        .args(["check", "--json", "-c", "cluster.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ok"], false, "{j}");
    assert!(
        j["errors"].to_string().contains("needs [addons.longhorn]"),
        "{j}"
    );
}
