//! `init`, `check`, `render` through the binary: files, modes, and no secret on the terminal.

use nodeforge::secrets::Secrets;
use std::path::Path;
use std::process::{Command, Output};

fn nodeforge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run nodeforge")
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const CLUSTER: &str = r#"
[cluster]
name = "home"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
datastore = "postgres://k3s@db.lan:5432/k3s"
ssh_authorized_keys = ["ssh-ed25519 AAAA me@laptop"]

[addons.metallb]
addresses = ["10.0.0.200-10.0.0.220"]

[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
address = "10.0.0.10/24"
gateway = "10.0.0.1"

[[nodes]]
hostname = "cp2"
role = "server"
board = "x86_64"

[[nodes]]
hostname = "w1"
role = "agent"
board = "rpi4"
"#;

#[test]
fn init_writes_example_and_private_secrets_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let o = nodeforge(dir.path(), &["init", "."]);
    assert!(o.status.success(), "{}", all_output(&o));
    let c = dir.path().join("cluster.toml");
    let s = dir.path().join("nodeforge-secrets.toml");
    assert_eq!(
        std::fs::read_to_string(&c).unwrap(),
        nodeforge::config::EXAMPLE_CLUSTER
    );
    assert_eq!(mode(&s), 0o600);
    let secrets = Secrets::load(&s).unwrap();
    assert!(secrets.token.len() >= 32);
    assert!(secrets.node_passwords.contains_key("cp1"));
    assert!(!all_output(&o).contains(&secrets.token));

    let before = std::fs::read(&s).unwrap();
    let o = nodeforge(dir.path(), &["init", "."]);
    assert!(!o.status.success());
    assert!(all_output(&o).contains("--force"), "{}", all_output(&o));
    assert_eq!(
        std::fs::read(&s).unwrap(),
        before,
        "secrets must be untouched"
    );

    let o = nodeforge(dir.path(), &["init", ".", "--force"]);
    assert!(o.status.success(), "{}", all_output(&o));
    assert_ne!(std::fs::read(&s).unwrap(), before);
}

#[test]
fn init_update_adds_new_nodes_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.toml"), CLUSTER).unwrap();
    let o = nodeforge(dir.path(), &["init", "--update"]);
    assert!(o.status.success(), "{}", all_output(&o));
    let sp = dir.path().join("nodeforge-secrets.toml");
    let s1 = Secrets::load(&sp).unwrap();
    assert_eq!(s1.node_passwords.len(), 3);
    std::fs::write(
        dir.path().join("cluster.toml"),
        format!("{CLUSTER}\n[[nodes]]\nhostname = \"w2\"\nrole = \"agent\"\nboard = \"rpi4\"\n"),
    )
    .unwrap();
    let o = nodeforge(dir.path(), &["init", "--update"]);
    assert!(o.status.success(), "{}", all_output(&o));
    assert!(all_output(&o).contains("w2"));
    let s2 = Secrets::load(&sp).unwrap();
    assert_eq!(s2.token, s1.token);
    assert_eq!(s2.node_passwords["cp1"], s1.node_passwords["cp1"]);
    assert!(s2.node_passwords.contains_key("w2"));
    assert_eq!(mode(&sp), 0o600);
}

#[test]
fn check_and_render_never_print_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.toml"), CLUSTER).unwrap();
    let o = nodeforge(dir.path(), &["init", "--update"]);
    assert!(o.status.success(), "{}", all_output(&o));
    let sp = dir.path().join("nodeforge-secrets.toml");
    let mut s = Secrets::load(&sp).unwrap();
    s.datastore_password = Some("db-secret-Xy7".into());
    s.save(&sp).unwrap();
    let mut secret_values = vec![s.token.clone(), "db-secret-Xy7".to_string()];
    secret_values.extend(s.node_passwords.values().cloned());
    secret_values.extend(s.agent_token.clone());

    let o = nodeforge(dir.path(), &["check"]);
    let out = all_output(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "cp1", "cp2", "w1", "server", "agent", "rpi4", "x86_64", "metallb", "postgres",
    ] {
        assert!(out.contains(needle), "plan lacks {needle}:\n{out}");
    }
    for v in &secret_values {
        assert!(!out.contains(v.as_str()), "check printed a secret:\n{out}");
    }

    for node in ["cp1", "cp2", "w1"] {
        let o = nodeforge(dir.path(), &["render", node, "-o", &format!("seed-{node}")]);
        let out = all_output(&o);
        assert!(o.status.success(), "{out}");
        for v in &secret_values {
            assert!(!out.contains(v.as_str()), "render printed a secret:\n{out}");
        }
        let sd = dir.path().join(format!("seed-{node}"));
        let ud = std::fs::read_to_string(sd.join("user-data")).unwrap();
        // Servers hold the cluster token; the agent only the (CA-pinning) agent token.
        if node == "w1" {
            assert!(!ud.contains(&s.token), "the agent holds the server token");
            assert!(ud.contains(&s.agent_join_token().unwrap()));
        } else {
            assert!(ud.contains(&s.token), "the seed holds the token");
        }
        for f in ["user-data", "meta-data"] {
            assert_eq!(mode(&sd.join(f)), 0o600, "{f}");
        }
    }
    assert!(dir.path().join("seed-cp1/network-config").exists());
    // DHCP: explicit on a Pi's eth0; an x86_64 node without `interface` uses cloud-init's fallback.
    let w1 = std::fs::read_to_string(dir.path().join("seed-w1/network-config")).unwrap();
    assert!(w1.contains("eth0:\n      dhcp4: true"), "{w1}");
    assert!(!dir.path().join("seed-cp2/network-config").exists());
    let ud = std::fs::read_to_string(dir.path().join("seed-cp1/user-data")).unwrap();
    assert!(
        ud.contains("db-secret-Xy7"),
        "the server's datastore endpoint holds the password"
    );

    // errors name no secret either: a node missing from the secrets file
    std::fs::write(
        dir.path().join("cluster.toml"),
        format!("{CLUSTER}\n[[nodes]]\nhostname = \"w3\"\nrole = \"agent\"\nboard = \"rpi4\"\n"),
    )
    .unwrap();
    let o = nodeforge(dir.path(), &["render", "w3"]);
    let out = all_output(&o);
    assert!(!o.status.success());
    assert!(out.contains("init --update"), "{out}");
    for v in &secret_values {
        assert!(!out.contains(v.as_str()), "{out}");
    }
}

#[test]
fn render_without_secrets_says_init_and_check_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.toml"), CLUSTER).unwrap();
    let o = nodeforge(dir.path(), &["render", "cp1"]);
    assert!(!o.status.success());
    assert!(
        all_output(&o).contains("nodeforge init"),
        "{}",
        all_output(&o)
    );
    // --generic needs no secrets
    let o = nodeforge(dir.path(), &["render", "cp1", "--generic", "-o", "g"]);
    assert!(o.status.success(), "{}", all_output(&o));
    assert!(!std::fs::read_to_string(dir.path().join("g/user-data"))
        .unwrap()
        .contains("hostname"));
    // group-readable secrets are refused
    let o = nodeforge(dir.path(), &["init", "--update"]);
    assert!(o.status.success());
    use std::os::unix::fs::PermissionsExt;
    let sp = dir.path().join("nodeforge-secrets.toml");
    std::fs::set_permissions(&sp, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = nodeforge(dir.path(), &["render", "cp1"]);
    assert!(!o.status.success());
    assert!(all_output(&o).contains("chmod 600"), "{}", all_output(&o));
    // check fails on an invalid cluster, naming the node
    std::fs::write(
        dir.path().join("bad.toml"),
        CLUSTER.replace("hostname = \"w1\"", "hostname = \"W_1\""),
    )
    .unwrap();
    let o = nodeforge(dir.path(), &["check", "-c", "bad.toml"]);
    assert!(!o.status.success());
    assert!(all_output(&o).contains("node W_1"), "{}", all_output(&o));
}
