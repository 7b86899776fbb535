//! `network-config` (v2): a static address or DHCP on the node's NIC.

use crate::config::{Board, Cluster, Network, NodeSpec};
use crate::yaml::to_yaml;
use anyhow::Result;
use serde::Serialize;

#[derive(Serialize)]
struct NetRoute {
    to: String,
    via: String,
}

#[derive(Serialize)]
struct Nameservers {
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    search: Vec<String>,
}

#[derive(Serialize)]
struct Ethernet {
    dhcp4: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<NetRoute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<Nameservers>,
}

#[derive(Serialize)]
struct NetV2 {
    version: u8,
    ethernets: std::collections::BTreeMap<String, Ethernet>,
}

#[derive(Serialize)]
struct NetworkConfig {
    network: NetV2,
}

/// `network-config` (v2) of a node: its static address, or DHCP on its board's NIC.
///
/// nodeforge owns the seed, so a DHCP node gets an explicit DHCP config too: a base may carry
/// another machine's `network-config` (dropped when composing), and an explicit file says what
/// the node does. The NIC is named, never matched by glob: cloud-init 22.4 (Debian 12) takes
/// `match: name: "en*"` as the literal interface name and DHCP never starts. Pi families name
/// the onboard NIC `eth0` (Raspberry Pi OS and Ubuntu raspi do; Debian raspi sets
/// `net.ifnames=0`). x86_64 (Debian generic) uses predictable names that depend on the machine
/// (`enp1s0`, `ens3`...): a DHCP x86_64 node without `interface` gets no network-config, so
/// cloud-init's own fallback applies (DHCP on the first NIC, cloud-init docs "Network
/// configuration: fallback"); `None` is returned for it.
pub fn network_config(c: &Cluster, n: &NodeSpec) -> Result<Option<String>> {
    let eth = match &n.network {
        Network::Static {
            address,
            prefix,
            gateway,
            dns,
        } => Ethernet {
            dhcp4: false,
            addresses: vec![format!("{address}/{prefix}")],
            routes: gateway
                .iter()
                .map(|g| NetRoute {
                    to: "0.0.0.0/0".into(),
                    via: g.to_string(),
                })
                .collect(),
            nameservers: (!dns.is_empty()).then(|| Nameservers {
                addresses: dns.iter().map(|d| d.to_string()).collect(),
                search: c.domain.iter().cloned().collect(),
            }),
        },
        Network::Dhcp => return dhcp_network_config(n.board, n.interface.as_deref()),
    };
    let mut ethernets = std::collections::BTreeMap::new();
    ethernets.insert(n.interface_name().to_string(), eth);
    Ok(Some(to_yaml(&NetworkConfig {
        network: NetV2 {
            version: 2,
            ethernets,
        },
    })?))
}

/// DHCP on `interface`, else on the board's known NIC (`eth0` on a Pi); `None` when the NIC
/// name is not known (x86_64 without `interface`: cloud-init's fallback does DHCP).
pub fn dhcp_network_config(board: Board, interface: Option<&str>) -> Result<Option<String>> {
    let name = match (interface, board) {
        (Some(i), _) => i,
        (None, Board::Rpi4) => "eth0",
        (None, Board::X86_64) => return Ok(None),
    };
    let mut ethernets = std::collections::BTreeMap::new();
    ethernets.insert(
        name.to_string(),
        Ethernet {
            dhcp4: true,
            addresses: Vec::new(),
            routes: Vec::new(),
            nameservers: None,
        },
    );
    Ok(Some(to_yaml(&NetworkConfig {
        network: NetV2 {
            version: 2,
            ethernets,
        },
    })?))
}
