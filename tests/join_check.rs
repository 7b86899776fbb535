//! k3s's join bootstrap on the host, with the same two programs the QEMU boot proof runs in its
//! guests (cut out of `tests/k3s-mirror/k3s-standin.sh`): the stand-in server serves `/cacerts`
//! over HTTPS from a server's tls files made by nodeforge, plus two impostors (a server with
//! another CA, and one that copies the genuine `/cacerts` but holds a certificate of another CA);
//! the agent-side check (docs/k3s-trust.md, "Bootstrap by a joining node") must accept the first
//! only, with the hash in nodeforge's agent token, and refuse a token pinned to another root.
//! Needs python3 with `cryptography` and `yaml` (tests/setup-host.sh installs them).

use nodeforge::ca::{ClusterCa, AGENT_USER};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const STANDIN: &str = include_str!("k3s-mirror/k3s-standin.sh");

/// The python program between `<<'MARKER'` and the line `MARKER` in the stand-in.
fn program(marker: &str) -> String {
    let open = format!("<<'{marker}'\n");
    let start = STANDIN
        .find(&open)
        .unwrap_or_else(|| panic!("k3s-standin.sh has no heredoc {marker}"))
        + open.len();
    let len = STANDIN[start..]
        .find(&format!("\n{marker}\n"))
        .unwrap_or_else(|| panic!("k3s-standin.sh: heredoc {marker} is not closed"));
    STANDIN[start..start + len + 1].to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// The stand-in server, killed (by its own pid) when dropped.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, tls: &Path, ports: [u16; 3]) -> Server {
    let prog = dir.join("serve_https.py");
    fs::write(&prog, program("NF_SERVE_HTTPS")).expect("writing serve_https.py");
    let ports = format!("{},{},{}", ports[0], ports[1], ports[2]);
    let mut child = Command::new("python3")
        .arg(&prog)
        .arg(tls)
        .arg(dir.join("work"))
        .arg("127.0.0.1,localhost")
        .arg(dir.join("no-config.yaml"))
        .arg(&ports)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to run the stand-in's HTTPS server");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    BufReader::new(out)
        .read_line(&mut line)
        .expect("reading the server's first line");
    let server = Server(child);
    assert!(
        line.starts_with("https-serving cluster="),
        "the stand-in's HTTPS server did not start (needs python3-cryptography): {line:?}"
    );
    server
}

/// Runs the agent-side check with `token` against the three sites; returns its lines.
fn join_check(dir: &Path, token: &str, ports: [u16; 3]) -> Vec<String> {
    let prog = dir.join("join_check.py");
    fs::write(&prog, program("NF_JOIN_CHECK")).expect("writing join_check.py");
    let cfg = dir.join("config.yaml");
    fs::write(&cfg, format!("token: \"{token}\"\n")).expect("writing config.yaml");
    let o = Command::new("python3")
        .arg(&prog)
        .arg(&cfg)
        .arg("127.0.0.1")
        .arg(format!("cluster={}", ports[0]))
        .arg(format!("other-ca={}", ports[1]))
        .arg(format!("other-cert={}", ports[2]))
        .output()
        .expect("python3 is needed to run the join check");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "join check failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.contains(token), "the join check printed the token");
    out.lines().map(str::to_string).collect()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nf-join-check-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("creating a temp dir");
    d
}

/// A server's tls directory as the seed lays it out.
fn lay_out(ca: &ClusterCa, tls: &Path) {
    for f in ca.server_files() {
        let p = tls.join(&f.path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, &f.content).expect("writing a tls file");
    }
}

#[test]
fn agent_check_accepts_the_cluster_ca_and_refuses_other_cas() {
    let d = tmpdir("ca");
    let ca = ClusterCa::generate().expect("a CA");
    lay_out(&ca, &d.join("tls"));
    let ports = [free_port(), free_port(), free_port()];
    let _server = serve(&d, &d.join("tls"), ports);
    let token = ca
        .secure_token(AGENT_USER, "agent-password-0123")
        .expect("token");
    let hash = ca.root_fingerprint().expect("fingerprint");
    let lines = join_check(&d, &token, ports);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        format!("join-check cluster port={} accepted ca={hash}", ports[0])
    );
    assert!(
        lines[1].starts_with(&format!(
            "join-check other-ca port={} refused ca-hash-mismatch",
            ports[1]
        )),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "join-check other-cert port={} refused server-cert-not-verified",
            ports[2]
        )),
        "{lines:?}"
    );

    // A token pinned to another cluster's root refuses even the genuine server.
    let other = ClusterCa::generate().expect("another CA");
    let lines = join_check(
        &d,
        &other.secure_token(AGENT_USER, "pw").expect("token"),
        ports,
    );
    assert!(
        lines.iter().all(|l| l.contains(" refused ")),
        "a token for another root was accepted: {lines:?}"
    );
    // A short token cannot pin anything: the check says so instead of accepting.
    let lines = join_check(&d, "short-token", ports);
    assert!(
        lines.iter().all(|l| l.ends_with(" skipped token=short")),
        "{lines:?}"
    );
    let _ = fs::remove_dir_all(&d);
}

/// The hash the check computes from a served bundle is k3s's hashCA: one certificate → its raw
/// bytes; the full bundle → the root's DER, which is the token's hash.
#[test]
fn a_single_certificate_bundle_is_hashed_as_raw_bytes() {
    let d = tmpdir("single");
    let ca = ClusterCa::generate().expect("a CA");
    lay_out(&ca, &d.join("tls"));
    // The server-ca bundle reduced to its first certificate: hashCA hashes the file's bytes.
    let bundle = ca.served_bundle();
    let end = "-----END CERTIFICATE-----\n";
    let first = &bundle[..bundle.find(end).expect("a PEM certificate") + end.len()];
    fs::write(d.join("tls/server-ca.crt"), first).expect("write");
    let ports = [free_port(), free_port(), free_port()];
    let _server = serve(&d, &d.join("tls"), ports);
    let raw = nodeforge::ca::ca_hash(first.as_bytes());
    let lines = join_check(&d, &format!("K10{raw}::{AGENT_USER}:pw"), ports);
    assert_eq!(
        lines[0],
        format!("join-check cluster port={} accepted ca={raw}", ports[0]),
        "{lines:?}"
    );
    let lines = join_check(
        &d,
        &ca.secure_token(AGENT_USER, "pw").expect("token"),
        ports,
    );
    assert!(
        lines[0].contains("refused ca-hash-mismatch"),
        "the root's hash matched a one-certificate bundle: {lines:?}"
    );
    let _ = fs::remove_dir_all(&d);
}
