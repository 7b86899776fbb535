use super::*;

const STATUS: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: arm64\n\
    Multi-Arch: same\nVersion: 2.36-9+deb12u10\nDescription: GNU C Library\n multi\n line\n\n\
    Package: gone\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n\n\
    Package: g++-12\nStatus: install ok installed\nArchitecture: arm64\nVersion: 12.2.0-14\n\n\
    Package: libc6\nStatus: install ok installed\nArchitecture: armhf\nVersion: 2.36-9+deb12u10\n";

#[test]
fn dpkg_status_packages() {
    let p = parse_dpkg_status(STATUS);
    let got: Vec<String> = p
        .iter()
        .map(|p| format!("{} {} {}", p.name, p.version, p.architecture))
        .collect();
    assert_eq!(
        got,
        [
            "g++-12 12.2.0-14 arm64",
            "libc6 2.36-9+deb12u10 arm64",
            "libc6 2.36-9+deb12u10 armhf"
        ]
    );
}

#[test]
fn purls_and_dates() {
    let p = DebPackage {
        name: "g++-12".into(),
        version: "1:12.2.0-14".into(),
        architecture: "arm64".into(),
    };
    assert_eq!(
        deb_purl("debian", &p).unwrap(),
        "pkg:deb/debian/g%2B%2B-12@1:12.2.0-14?arch=arm64"
    );
    assert_eq!(
        k3s_purl("v1.33.5+k3s1").unwrap(),
        "pkg:github/k3s-io/k3s@v1.33.5%2Bk3s1"
    );
    assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso8601(1_577_836_800), "2020-01-01T00:00:00Z");
    assert_eq!(iso8601(1_709_251_199), "2024-02-29T23:59:59Z");
}

#[test]
fn helm_charts_from_manifests() {
    let m = vec![
        (
            "a.yaml".to_string(),
            b"kind: HelmChart\nspec:\n  repo: https://r\n  chart: c\n  version: 1.2\n---\n\
              kind: ConfigMap\nspec: {chart: x}\n"
                .to_vec(),
        ),
        ("b.yaml".to_string(), b"---\n".to_vec()),
    ];
    let c = helm_charts(&m).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].chart.as_str(), c[0].version.as_str()), ("c", "1.2"));
    assert_eq!(c[0].repo, "https://r");
    assert!(helm_charts(&[("x".into(), b"a: [".to_vec())]).is_err());
}

#[test]
fn render_is_stable_and_ids_unique() {
    let input = SbomInput {
        name: "cp1".into(),
        image_file: "cp1.img".into(),
        image_sha256: "ab".repeat(32),
        generic: false,
        epoch: 1_577_836_800,
        base: BaseImage {
            url: "/home/me/base.img.xz".into(),
            sha256: "cd".repeat(32),
            family: "raspios".into(),
            os_release: Some("ID=debian\nVERSION_ID=\"13\"\n".into()),
            packages: Some(parse_dpkg_status(STATUS)),
        },
        bundle: vec![],
        charts: vec![],
    };
    let a = render(&input).unwrap();
    assert_eq!(a, render(&input).unwrap());
    let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
    let ids: Vec<&str> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["SPDXID"].as_str().unwrap())
        .collect();
    let uniq: BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(uniq.len(), ids.len(), "{ids:?}");
    assert!(ids.contains(&"SPDXRef-deb-g---12-arm64"), "{ids:?}");
    let text = String::from_utf8(a).unwrap();
    assert!(!text.contains("/home/me"), "local path leaked: {text}");
    assert!(text.contains("\"created\": \"2020-01-01T00:00:00Z\""));
}
