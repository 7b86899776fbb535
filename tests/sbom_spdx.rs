//! The SBOM of a built image: valid SPDX 2.3 per `pyspdxtools` (spdx-tools on PyPI), exactly the
//! Debian packages `dpkg-query` reports for the base's dpkg database, the k3s bundle, airgap
//! images and add-on Helm charts, and the same bytes from two builds of the same inputs.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `pyspdxtools`, on PATH or where `pip install --user` puts it.
fn pyspdxtools() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let user = Path::new(&home).join(".local/bin/pyspdxtools");
    if Command::new("pyspdxtools").arg("--help").output().is_ok() {
        return PathBuf::from("pyspdxtools");
    }
    assert!(
        user.is_file(),
        "pyspdxtools is needed to validate SBOMs: pip install spdx-tools (tests/setup-host.sh)"
    );
    user
}

/// A dpkg database: the host's (a real Debian/Ubuntu system's) plus one removed package whose
/// configuration files are left, which `dpkg-query -W` still lists but is not installed.
fn dpkg_status(dir: &Path) -> PathBuf {
    let host = fs::read_to_string("/var/lib/dpkg/status")
        .expect("this test needs a Debian or Ubuntu host with /var/lib/dpkg/status");
    assert!(
        host.matches("\nPackage: ").count() > 50,
        "host dpkg database is too small"
    );
    let mut text = host.trim_end().to_string();
    text.push_str(
        "\n\nPackage: nodeforge-removed-test\nStatus: deinstall ok config-files\nPriority: optional\n\
         Architecture: all\nVersion: 1:2.0-1+deb12u1\nDescription: removed, conffiles left\n",
    );
    let p = dir.join("status");
    fs::write(&p, text).unwrap();
    p
}

/// `dpkg-query --admindir=ADMIN -W` lines `name version arch` of packages whose files are
/// installed (state other than config-files / not-installed), and all of them.
fn dpkg_query(admin: &Path) -> (BTreeSet<String>, usize) {
    let o = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admin.display()))
        .args([
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
        ])
        .output()
        .expect("dpkg-query (dpkg) is needed");
    assert!(o.status.success(), "dpkg-query: {}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let all = text.lines().count();
    let installed = text
        .lines()
        .filter_map(|l| {
            let (state, rest) = l.split_once(' ')?;
            (state != "config-files" && state != "not-installed").then(|| rest.to_string())
        })
        .collect();
    (installed, all)
}

#[test]
fn sbom_is_valid_spdx_lists_dpkg_packages_and_is_reproducible() {
    let tool = pyspdxtools();
    let lab = Lab::new();
    // Rebuild the Pi base with a real dpkg database in its root.
    let status = dpkg_status(&lab.dir);
    let mk = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkbase.sh");
    let o = Command::new("bash")
        .arg(mk)
        .arg("raspios")
        .arg(lab.path("rpi.img.xz"))
        .env("MKBASE_DPKG_STATUS", &status)
        .env("MKBASE_ROOT_MB", "64")
        .output()
        .unwrap();
    assert!(o.status.success(), "mkbase: {}", stderr(&o));
    let rpi_sha = sha256(&lab.path("rpi.img.xz"));
    lab.write_cluster(&rpi_sha);
    // Airgap images and an add-on with a Helm chart.
    let m = lab.path("mirror");
    fs::write(
        m.join("k3s-airgap-images-arm64.tar.zst"),
        vec![0x17u8; 50_000],
    )
    .unwrap();
    fs::write(
        m.join("k3s-airgap-images-amd64.tar.zst"),
        vec![0x71u8; 50_000],
    )
    .unwrap();
    for (arch, bin) in [("arm64", "k3s-arm64"), ("amd64", "k3s")] {
        let air = format!("k3s-airgap-images-{arch}.tar.zst");
        fs::write(
            m.join(format!("sha256sum-{arch}.txt")),
            format!(
                "{}  {bin}\n{}  {air}\n",
                sha256(&m.join(bin)),
                sha256(&m.join(&air))
            ),
        )
        .unwrap();
    }
    let c = fs::read_to_string(lab.path("cluster.toml")).unwrap();
    let c = c.replace("[k3s]\n", "[k3s]\nairgap = true\n").replace(
        "[[nodes]]\nhostname = \"cp1\"",
        "[addons.metallb]\naddresses = [\"10.0.0.200-10.0.0.220\"]\n\n[[nodes]]\nhostname = \"cp1\"",
    );
    fs::write(lab.path("cluster.toml"), c).unwrap();

    let o = lab.build(&["cp1"]);
    assert!(o.status.success(), "build: {}", stderr(&o));
    let sbom_path = lab.path("out/cp1/cp1.spdx.json");
    let o = Command::new(&tool)
        .arg("-i")
        .arg(&sbom_path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pyspdxtools -i {}:\n{}{}",
        sbom_path.display(),
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let sums = fs::read_to_string(lab.path("out/cp1/SHA256SUMS")).unwrap();
    assert!(sums.contains("  cp1.spdx.json\n"), "{sums}");
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(lab.path("out/cp1/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["sbom"], "cp1.spdx.json");

    let doc: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&sbom_path).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let img_sha = manifest["image"]["sha256"].as_str().unwrap();
    assert!(
        doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(img_sha),
        "{}",
        doc["documentNamespace"]
    );
    assert_eq!(doc["creationInfo"]["created"], "2020-01-01T00:00:00Z");
    let pkgs = doc["packages"].as_array().unwrap();
    let purl = |p: &serde_json::Value| -> Option<String> {
        p["externalRefs"].as_array()?.iter().find_map(|r| {
            (r["referenceType"] == "purl").then(|| r["referenceLocator"].as_str().unwrap().into())
        })
    };

    // Debian packages: exactly what dpkg-query reports as installed (the purl carries the arch).
    let admin = lab.path("admindir");
    fs::create_dir_all(admin.join("updates")).unwrap();
    fs::copy(&status, admin.join("status")).unwrap();
    let (want, all) = dpkg_query(&admin);
    assert_eq!(
        all,
        want.len() + 1,
        "the removed test package is listed by dpkg-query"
    );
    let mut got = BTreeSet::new();
    for p in pkgs {
        let Some(u) = purl(p) else { continue };
        if !u.starts_with("pkg:deb/") {
            continue;
        }
        let parsed: packageurl::PackageUrl = u.parse().unwrap();
        assert_eq!(parsed.namespace(), Some("debian"), "{u}");
        assert_eq!(parsed.name(), p["name"].as_str().unwrap(), "{u}");
        assert_eq!(parsed.version(), p["versionInfo"].as_str(), "{u}");
        let arch = parsed.qualifiers().get("arch").map(|a| a.to_string());
        let line = format!(
            "{} {} {}",
            p["name"].as_str().unwrap(),
            p["versionInfo"].as_str().unwrap(),
            arch.unwrap_or_default()
        );
        assert!(got.insert(line.clone()), "listed twice: {line}");
    }
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "SBOM vs dpkg-query: missing {missing:?}, extra {extra:?}"
    );

    let by_name = |n: &str| {
        pkgs.iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no package {n} in the SBOM"))
    };
    let checksum = |p: &serde_json::Value| p["checksums"][0]["checksumValue"].clone();
    assert_eq!(checksum(by_name("rpi.img.xz")), rpi_sha.as_str());
    let k3s = by_name("k3s");
    assert_eq!(k3s["versionInfo"], "v1.33.5+k3s1");
    assert_eq!(checksum(k3s), sha256(&m.join("k3s-arm64")).as_str());
    assert_eq!(
        purl(k3s).as_deref(),
        Some("pkg:github/k3s-io/k3s@v1.33.5%2Bk3s1")
    );
    assert_eq!(
        checksum(by_name("k3s-airgap-images-arm64")),
        sha256(&m.join("k3s-airgap-images-arm64.tar.zst")).as_str()
    );
    let chart = by_name("metallb");
    assert_eq!(chart["versionInfo"], "0.15.2");
    assert_eq!(
        chart["downloadLocation"],
        "https://metallb.github.io/metallb"
    );
    // No local path of the build machine in the document.
    let text = fs::read_to_string(&sbom_path).unwrap();
    assert!(
        !text.contains(lab.dir.to_str().unwrap()),
        "local path in the SBOM"
    );

    // Same inputs, another output directory and time: the same bytes.
    let o = lab.build_to("again", &["cp1"]);
    assert!(o.status.success(), "second build: {}", stderr(&o));
    assert_eq!(
        fs::read(&sbom_path).unwrap(),
        fs::read(lab.path("again/cp1/cp1.spdx.json")).unwrap(),
        "SBOMs of two builds differ"
    );

    // An agent image on a base without a dpkg database: still valid, says so, no deb packages.
    let o = lab.build(&["w1"]);
    assert!(o.status.success(), "build w1: {}", stderr(&o));
    assert!(
        stderr(&o).contains("no /var/lib/dpkg/status"),
        "{}",
        stderr(&o)
    );
    let w1 = lab.path("out/w1/w1.spdx.json");
    let o = Command::new(&tool).arg("-i").arg(&w1).output().unwrap();
    assert!(o.status.success(), "pyspdxtools -i w1: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(&w1).unwrap()).unwrap();
    assert!(!doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "metallb"));
}
