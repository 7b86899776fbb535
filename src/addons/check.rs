//! What `nodeforge check` says about each add-on: what it deploys (pinned version) and whether
//! what it needs is there (sealing key, a free VIP in a server's subnet, registry credentials,
//! labelled nodes). Pure: cluster + secrets → lines.

use super::{argocd, charts, kube_vip, registries, sealed_secrets, zot};
use crate::config::Cluster;
use crate::secrets::Secrets;

fn chart_version(name: &str) -> String {
    match charts::pin(name) {
        Ok(p) => format!("chart {} {}", p.chart, p.version),
        Err(e) => format!("(pin error: {e:#})"),
    }
}

/// Hostnames of the nodes carrying `label` (`key=value`), from the node or its role's profile.
pub(super) fn labelled<'a>(c: &'a Cluster, label: &str) -> Vec<&'a str> {
    c.nodes
        .iter()
        .filter(|n| {
            n.labels
                .iter()
                .chain(&n.profile.node_labels)
                .any(|l| l == label)
        })
        .map(|n| n.hostname.as_str())
        .collect()
}

fn list(v: &[&str]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The host (`name[:port]`) of an endpoint URL.
fn url_host(u: &str) -> &str {
    let rest = u.split_once("://").map(|x| x.1).unwrap_or(u);
    rest.split('/').next().unwrap_or(rest)
}

/// What `check` prints about the add-ons and what each needs (one line each, no secret values).
/// Lines starting `ERROR` make `check` fail; `warning:` lines are advice. `s` is the secrets
/// file when it exists.
pub fn check_lines(c: &Cluster, s: Option<&Secrets>) -> Vec<String> {
    let mut out = Vec::new();
    let a = &c.addons;
    if let Some(m) = &a.metallb {
        out.push(format!(
            "metallb: {}; address pool {}; k3s servicelb off on servers",
            chart_version("metallb"),
            m.addresses.join(", ")
        ));
    }
    if a.longhorn.is_some() {
        let label = "node.longhorn.io/create-default-disk=true";
        let nodes = labelled(c, label);
        out.push(format!(
            "longhorn: {}; default disks on nodes labelled {label}: {}",
            chart_version("longhorn"),
            list(&nodes)
        ));
        if nodes.is_empty() {
            out.push(format!("warning: longhorn: no node carries {label} (role arm-worker-storage): Longhorn has no default disk"));
        }
    }
    if a.nvidia_device_plugin.is_some() {
        let label = "nvidia.com/gpu.present=true";
        let nodes = labelled(c, label);
        out.push(format!(
            "nvidia-device-plugin: {}; GPU nodes labelled {label}: {}",
            chart_version("nvidia-device-plugin"),
            list(&nodes)
        ));
        if nodes.is_empty() {
            out.push(format!("warning: nvidia-device-plugin: no node carries {label} (role gpu-worker): nothing to advertise"));
        }
    }
    if let Some(k) = &a.kube_vip {
        let image = charts::image(kube_vip::IMAGE_PIN)
            .map(|i| i.reference())
            .unwrap_or_else(|e| format!("(pin error: {e:#})"));
        let free = if c.nodes.iter().any(|n| n.ip() == Some(k.address)) {
            "TAKEN by a node"
        } else {
            "free (no node has it)"
        };
        let subnet = match kube_vip::vip_subnet(c, k.address) {
            Some((_, Some((h, net, p)))) => format!("inside {h}'s subnet {net}/{p}"),
            Some((_, None)) => "OUTSIDE every server's subnet".into(),
            None => "servers use DHCP: subnet not checked".into(),
        };
        let registration = if c.server_host() == Some(k.address.to_string().as_str()) {
            "cluster.server uses it"
        } else {
            "cluster.server does not use it"
        };
        out.push(format!(
            "kube-vip: VIP {}:{} on every server ({}), added to their tls-san; image {image}; address {free}, {subnet}; {registration}",
            k.address,
            kube_vip::API_PORT,
            k.interface.as_deref().unwrap_or("default-route interface"),
        ));
    }
    let (errors, warnings) = kube_vip::check(c);
    out.extend(errors.into_iter().map(|e| format!("ERROR {e}")));
    out.extend(warnings.into_iter().map(|w| format!("warning: {w}")));
    if let Some(r) = &c.registries {
        let auth_of = |host: &str| match s {
            Some(s) if s.registry_auth.contains_key(host) => "auth from the secrets file",
            Some(_) => "no auth in the secrets file (anonymous pulls)",
            None => "no secrets file yet",
        };
        for (name, m) in &r.mirrors {
            let eps: Vec<String> = m
                .endpoint
                .iter()
                .map(|e| format!("{e} ({})", auth_of(url_host(e))))
                .collect();
            out.push(format!(
                "registries: {name} mirrored by {} -> {} on every node",
                eps.join(", "),
                registries::PATH
            ));
        }
        if r.mirrors.is_empty() {
            out.push(format!(
                "registries: no mirrors -> {} on every node",
                registries::PATH
            ));
        }
    }
    if let Some(s) = s {
        for h in s.registry_auth.keys() {
            out.push(format!(
                "registries: auth for {h} from the secrets file (written into {} mode 0600)",
                registries::PATH
            ));
        }
        if let Err(e) = registries::registries_yaml(c.registries.as_ref(), &s.registry_auth) {
            out.push(format!("ERROR registries: {e:#}"));
        }
    }
    if let Some(ar) = &a.argocd {
        let auth = match s.map(|s| s.argocd_repo.is_some()) {
            Some(true) => "credentials from the secrets file ([argocd_repo])",
            _ => "no [argocd_repo] credentials: the repository must be public",
        };
        out.push(format!(
            "argocd: {}; root Application {} path {} at {}; {auth}",
            chart_version(argocd::CHART),
            ar.repo,
            ar.path,
            ar.revision
        ));
        if let Some(s) = s {
            if let Err(e) = argocd::root_manifest(ar, s.argocd_repo.as_ref()) {
                out.push(format!("ERROR argocd: {e:#}"));
            }
        }
    }
    if let Some(z) = &a.zot {
        out.extend(zot_lines(c, z));
    }
    if a.sealed_secrets.is_some() {
        let state = match s.map(|s| s.sealing_key.is_some()) {
            Some(true) => "sealing key present in the secrets file",
            Some(false) => {
                "sealing key MISSING from the secrets file (run `nodeforge init --update`)"
            }
            None => "needs a sealing key in the secrets file (`nodeforge init --update`)",
        };
        out.push(format!(
            "sealed-secrets: {}; {state}",
            chart_version(sealed_secrets::CHART)
        ));
    }
    out
}

/// `check` lines of `[addons.zot]`: where it runs, its volume, the endpoint a mirror can name,
/// and which mirrors do.
fn zot_lines(c: &Cluster, z: &zot::Zot) -> Vec<String> {
    let mut out = Vec::new();
    let nodes = labelled(c, &z.node_label);
    let endpoints: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| nodes.contains(&n.hostname.as_str()))
        .filter_map(|n| n.ip())
        .map(|ip| format!("http://{ip}:{}", z.node_port))
        .collect();
    out.push(format!(
        "zot: {}; on nodes labelled {}: {}; {} {} volume; registry on every node at NodePort {}{}",
        chart_version(zot::CHART),
        z.node_label,
        list(&nodes),
        z.size,
        z.storage.class(),
        z.node_port,
        if endpoints.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", endpoints.join(", "))
        }
    ));
    if nodes.is_empty() {
        out.push(format!(
            "warning: zot: no node carries {}: add it to a node's labels, or Zot stays Pending",
            z.node_label
        ));
    }
    if let Err(e) = zot::manifest(c, z) {
        out.push(format!("ERROR zot: {e:#}"));
    }
    if let Some(r) = &c.registries {
        let port = format!(":{}", z.node_port);
        for (name, m) in &r.mirrors {
            if m.endpoint.iter().any(|e| url_host(e).ends_with(&port)) {
                out.push(format!("zot: mirror {name} points at the Zot NodePort"));
            }
        }
    }
    out
}
