//! The CRD objects nodeforge renders — every `HelmChart` (helm.cattle.io/v1) and Argo CD's root
//! `Application` (argoproj.io/v1alpha1) — against the `openAPIV3Schema` of their upstream CRDs
//! (vendored in tests/schemas/, see its README for source, version and license), validated by
//! `check-jsonschema`. The CRD schema is turned into JSON Schema here (`to_json_schema`); the
//! validator is not ours.

use nodeforge::addons;
use nodeforge::config::{parse_cluster, Cluster};
use nodeforge::secrets::Secrets;
use nodeforge::seed;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const CLUSTER: &str = r#"
[cluster]
name = "home"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.9:6443"
datastore = "etcd"

[addons.metallb]
addresses = ["10.0.0.200-10.0.0.220"]
[addons.longhorn]
[addons.nvidia-device-plugin]
[addons.sealed-secrets]
[addons.kube-vip]
address = "10.0.0.9"
[addons.argocd]
repo = "https://github.com/me/homelab"
path = "clusters/home"
revision = "main"
[addons.zot]
storage = "longhorn"

[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
"#;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas")
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

/// Run check-jsonschema on `files` against `schema`; (passed, output).
fn check_jsonschema(schema: &Path, files: &[PathBuf]) -> (bool, String) {
    let cj = pip_tool("check-jsonschema");
    let out = Command::new(&cj)
        .arg("--schemafile")
        .arg(schema)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {cj} ({e}): install it with tests/setup-host.sh (pip install check-jsonschema)")
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

/// A CRD `openAPIV3Schema` node as JSON Schema: `x-kubernetes-*` keys dropped, `nullable: true`
/// as `null` added to the type, `x-kubernetes-int-or-string` as integer-or-string, and objects
/// that list `properties` (and neither keep unknown fields nor declare `additionalProperties`)
/// refuse unknown fields, as `kubectl apply --validate=strict` does.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                if k.starts_with("x-kubernetes-") || k == "nullable" {
                    continue;
                }
                let conv = match k.as_str() {
                    // Maps of field name → schema: keep every name, convert each schema.
                    "properties" | "patternProperties" => Value::Object(
                        x.as_object()
                            .map(|p| {
                                p.iter()
                                    .map(|(n, s)| (n.clone(), to_json_schema(s)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    // Literal values, not schemas.
                    "default" | "enum" | "example" | "required" => x.clone(),
                    _ => to_json_schema(x),
                };
                out.insert(k.clone(), conv);
            }
            let flag = |k: &str| m.get(k) == Some(&Value::Bool(true));
            if flag("x-kubernetes-int-or-string") && !out.contains_key("type") {
                out.insert(
                    "anyOf".into(),
                    json!([{ "type": "integer" }, { "type": "string" }]),
                );
            }
            if flag("nullable") {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                }
            }
            if out.contains_key("properties")
                && !out.contains_key("additionalProperties")
                && !flag("x-kubernetes-preserve-unknown-fields")
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

/// The JSON Schema for version `version` of the CRD in tests/schemas/`file`, with `apiVersion`
/// and `kind` fixed to that group/version and kind. Written to `dir`; returns its path.
fn crd_schema(file: &str, version: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(schemas_dir().join(file)).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(crd["kind"], "CustomResourceDefinition", "{file}");
    let group = crd["spec"]["group"].as_str().unwrap();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
    let ver = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file}: no version {version}"));
    let mut s = to_json_schema(&ver["schema"]["openAPIV3Schema"]);
    s["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    s["properties"]["apiVersion"]["enum"] = json!([format!("{group}/{version}")]);
    s["properties"]["kind"]["enum"] = json!([kind]);
    let req = s["required"].as_array().cloned().unwrap_or_default();
    let mut req: Vec<Value> = req;
    for k in ["apiVersion", "kind", "metadata", "spec"] {
        if !req.contains(&json!(k)) {
            req.push(json!(k));
        }
    }
    s["required"] = Value::Array(req);
    let out = dir.join(format!("{kind}.schema.json"));
    std::fs::write(&out, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    out
}

/// Split a rendered manifest into its YAML documents (text, parsed).
fn documents(text: &str) -> Vec<(String, Value)> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().unwrap();
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.into_iter()
        .filter_map(|d| {
            let v: Value = serde_saphyr::from_str(&d).ok()?;
            v.is_object().then_some((d, v))
        })
        .collect()
}

fn cluster() -> Cluster {
    parse_cluster(CLUSTER, None).unwrap()
}

fn secrets() -> Secrets {
    let mut s = Secrets {
        token: "FAKE-TOKEN".into(),
        ..Default::default()
    };
    s.node_passwords.insert("cp1".into(), "FAKE-PW".into());
    s.sealing_key = Some(addons::sealed_secrets::SealingKey::generate().unwrap());
    s
}

/// Every document of every server manifest (the secret ones included), as (file, text, value).
fn rendered_objects() -> Vec<(String, String, Value)> {
    let c = cluster();
    let s = secrets();
    let mut files: Vec<(String, String)> = seed::server_manifests(&c)
        .unwrap()
        .into_iter()
        .map(|(n, b)| (n, String::from_utf8(b).unwrap()))
        .collect();
    files.extend(addons::secret_manifests(&c, &s).unwrap());
    let mut out = Vec::new();
    for (name, text) in files {
        for (d, v) in documents(&text) {
            out.push((name.clone(), d, v));
        }
    }
    out
}

fn write_kind(objs: &[(String, String, Value)], kind: &str, dir: &Path) -> Vec<PathBuf> {
    objs.iter()
        .filter(|(_, _, v)| v["kind"] == kind)
        .enumerate()
        .map(|(i, (name, d, _))| {
            let p = dir.join(format!("{i}-{name}"));
            std::fs::write(&p, d).unwrap();
            p
        })
        .collect()
}

/// Every HelmChart passes the helm-controller CRD schema; misspelled fields and wrong types fail.
#[test]
fn helm_charts_pass_the_helmchart_crd_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = crd_schema("helm.cattle.io_helmcharts.yaml", "v1", dir.path());
    let objs = rendered_objects();
    let files = write_kind(&objs, "HelmChart", dir.path());
    let names: Vec<String> = objs
        .iter()
        .filter(|(_, _, v)| v["kind"] == "HelmChart")
        .map(|(_, _, v)| v["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "metallb",
        "longhorn",
        "nvidia-device-plugin",
        "sealed-secrets",
        "argo-cd",
        "zot",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "no HelmChart {want}: {names:?}"
        );
    }
    let (ok, out) = check_jsonschema(&schema, &files);
    assert!(ok, "{out}");
    assert!(out.contains("ok -- validation done"), "{out}");

    // The check can fail: a misspelled field, a number where the CRD wants a string, values
    // given as a mapping instead of YAML text.
    let good = std::fs::read_to_string(&files[0]).unwrap();
    let bad: Vec<(&str, String)> = vec![
        (
            "misspelled",
            good.replace("targetNamespace:", "targetNamepsace:"),
        ),
        (
            "number",
            good.lines()
                .map(|l| if l.starts_with("  version: ") { "  version: 1.5" } else { l })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "mapping",
            "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: x, namespace: kube-system}\nspec:\n  chart: x\n  valuesContent:\n    a: 1\n".into(),
        ),
        (
            "kind",
            good.replace("kind: HelmChart", "kind: HelmCharts"),
        ),
    ];
    for (what, text) in bad {
        assert_ne!(text, good, "{what}: the mutation did not apply");
        let f = dir.path().join(format!("bad-{what}.yaml"));
        std::fs::write(&f, &text).unwrap();
        let (ok, out) = check_jsonschema(&schema, &[f]);
        assert!(!ok, "{what} passed:\n{text}\n{out}");
        assert!(out.contains("Schema validation errors"), "{what}: {out}");
    }
}

/// The root Application passes Argo CD's CRD schema; misspelled fields and wrong types fail.
#[test]
fn root_application_passes_the_application_crd_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = crd_schema("application-crd.yaml", "v1alpha1", dir.path());
    let objs = rendered_objects();
    let files = write_kind(&objs, "Application", dir.path());
    assert_eq!(files.len(), 1, "one root Application");
    let (ok, out) = check_jsonschema(&schema, &files);
    assert!(ok, "{out}");
    assert!(out.contains("ok -- validation done"), "{out}");

    let good = std::fs::read_to_string(&files[0]).unwrap();
    let bad = [
        (
            "misspelled",
            good.replace("targetRevision:", "targetRevison:"),
        ),
        (
            "bool as text",
            good.replace("prune: true", "prune: \"yes\""),
        ),
        ("no destination", {
            let mut t = String::new();
            let mut skip = false;
            for l in good.lines() {
                if l == "  destination:" {
                    skip = true;
                    continue;
                }
                if skip && l.starts_with("    ") {
                    continue;
                }
                skip = false;
                t.push_str(l);
                t.push('\n');
            }
            t
        }),
    ];
    for (what, text) in bad {
        assert_ne!(text, good, "{what}: the mutation did not apply");
        let f = dir
            .path()
            .join(format!("bad-{}.yaml", what.replace(' ', "-")));
        std::fs::write(&f, &text).unwrap();
        let (ok, out) = check_jsonschema(&schema, &[f]);
        assert!(!ok, "{what} passed:\n{text}\n{out}");
        assert!(out.contains("Schema validation errors"), "{what}: {out}");
    }
}

/// The converter: nullable, int-or-string, unknown fields.
#[test]
fn converter_maps_the_openapi_extensions() {
    let s = to_json_schema(&json!({
        "type": "object",
        "properties": {
            "a": { "type": "string", "nullable": true },
            "b": { "x-kubernetes-int-or-string": true },
            "c": { "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                   "properties": { "d": { "type": "string" } } },
        },
    }));
    assert_eq!(s["properties"]["a"]["type"], json!(["string", "null"]));
    assert_eq!(
        s["properties"]["b"]["anyOf"],
        json!([{ "type": "integer" }, { "type": "string" }])
    );
    assert_eq!(s["additionalProperties"], json!(false));
    assert!(s["properties"]["c"].get("additionalProperties").is_none());
    assert!(s["properties"]["b"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.starts_with("x-")));
}

/// The vendored CRDs are the upstream bytes the README names: `sha256sum -c` on the README's
/// sha256 lines.
#[test]
fn vendored_crds_match_their_readme_sha256() {
    let dir = schemas_dir();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let lines: String = readme
        .lines()
        .filter(|l| {
            l.len() > 66
                && l.as_bytes()[64] == b' '
                && l[..64].chars().all(|c| c.is_ascii_hexdigit())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(lines.lines().count(), 2, "{readme}");
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), &lines).unwrap();
    let out = Command::new("sha256sum")
        .arg("-c")
        .arg(list.path())
        .current_dir(&dir)
        .output()
        .expect("sha256sum (coreutils)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
