//! The built-in add-ons' HelmCharts (MetalLB, Longhorn, NVIDIA device plugin): their settings
//! (target namespace, Helm values, a comment saying why) live in `overlays/manifests/<name>.yaml`
//! as a `HelmChart` without `repo`, `chart` and `version`; those come from the pins table
//! (`overlays/charts.toml`, the table named like `metadata.name`), so every pin is in one file.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    namespace: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    target_namespace: String,
    #[serde(default)]
    create_namespace: bool,
    #[serde(default)]
    values_content: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Template {
    api_version: String,
    kind: String,
    metadata: Meta,
    spec: Spec,
}

/// The full `HelmChart` manifest for the add-on template `text` (file `file`): the template's
/// leading comment lines, then the object with `repo`, `chart` and `version` from the pin named
/// `metadata.name`. Same input → same bytes.
///
/// Errors (build defects, the templates are built in): the template does not parse, is not a
/// `helm.cattle.io/v1` `HelmChart` in `kube-system`, or its pin is missing.
pub fn render(file: &str, text: &str) -> Result<String> {
    let t: Template = serde_saphyr::from_str(text)
        .with_context(|| format!("overlays/manifests/{file}: not a HelmChart template"))?;
    if t.api_version != "helm.cattle.io/v1"
        || t.kind != "HelmChart"
        || t.metadata.namespace != "kube-system"
    {
        bail!("overlays/manifests/{file}: must be a helm.cattle.io/v1 HelmChart in kube-system");
    }
    let mut out: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(
        &super::charts::helm_chart(
            &t.metadata.name,
            &t.spec.target_namespace,
            t.spec.create_namespace,
            t.spec.values_content.as_deref(),
        )
        .with_context(|| format!("overlays/manifests/{file}"))?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hold_no_pin_and_render_with_the_table() {
        // The templates seed::ADDON_MANIFESTS ships (named here: addons sits below seed).
        let templates = [
            (
                "metallb.yaml",
                include_str!("../../overlays/manifests/metallb.yaml"),
            ),
            (
                "longhorn.yaml",
                include_str!("../../overlays/manifests/longhorn.yaml"),
            ),
            (
                "nvidia-device-plugin.yaml",
                include_str!("../../overlays/manifests/nvidia-device-plugin.yaml"),
            ),
        ];
        for (file, text) in templates {
            for key in ["repo:", "chart:", "version:"] {
                assert!(!text.contains(key), "{file} pins {key}");
            }
            let out = render(file, text).unwrap();
            let name = file.trim_end_matches(".yaml");
            let pin = crate::addons::charts::pin(name).unwrap();
            assert!(
                out.contains(&format!("  version: \"{}\"\n", pin.version)),
                "{out}"
            );
        }
        assert!(render("x.yaml", "kind: Secret\n").is_err());
    }
}
