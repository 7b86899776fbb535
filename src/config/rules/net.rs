//! Addresses and URLs: the registration URL agents dial, certificate SANs, static addressing for
//! cloud-init's network-config, NIC names, MetalLB pools and the postgres datastore URL.

use super::dns::is_name;
use super::{Checked, Rule, Violation};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `cluster.server` (the agents' `server:` / `K3S_URL`).
pub static SERVER_URL: Rule = Rule {
    name: "server-url",
    summary: "https://HOST:PORT with an explicit port 1-65535, HOST a DNS name, IPv4 address or [IPv6] in brackets, and no user, path, query or fragment",
    source: "k3s docs cli/agent.md (--server \"Server to connect to\", e.g. https://myserver:6443); RFC 3986 section 3.2 (IPv6 literals in brackets)",
};

/// `cluster.tls_san` and the `tls-san` k3s key.
pub static TLS_SAN: Rule = Rule {
    name: "tls-san",
    summary: "a DNS name (optionally starting with \"*.\") or an IPv4/IPv6 address without brackets or port",
    source: "k3s docs cli/server.md (--tls-san: hostnames or IPv4/IPv6 addresses); RFC 5280 section 4.2.1.6 (dNSName / iPAddress SANs)",
};

/// A node's static `address`.
pub static STATIC_ADDRESS: Rule = Rule {
    name: "static-address",
    summary: "an IPv4 address with its prefix length, A.B.C.D/P with P in 1..32",
    source: "cloud-init network-config v2 `addresses` (CIDR notation); netplan.yaml(5)",
};

/// A node's `gateway`.
pub static GATEWAY: Rule = Rule {
    name: "gateway-in-prefix",
    summary: "the gateway is an IPv4 address inside the node's address prefix and is not the node's own address",
    source: "systemd.network(5) [Route] Gateway= (an on-link gateway must be reachable in a connected prefix)",
};

/// A node's `dns`.
pub static DNS_SERVERS: Rule = Rule {
    name: "static-dns",
    summary: "a static address needs `dns` nameservers (IP addresses): nothing else configures name resolution",
    source: "cloud-init network-config v2 `nameservers.addresses`; without them systemd-resolved has no DNS server",
};

/// A node's `interface`.
pub static INTERFACE_NAME: Rule = Rule {
    name: "interface-name",
    summary: "1-15 bytes of printable ASCII, no '/', ':', '*' or whitespace, not \".\" or \"..\", not all digits",
    source: "Linux net/core/dev.c dev_valid_name() (IFNAMSIZ 16 with the NUL); systemd ifname_valid() (no all-digit names)",
};

/// `[addons.metallb] addresses` entries.
pub static METALLB_RANGE: Rule = Rule {
    name: "metallb-range",
    summary: "a CIDR (A.B.C.D/P) or a range FIRST-LAST of one address family with FIRST <= LAST, overlapping no node's address",
    source: "MetalLB IPAddressPool spec.addresses (metallb.universe.tf docs, configuration: \"192.168.10.0/24\" or \"192.168.9.1-192.168.9.5\")",
};

/// `cluster.datastore` postgres URLs (k3s `datastore-endpoint`).
pub static DATASTORE_URL: Rule = Rule {
    name: "datastore-url",
    summary: "postgres://USER@HOST[:PORT][/DATABASE] with a user, a host, a numeric port and no password (it comes from the secrets file)",
    source: "k3s docs datastore (postgres://username:password@hostname:port/database-name); libpq connection URIs (PostgreSQL docs 34.1.1)",
};

/// A parsed registration URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// Host (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Split `host:port` where host may be `[v6]`; errors name `rule`.
fn host_port(
    auth: &str,
    rule: &'static Rule,
    what: &str,
    port_required: bool,
) -> Checked<(String, Option<u16>)> {
    let bad = |d: String| Err(Violation::new(rule, format!("{what}: {d}")));
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return bad("'[' without ']' around the IPv6 address".into());
        };
        if h.parse::<Ipv6Addr>().is_err() {
            return bad(format!("{h:?} in brackets is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return bad(format!("unexpected {after:?} after ']'")),
            },
        };
        (h.to_string(), port)
    } else {
        if auth.matches(':').count() > 1 {
            return bad(format!(
                "{auth:?} looks like an IPv6 address without brackets: write [ADDRESS]:PORT"
            ));
        }
        match auth.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (auth.to_string(), None),
        }
    };
    if host.is_empty() {
        return bad("no host".into());
    }
    if !host.contains(':') && host.parse::<Ipv4Addr>().is_err() {
        let looks_v4 = host.bytes().all(|c| c.is_ascii_digit() || c == b'.');
        if looks_v4 || !is_name(&host, false) {
            return bad(format!("host {host:?} is not a DNS name or an IP address"));
        }
    }
    let port = match port {
        None if port_required => {
            return bad("no port: add it explicitly (k3s servers listen on :6443)".into())
        }
        None => None,
        Some(p) => match p.parse::<u16>() {
            // Digits only, no leading zero: "048196" must not silently become 48196.
            Ok(n) if n > 0 && p == n.to_string() => Some(n),
            _ => {
                return bad(format!(
                    "port {p:?} is not a number in 1..65535 (no leading zeros)"
                ))
            }
        },
    };
    Ok((host, port))
}

/// Check `cluster.server` ([`SERVER_URL`]); returns its host and port.
pub fn server_url(s: &str) -> Checked<ServerUrl> {
    let what = format!("server {s:?}");
    let bad = |d: &str| Err(Violation::new(&SERVER_URL, format!("{what}: {d}")));
    let Some(rest) = s.strip_prefix("https://") else {
        return bad("must start with https:// (k3s serves only TLS)");
    };
    if rest.contains(['/', '?', '#']) {
        return bad("must not have a path, query or fragment: https://HOST:PORT");
    }
    if rest.contains('@') {
        return bad("must not hold a user name");
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("holds whitespace");
    }
    let (host, port) = host_port(rest, &SERVER_URL, &what, true)?;
    Ok(ServerUrl {
        host,
        port: port.unwrap_or(0),
    })
}

/// Check one `tls-san` entry ([`TLS_SAN`]).
pub fn tls_san(s: &str) -> Checked {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = s.strip_prefix("*.").unwrap_or(s);
    if is_name(name, false) && name.parse::<Ipv4Addr>().is_err() {
        // A dotted quad that failed to parse as IPv4 is a typo, not a host name.
        if !name.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
            return Ok(());
        }
    }
    let why = if s.starts_with('[') {
        "has brackets: write the bare IPv6 address"
    } else if s.contains("://") || s.contains('/') {
        "is a URL or path: give only the host name or address"
    } else if s.contains(':') && !s.contains("::") && s.matches(':').count() == 1 {
        "has a port: give only the host name or address"
    } else {
        "is neither a DNS name nor an IP address"
    };
    Err(Violation::new(&TLS_SAN, format!("tls-san {s:?} {why}")))
}

/// Check a static `address` ([`STATIC_ADDRESS`]); returns the address and prefix length.
pub fn static_address(s: &str) -> Checked<(Ipv4Addr, u8)> {
    let bad = |d: &str| {
        Err(Violation::new(
            &STATIC_ADDRESS,
            format!("address {s:?} {d}"),
        ))
    };
    let Some((ip, prefix)) = s.split_once('/') else {
        return bad("needs a prefix length, e.g. 10.0.0.10/24");
    };
    let Ok(address) = ip.parse::<Ipv4Addr>() else {
        return bad("is not an IPv4 address (static addressing is IPv4 only)");
    };
    let prefix = match prefix.parse::<u8>() {
        // No sign and no leading zero: netplan and iproute2 read "/010" differently (decimal
        // vs. a typo), so the cluster file says the prefix one way only.
        Ok(p)
            if (1..=32).contains(&p)
                && prefix.bytes().all(|c| c.is_ascii_digit())
                && !prefix.starts_with('0') =>
        {
            p
        }
        _ => return bad("has a prefix length outside 1..32 (decimal, no leading zero)"),
    };
    if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
        return bad("is not a unicast host address");
    }
    Ok((address, prefix))
}

/// Prefix mask of length `prefix` (0..=32).
pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// Check a node's `gateway` against its address ([`GATEWAY`]).
pub fn gateway(address: Ipv4Addr, prefix: u8, gateway: &str) -> Checked<Ipv4Addr> {
    let Ok(g) = gateway.parse::<Ipv4Addr>() else {
        return Err(Violation::new(
            &GATEWAY,
            format!("gateway {gateway:?} is not an IPv4 address"),
        ));
    };
    let m = mask(prefix);
    if u32::from(g) & m != u32::from(address) & m {
        return Err(Violation::new(
            &GATEWAY,
            format!("gateway {g} is outside the address prefix {address}/{prefix}"),
        ));
    }
    if g == address {
        return Err(Violation::new(
            &GATEWAY,
            format!("gateway {g} is the node's own address"),
        ));
    }
    Ok(g)
}

/// Check one `dns` entry ([`DNS_SERVERS`]).
pub fn dns_server(s: &str) -> Checked<IpAddr> {
    s.parse::<IpAddr>()
        .map_err(|_| Violation::new(&DNS_SERVERS, format!("dns {s:?} is not an IP address")))
}

/// Check an `interface` name ([`INTERFACE_NAME`]).
pub fn interface_name(s: &str) -> Checked {
    let bad = |d: &str| {
        Err(Violation::new(
            &INTERFACE_NAME,
            format!("interface {s:?} {d}"),
        ))
    };
    if s.is_empty() || s.len() > 15 {
        return bad("must be 1-15 bytes long");
    }
    if s == "." || s == ".." {
        return bad("is not a name");
    }
    if s.bytes().all(|c| c.is_ascii_digit()) {
        return bad("is all digits (systemd reads that as an interface index)");
    }
    if let Some(c) = s
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '*'))
    {
        return bad(&format!("holds {c:?}"));
    }
    Ok(())
}

/// An inclusive address range of one family (IPv4 mapped into u128 with `v6 = false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// True for IPv6.
    pub v6: bool,
    /// First address.
    pub first: u128,
    /// Last address.
    pub last: u128,
}

impl Range {
    /// True when `ip` lies inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, n) = ip_num(ip);
        v6 == self.v6 && self.first <= n && n <= self.last
    }
    /// True when the two ranges share an address.
    pub fn overlaps(&self, o: &Range) -> bool {
        self.v6 == o.v6 && self.first <= o.last && o.first <= self.last
    }
}

fn ip_num(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// Check a MetalLB pool entry ([`METALLB_RANGE`]); returns its range.
pub fn metallb_entry(s: &str) -> Checked<Range> {
    let bad = |d: &str| {
        Err(Violation::new(
            &METALLB_RANGE,
            format!("address pool {s:?} {d}"),
        ))
    };
    let t = s.trim();
    if let Some((ip, p)) = t.split_once('/') {
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return bad("has an invalid address before '/'");
        };
        let (v6, n) = ip_num(ip);
        let bits = if v6 { 128u32 } else { 32 };
        let p = match p.parse::<u32>() {
            Ok(n) if n <= bits && p.bytes().all(|c| c.is_ascii_digit()) => n,
            _ => return bad(&format!("has a prefix length outside 0..{bits}")),
        };
        let host_bits = bits - p;
        let span: u128 = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let first = n & !span;
        return Ok(Range {
            v6,
            first,
            last: first | span,
        });
    }
    let Some((a, b)) = t.split_once('-') else {
        return bad("is neither a CIDR (A.B.C.D/P) nor a range (FIRST-LAST)");
    };
    let (Ok(a), Ok(b)) = (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) else {
        return bad("has an invalid address in its range");
    };
    let ((va, na), (vb, nb)) = (ip_num(a), ip_num(b));
    if va != vb {
        return bad("mixes IPv4 and IPv6");
    }
    if na > nb {
        return bad("starts after it ends");
    }
    Ok(Range {
        v6: va,
        first: na,
        last: nb,
    })
}

/// `url` with the password of its user part (`user:password@`) replaced by `***`, for messages.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match auth.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}{path}")
        }
        _ => url.to_string(),
    }
}

/// Check a postgres datastore URL ([`DATASTORE_URL`]); messages never hold its password.
pub fn datastore_url(s: &str) -> Checked {
    let what = format!("datastore {:?}", redact_password(s));
    let bad = |d: &str| Err(Violation::new(&DATASTORE_URL, format!("{what}: {d}")));
    let Some(rest) = s
        .strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
    else {
        return bad("must start with postgres:// or postgresql://");
    };
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("holds whitespace");
    }
    let (auth, _path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some((user, hostport)) = auth.rsplit_once('@') else {
        return bad("needs a user: postgres://USER@HOST:PORT/DB");
    };
    if user.contains(':') {
        return bad("must not hold a password: put it in the secrets file as `datastore_password`");
    }
    if user.is_empty() {
        return bad("has an empty user");
    }
    host_port(hostport, &DATASTORE_URL, &what, false)?;
    Ok(())
}
