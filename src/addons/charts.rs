//! The Helm chart pins (`overlays/charts.toml`) and the k3s `HelmChart` objects built from them.
//!
//! A `HelmChart` (`helm.cattle.io/v1`) in the server's manifests directory makes k3s's helm
//! controller install the chart (docs/addons.md#helmchart).

use crate::yaml::to_yaml;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The pins table shipped in the binary.
pub const CHARTS_TOML: &str = include_str!("../../overlays/charts.toml");

/// One chart pin.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartPin {
    /// Helm repository URL.
    pub repo: String,
    /// Chart name in that repository.
    pub chart: String,
    /// Pinned chart version (exact, no range).
    pub version: String,
    /// Where the pinned version was read.
    pub source: String,
}

/// One container image pin (`[images.<name>]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePin {
    /// Image reference without tag (`ghcr.io/kube-vip/kube-vip`).
    pub image: String,
    /// Pinned tag.
    pub version: String,
    /// Where the pinned version was read.
    pub source: String,
}

impl ImagePin {
    /// `image:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.image, self.version)
    }
}

#[derive(Deserialize)]
struct PinsFile {
    #[serde(default)]
    images: BTreeMap<String, ImagePin>,
    #[serde(flatten)]
    charts: BTreeMap<String, ChartPin>,
}

fn pins_file() -> Result<PinsFile> {
    toml::from_str(CHARTS_TOML).context("overlays/charts.toml (built in) does not parse")
}

/// Every chart pin, by table name. Errors: the shipped table does not parse (a build defect).
pub fn pins() -> Result<BTreeMap<String, ChartPin>> {
    Ok(pins_file()?.charts)
}

/// Every image pin (`[images.*]`), by name.
pub fn image_pins() -> Result<BTreeMap<String, ImagePin>> {
    Ok(pins_file()?.images)
}

/// The pin named `name`.
pub fn pin(name: &str) -> Result<ChartPin> {
    pins()?
        .remove(name)
        .with_context(|| format!("overlays/charts.toml has no [{name}] pin"))
}

/// The image pin `[images.<name>]`.
pub fn image(name: &str) -> Result<ImagePin> {
    image_pins()?
        .remove(name)
        .with_context(|| format!("overlays/charts.toml has no [images.{name}] pin"))
}

#[derive(Serialize)]
struct Meta {
    name: String,
    namespace: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    repo: String,
    chart: String,
    version: String,
    target_namespace: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    create_namespace: bool,
    /// Literal block style (`|`) even for one line, as hand-written manifests have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    values_content: Option<serde_saphyr::LitString>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HelmChart {
    api_version: &'static str,
    kind: &'static str,
    metadata: Meta,
    spec: Spec,
}

/// A `HelmChart` YAML document for pin `name`, installed into `target_namespace` with the Helm
/// values `values` (YAML text, passed as `spec.valuesContent`). The object itself lives in
/// `kube-system`, where k3s's helm controller watches.
pub fn helm_chart(
    name: &str,
    target_namespace: &str,
    create_namespace: bool,
    values: Option<&str>,
) -> Result<String> {
    let p = pin(name)?;
    to_yaml(&HelmChart {
        api_version: "helm.cattle.io/v1",
        kind: "HelmChart",
        metadata: Meta {
            name: name.to_string(),
            namespace: "kube-system".into(),
        },
        spec: Spec {
            repo: p.repo,
            chart: p.chart,
            version: p.version,
            target_namespace: target_namespace.to_string(),
            create_namespace,
            values_content: values.map(|v| serde_saphyr::LitString(v.to_string())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renovate's regex manager (examples/homelab/renovate.json) needs the comment right above
    /// every `version` line: helm datasource for charts, docker for images.
    #[test]
    fn every_pin_has_a_renovate_comment() {
        let pins = pins().unwrap();
        let images = image_pins().unwrap();
        assert!(!pins.is_empty() && !images.is_empty());
        let lines: Vec<&str> = CHARTS_TOML.lines().collect();
        let mut seen = 0;
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with("version = ") {
                seen += 1;
                let prev = lines[i - 1];
                assert!(
                    (prev.starts_with("# renovate: datasource=helm registryUrl=https://")
                        || prev.starts_with("# renovate: datasource=docker "))
                        && prev.contains(" depName="),
                    "line {}: {prev}",
                    i
                );
            }
        }
        assert_eq!(seen, pins.len() + images.len());
        for (n, p) in &pins {
            assert!(
                p.version.chars().all(|c| c.is_ascii_digit() || c == '.'),
                "{n}"
            );
            assert!(CHARTS_TOML.contains(&format!("registryUrl={} depName={}", p.repo, p.chart)));
        }
        for i in images.values() {
            assert!(CHARTS_TOML.contains(&format!(
                "# renovate: datasource=docker depName={}\nversion = \"{}\"",
                i.image, i.version
            )));
        }
    }
}
