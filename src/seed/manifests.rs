//! Server auto-deploy manifests: the shipped add-on manifests, the MetalLB pool, add-on and user
//! manifests.

use super::ADDON_MANIFESTS;
use crate::config::Cluster;
use crate::yaml::to_yaml;
use anyhow::Result;
use serde::Serialize;

/// Server auto-deploy manifests for the cluster's add-ons and user manifests (file name, bytes).
pub fn server_manifests(c: &Cluster) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let on = c.addons.enabled();
    for (addon, file, text) in ADDON_MANIFESTS {
        if on.contains(addon) {
            out.push((
                file.to_string(),
                crate::addons::builtin::render(file, text)?.into_bytes(),
            ));
        }
    }
    if let Some(m) = &c.addons.metallb {
        out.push(("metallb-pool.yaml".into(), metallb_pool(m)?.into_bytes()));
    }
    out.extend(crate::addons::manifests(c)?);
    for (name, bytes) in &c.user_manifests {
        out.push((name.clone(), bytes.clone()));
    }
    Ok(out)
}

#[derive(Serialize)]
struct ObjMeta {
    name: String,
    namespace: String,
}

#[derive(Serialize)]
struct PoolSpec {
    addresses: Vec<String>,
}

#[derive(Serialize)]
struct L2Spec {
    #[serde(rename = "ipAddressPools")]
    ip_address_pools: Vec<String>,
}

#[derive(Serialize)]
struct Resource<S> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: ObjMeta,
    spec: S,
}

/// The MetalLB address pool and its L2 advertisement (two YAML documents). The CRDs come from the
/// chart; k3s's deploy controller retries until they exist.
fn metallb_pool(m: &crate::config::MetalLb) -> Result<String> {
    let meta = || ObjMeta {
        name: "nodeforge".into(),
        namespace: "metallb-system".into(),
    };
    let pool = Resource {
        api_version: "metallb.io/v1beta1".into(),
        kind: "IPAddressPool".into(),
        metadata: meta(),
        spec: PoolSpec {
            addresses: m.addresses.clone(),
        },
    };
    let l2 = Resource {
        api_version: "metallb.io/v1beta1".into(),
        kind: "L2Advertisement".into(),
        metadata: meta(),
        spec: L2Spec {
            ip_address_pools: vec!["nodeforge".into()],
        },
    };
    Ok(format!("{}---\n{}", to_yaml(&pool)?, to_yaml(&l2)?))
}
