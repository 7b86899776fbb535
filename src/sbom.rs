//! The software bill of materials of a built image: `<image>.spdx.json`, SPDX 2.3 JSON.
//!
//! It lists the base image (URL, sha256), every Debian package installed in the base's root
//! (from `/var/lib/dpkg/status`, read through the ext4 reader), the k3s files of the bundle,
//! and the Helm charts of the add-ons a server deploys. Types come from `serde-spdx`, which is
//! generated from the SPDX 2.3 JSON schema (spdx/spdx-spec, `schemas/spdx-schema.json`);
//! field rules from the SPDX 2.3 specification (clauses 6, 7, 11). Rendering is pure: the same
//! inputs give the same bytes (namespace from the image's sha256, time from SOURCE_DATE_EPOCH).

use anyhow::{Context, Result};
use serde_spdx::spdx::v_2_3 as spdx;
use std::collections::BTreeSet;

/// One package of a dpkg database.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// Packages of a dpkg `status` file (deb-control stanzas) whose files are on disk: every
/// package `dpkg-query -W` lists except those in state `config-files` (removed, only its
/// configuration left) or `not-installed` (dpkg-query(1), dpkg(1) "package states").
/// Sorted by name, architecture, version. Stanzas without a name or version are skipped.
pub fn parse_dpkg_status(text: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.eq_ignore_ascii_case(key) && !l.starts_with([' ', '\t']))
                    .then(|| v.trim().to_string())
            })
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        let state = field("Status")
            .and_then(|s| s.split_whitespace().nth(2).map(str::to_string))
            .unwrap_or_default();
        if matches!(state.as_str(), "config-files" | "not-installed") {
            continue;
        }
        out.push(DebPackage {
            name,
            version,
            architecture: field("Architecture").unwrap_or_default(),
        });
    }
    out.sort();
    out
}

/// The installed Debian packages of a base's root filesystem, `None` when the root has no
/// `/var/lib/dpkg/status` (not a Debian-family root).
pub fn base_packages(base: &crate::base::Base) -> Result<Option<Vec<DebPackage>>> {
    let p = &base.layout.partitions[base.root];
    let status = "/var/lib/dpkg/status";
    match crate::base::read_ext4_file_if_exists(&base.raw, p, status)? {
        None => Ok(None),
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            Ok(Some(parse_dpkg_status(&text)))
        }
    }
}

/// A Helm chart deployed by a k3s `HelmChart` manifest (helm.cattle.io/v1).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HelmChart {
    /// `spec.chart`.
    pub chart: String,
    /// `spec.version` (empty when the manifest does not pin one).
    pub version: String,
    /// `spec.repo` (empty for a chart given by URL or inline).
    pub repo: String,
    /// The manifest file it comes from.
    pub manifest: String,
}

/// The `HelmChart` objects of k3s auto-deploy manifests (file name, YAML bytes, possibly several
/// documents). Errors name the manifest that is not YAML.
pub fn helm_charts(manifests: &[(String, Vec<u8>)]) -> Result<Vec<HelmChart>> {
    let mut out = Vec::new();
    for (file, bytes) in manifests {
        let text = String::from_utf8_lossy(bytes);
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("reading manifest {file} for the SBOM"))?;
        for d in docs {
            if d.get("kind").and_then(|k| k.as_str()) != Some("HelmChart") {
                continue;
            }
            let spec = |k: &str| match d.get("spec").and_then(|s| s.get(k)) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => String::new(),
            };
            let chart = spec("chart");
            if chart.is_empty() {
                continue;
            }
            out.push(HelmChart {
                chart,
                version: spec("version"),
                repo: spec("repo"),
                manifest: file.clone(),
            });
        }
    }
    out.sort();
    Ok(out)
}

/// A file nodeforge put into the image (k3s binary, install.sh, airgap images).
#[derive(Clone, Debug)]
pub struct BundledFile {
    /// Package name (`k3s`, `k3s-install.sh`, `k3s-airgap-images-arm64`).
    pub name: String,
    pub version: String,
    /// Where it was downloaded from (`https://…`; anything else is recorded as NOASSERTION).
    pub url: String,
    pub sha256: String,
    /// Package URL, when one applies.
    pub purl: Option<String>,
    /// Path inside the image.
    pub path_in_image: String,
}

/// The base image.
#[derive(Clone, Debug)]
pub struct BaseImage {
    pub url: String,
    pub sha256: String,
    /// nodeforge family name (`raspios`…).
    pub family: String,
    /// `/etc/os-release` of its root, when readable.
    pub os_release: Option<String>,
    /// Installed Debian packages; `None` when the root has no dpkg database.
    pub packages: Option<Vec<DebPackage>>,
}

/// Everything an image's SBOM says.
#[derive(Clone, Debug)]
pub struct SbomInput {
    /// Image name (`cp1`, `lab-server-rpi4`).
    pub name: String,
    /// Raw image file name (`cp1.img`).
    pub image_file: String,
    pub image_sha256: String,
    pub generic: bool,
    /// SOURCE_DATE_EPOCH of the build (Unix seconds).
    pub epoch: i64,
    pub base: BaseImage,
    pub bundle: Vec<BundledFile>,
    /// Charts the image's node deploys (servers with add-ons).
    pub charts: Vec<HelmChart>,
}

/// SBOM file name of an image named `name`.
pub fn file_name(name: &str) -> String {
    format!("{name}.spdx.json")
}

/// purl of a Debian package (purl-spec `deb` type: namespace = vendor, `arch` qualifier).
pub fn deb_purl(vendor: &str, p: &DebPackage) -> Result<String> {
    let mut u = packageurl::PackageUrl::new("deb", p.name.as_str())
        .with_context(|| format!("package URL of {}", p.name))?;
    u.with_namespace(vendor)?.with_version(p.version.as_str())?;
    if !p.architecture.is_empty() {
        u.add_qualifier("arch", p.architecture.as_str())?;
    }
    Ok(u.to_string())
}

/// purl of a k3s release: `pkg:github/k3s-io/k3s@VERSION` (`+` percent-encoded).
pub fn k3s_purl(version: &str) -> Result<String> {
    let mut u = packageurl::PackageUrl::new("github", "k3s")?;
    u.with_namespace("k3s-io")?.with_version(version)?;
    Ok(u.to_string())
}

/// `YYYY-MM-DDThh:mm:ssZ` of Unix seconds (SPDX dates are ISO 8601 UTC).
pub fn iso8601(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// SPDX identifiers allow letters, digits, `.` and `-` (SPDX 2.3 clause 7.2).
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Unique SPDX ids: a second use of the same id gets `-2`, `-3`…
#[derive(Default)]
struct Ids(BTreeSet<String>);

impl Ids {
    fn take(&mut self, want: &str) -> String {
        let base = format!("SPDXRef-{}", id_part(want));
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

fn download_location(url: &str) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        url.to_string()
    } else {
        // Local paths and file:// URLs say nothing to a reader elsewhere (and would put the
        // builder's directories into the document).
        "NOASSERTION".to_string()
    }
}

fn url_file_name(url: &str) -> Option<String> {
    let last = url.trim_end_matches('/').rsplit('/').next()?;
    (!last.is_empty()).then(|| last.to_string())
}

fn sha256(v: &str) -> Vec<spdx::SpdxItemPackagesItemChecksums> {
    vec![spdx::SpdxItemPackagesItemChecksums {
        algorithm: "SHA256".into(),
        checksum_value: v.to_string(),
    }]
}

fn purl_ref(purl: String) -> Vec<spdx::SpdxItemPackagesItemExternalRefs> {
    vec![spdx::SpdxItemPackagesItemExternalRefs {
        comment: None,
        reference_category: "PACKAGE-MANAGER".into(),
        reference_locator: purl,
        reference_type: "purl".into(),
    }]
}

/// A package with only the required fields and `filesAnalyzed: false`.
fn package(id: String, name: &str, download: String) -> spdx::SpdxItemPackages {
    spdx::SpdxItemPackages {
        spdxid: id,
        annotations: None,
        attribution_texts: None,
        built_date: None,
        checksums: None,
        comment: None,
        copyright_text: None,
        description: None,
        download_location: download,
        external_refs: None,
        files_analyzed: Some(false),
        has_files: None,
        homepage: None,
        license_comments: None,
        license_concluded: None,
        license_declared: None,
        license_info_from_files: None,
        name: name.to_string(),
        originator: None,
        package_file_name: None,
        package_verification_code: None,
        primary_package_purpose: None,
        release_date: None,
        source_info: None,
        summary: None,
        supplier: None,
        valid_until_date: None,
        version_info: None,
    }
}

fn rel(a: &str, kind: &str, b: &str, comment: Option<String>) -> spdx::SpdxItemRelationships {
    spdx::SpdxItemRelationships {
        comment,
        related_spdx_element: b.to_string(),
        relationship_type: kind.to_string(),
        spdx_element_id: a.to_string(),
    }
}

/// Render the SBOM (pretty JSON, newline-terminated). Pure: same input, same bytes.
pub fn render(i: &SbomInput) -> Result<Vec<u8>> {
    let mut ids = Ids::default();
    let mut packages = Vec::new();
    let mut rels = Vec::new();
    let doc_id = "SPDXRef-DOCUMENT";

    let image_id = ids.take("Image");
    let mut image = package(image_id.clone(), &i.name, "NOASSERTION".into());
    image.package_file_name = Some(i.image_file.clone());
    image.checksums = Some(sha256(&i.image_sha256));
    image.primary_package_purpose = Some("OPERATING-SYSTEM".into());
    image.supplier = Some("Organization: nodeforge".into());
    image.comment = Some(format!(
        "Disk image built by nodeforge {}{}. Its root partition is the base image's, byte for \
         byte; the boot/seed FAT was rebuilt with the k3s bundle and the cloud-init seed.",
        env!("CARGO_PKG_VERSION"),
        if i.generic {
            " (generic: no node identity; seeded when flashed with --node)"
        } else {
            ""
        }
    ));
    packages.push(image);
    rels.push(rel(doc_id, "DESCRIBES", &image_id, None));

    // The base image.
    let base_id = ids.take("Base");
    let os = |k: &str| {
        i.base
            .os_release
            .as_deref()
            .and_then(|t| crate::base::os_release_field(t, k))
    };
    let base_name = url_file_name(&i.base.url).unwrap_or_else(|| "base-image".into());
    let mut base = package(base_id.clone(), &base_name, download_location(&i.base.url));
    base.package_file_name = Some(base_name.clone());
    base.checksums = Some(sha256(&i.base.sha256));
    base.version_info = os("VERSION_ID");
    base.description = os("PRETTY_NAME");
    base.primary_package_purpose = Some("OPERATING-SYSTEM".into());
    base.comment = Some(format!(
        "Base image ({} family); the sha256 is the one pinned for the downloaded file.{}",
        i.base.family,
        match &i.base.packages {
            Some(p) => format!(
                " {} Debian packages from /var/lib/dpkg/status of its root.",
                p.len()
            ),
            None => " Its root has no /var/lib/dpkg/status: no Debian packages listed.".into(),
        }
    ));
    packages.push(base);
    rels.push(rel(
        &image_id,
        "CONTAINS",
        &base_id,
        Some("root partition kept byte for byte".into()),
    ));

    // Debian packages of the base's root. purl vendor from os-release (ubuntu, else debian).
    let vendor = match os("ID").as_deref() {
        Some("ubuntu") => "ubuntu",
        _ => "debian",
    };
    for p in i.base.packages.iter().flatten() {
        let id = ids.take(&format!("deb-{}-{}", p.name, p.architecture));
        let mut pkg = package(id.clone(), &p.name, "NOASSERTION".into());
        pkg.version_info = Some(p.version.clone());
        pkg.external_refs = Some(purl_ref(deb_purl(vendor, p)?));
        packages.push(pkg);
        rels.push(rel(&base_id, "CONTAINS", &id, None));
    }

    for f in &i.bundle {
        let id = ids.take(&f.name);
        let mut pkg = package(id.clone(), &f.name, download_location(&f.url));
        pkg.version_info = Some(f.version.clone());
        pkg.checksums = Some(sha256(&f.sha256));
        pkg.package_file_name = url_file_name(&f.url);
        pkg.external_refs = f.purl.clone().map(purl_ref);
        pkg.comment = Some(format!("In the image at {}.", f.path_in_image));
        packages.push(pkg);
        rels.push(rel(&image_id, "CONTAINS", &id, None));
    }

    for c in &i.charts {
        let id = ids.take(&format!("helm-chart-{}", c.chart));
        let download = if c.repo.starts_with("https://") || c.repo.starts_with("http://") {
            c.repo.clone()
        } else {
            "NOASSERTION".into()
        };
        let mut pkg = package(id.clone(), &c.chart, download);
        pkg.version_info = (!c.version.is_empty()).then(|| c.version.clone());
        pkg.comment = Some(format!(
            "Helm chart {} from repository {}, deployed by k3s's Helm controller from the \
             server manifest {}{}; fetched by the cluster, not stored in the image.",
            c.chart,
            if c.repo.is_empty() { "(none)" } else { &c.repo },
            c.manifest,
            if i.generic {
                " once the image is seeded for a server node"
            } else {
                ""
            }
        ));
        packages.push(pkg);
        rels.push(rel(&image_id, "DEPENDS_ON", &id, None));
    }

    let doc = spdx::Spdx {
        spdxid: doc_id.into(),
        annotations: None,
        comment: None,
        creation_info: spdx::SpdxCreationInfo {
            comment: None,
            created: iso8601(i.epoch),
            creators: vec![format!("Tool: nodeforge-{}", env!("CARGO_PKG_VERSION"))],
            license_list_version: None,
        },
        data_license: "CC0-1.0".into(),
        document_describes: None,
        // Derived from the image's content: the same image gets the same namespace, another
        // image another one (SPDX 2.3 clause 6.5).
        document_namespace: format!(
            "https://spdx.org/spdxdocs/nodeforge-{}-{}",
            id_part(&i.name),
            i.image_sha256
        ),
        external_document_refs: None,
        files: None,
        has_extracted_licensing_infos: None,
        name: i.name.clone(),
        packages: Some(packages),
        relationships: Some(rels),
        revieweds: None,
        snippets: None,
        spdx_version: "SPDX-2.3".into(),
    };
    let mut text = serde_json::to_string_pretty(&doc).context("serialising the SBOM")?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// The SBOM of one built image: reads the base's dpkg database (the only I/O), then
/// [`render`]s. `name` is the output name, `image_sha256` the raw image's sha256.
#[allow(clippy::too_many_arguments)]
pub fn image_sbom(
    cluster: &crate::config::Cluster,
    node: &crate::config::NodeSpec,
    name: &str,
    generic: bool,
    base: &crate::base::Base,
    base_input: &crate::output::ManifestInput,
    bundle: &crate::fetch::K3sBundle,
    image_sha256: &str,
    epoch: i64,
) -> Result<Vec<u8>> {
    let packages = base_packages(base)
        .with_context(|| format!("reading the Debian packages of the base image for {name}"))?;
    if packages.is_none() {
        eprintln!(
            "warning: the base image's root ({}) has no /var/lib/dpkg/status: the SBOM of {name} \
             lists no Debian packages",
            base_input.url
        );
    }
    let v = &bundle.version;
    let arch = bundle.arch.as_str();
    let mut files = vec![
        BundledFile {
            name: "k3s".into(),
            version: v.clone(),
            url: bundle.binary.source.url.clone(),
            sha256: bundle.binary.source.sha256.clone(),
            purl: Some(k3s_purl(v)?),
            path_in_image: format!(
                "nodeforge/k3s on the seed FAT ({arch}; installed as /usr/local/bin/k3s)"
            ),
        },
        BundledFile {
            name: "k3s-install.sh".into(),
            version: v.clone(),
            url: bundle.install_sh.source.url.clone(),
            sha256: bundle.install_sh.source.sha256.clone(),
            purl: None,
            path_in_image: "nodeforge/install.sh on the seed FAT".into(),
        },
    ];
    if let Some(a) = &bundle.airgap {
        files.push(BundledFile {
            name: format!("k3s-airgap-images-{arch}"),
            version: v.clone(),
            url: a.source.url.clone(),
            sha256: a.source.sha256.clone(),
            purl: None,
            path_in_image: format!(
                "nodeforge/images/k3s-airgap-images-{arch}.tar.zst on the seed FAT"
            ),
        });
    }
    let charts = if node.is_server() {
        helm_charts(&crate::seed::server_manifests(cluster)?)?
    } else {
        Vec::new()
    };
    render(&SbomInput {
        name: name.to_string(),
        image_file: format!("{name}.img"),
        image_sha256: image_sha256.to_string(),
        generic,
        epoch,
        base: BaseImage {
            url: base_input.url.clone(),
            sha256: base_input.sha256.clone(),
            family: base.family.name().to_string(),
            os_release: base.os_release.clone(),
            packages,
        },
        bundle: files,
        charts,
    })
}

#[cfg(test)]
mod tests;
