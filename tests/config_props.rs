//! Property tests: every rule over generated hostile values never panics; a value it accepts
//! matches the consumer's rule re-stated here as an independent regex; a value it refuses is
//! refused with that rule's name.

use nodeforge::config::rules::{dns, host, k3s_flags, k8s, net, users, Rule, Violation};
use proptest::prelude::*;
use regex::Regex;

/// Hostile strings: any Unicode, near-valid ASCII soup, and `near` (a rule-specific pattern).
fn hostile(near: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9._:/@=*+ \\[\\]\\-\\t,$]{0,80}",
        near,
    ]
    .boxed()
}

/// The outcome is consistent: accepted values satisfy `valid`, refusals name `rule`.
fn agree<T>(value: &str, got: Result<T, Violation>, rule: &Rule, valid: impl Fn(&str) -> bool) {
    match got {
        Ok(_) => assert!(valid(value), "rule {}: accepted {value:?}", rule.name),
        Err(v) => {
            assert_eq!(v.rule.name, rule.name, "{value:?}: {v}");
            assert!(v.to_string().contains(&format!("rule {}", rule.name)));
            assert!(!v.detail.is_empty());
        }
    }
}

fn re(p: &str) -> Regex {
    Regex::new(p).unwrap()
}

const LABEL: &str = "[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?";
const LOWER_LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

fn dns_name_ok(s: &str, label: &str) -> bool {
    re(&format!("^{label}(\\.{label})*$")).is_match(s)
        && s.len() <= 253
        && s.split('.').all(|l| l.len() <= 63)
}

/// k8s.io/apimachinery IsQualifiedName, restated.
fn qualified_ok(k: &str) -> bool {
    let name_re = re("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$");
    match k.split_once('/') {
        Some((p, n)) => {
            !p.is_empty() && dns_name_ok(p, LOWER_LABEL) && name_re.is_match(n) && n.len() <= 63
        }
        None => name_re.is_match(k) && k.len() <= 63,
    }
}

/// k8s.io/apimachinery IsValidLabelValue, restated.
fn label_value_ok(v: &str) -> bool {
    v.is_empty() || (re("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").is_match(v) && v.len() <= 63)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn admin_user(s in hostile("[a-zA-Z_-][a-z0-9_ -]{0,40}")) {
        agree(&s, users::admin_user(&s), &users::USER_NAME, |v| {
            re("^[a-z][-a-z0-9_]*$").is_match(v) && v.len() <= 31 && v != "root"
        });
    }

    #[test]
    fn hostname(s in hostile("[a-z0-9-]{0,70}")) {
        agree(&s, dns::hostname(&s), &dns::HOSTNAME, |v| {
            re(&format!("^{LOWER_LABEL}$")).is_match(v) && v.len() <= 63
        });
    }

    #[test]
    fn domain(s in hostile("([a-zA-Z0-9-]{0,65}\\.){0,5}[a-z0-9-]{0,10}")) {
        agree(&s, dns::domain(&s), &dns::DOMAIN, |v| dns_name_ok(v, LABEL));
    }

    #[test]
    fn server_url(s in hostile("(https?://)?(\\[?[0-9a-f:]{0,12}\\]?|[a-z0-9.-]{0,20})(:[0-9]{0,6})?(/[a-z]{0,3})?")) {
        agree(&s, net::server_url(&s), &net::SERVER_URL, |v| {
            let c = re(r"^https://(\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):([1-9][0-9]{0,4})$").captures(v);
            let Some(c) = c else { return false };
            let port_ok = c[4].parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
            let host_ok = match (c.get(2), c.get(3)) {
                (Some(h6), _) => h6.as_str().parse::<std::net::Ipv6Addr>().is_ok(),
                (_, Some(h)) => h.as_str().parse::<std::net::Ipv4Addr>().is_ok() || dns_name_ok(h.as_str(), LABEL),
                _ => false,
            };
            port_ok && host_ok
        });
    }

    #[test]
    fn tls_san(s in hostile("(\\*\\.)?[a-z0-9.:-]{0,30}")) {
        agree(&s, net::tls_san(&s), &net::TLS_SAN, |v| {
            v.parse::<std::net::IpAddr>().is_ok()
                || dns_name_ok(v.strip_prefix("*.").unwrap_or(v), LABEL)
        });
    }

    #[test]
    fn node_label(s in hostile("([a-z0-9.]{0,12}/)?[A-Za-z0-9._ -]{0,70}=[A-Za-z0-9._ -]{0,70}")) {
        match k8s::node_label(&s) {
            Ok(()) => {
                let (k, v) = s.split_once('=').expect("accepted labels have '='");
                assert!(qualified_ok(k) && label_value_ok(v), "accepted {s:?}");
                if let Some((p, _)) = k.split_once('/') {
                    let labels: Vec<&str> = p.split('.').collect();
                    let restricted = labels.ends_with(&["k8s", "io"]) || labels.ends_with(&["kubernetes", "io"]);
                    let allowed = labels.ends_with(&["node", "kubernetes", "io"])
                        || labels.ends_with(&["kubelet", "kubernetes", "io"])
                        || k8s::KUBELET_ALLOWED_KEYS.contains(&k);
                    assert!(!restricted || allowed, "accepted a restricted label {s:?}");
                }
            }
            Err(v) => assert!(v.rule.name.starts_with("k8s-"), "{s:?}: {v}"),
        }
    }

    #[test]
    fn node_taint(s in hostile("[a-z0-9./]{0,20}(=[a-z ]{0,8})?:(NoSchedule|NoExecute|PreferNoSchedule|Never)?")) {
        match k8s::node_taint(&s) {
            Ok(()) => {
                let c = re("^([^=:]+)(=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$").captures(&s);
                let c = c.unwrap_or_else(|| panic!("accepted {s:?}"));
                assert!(qualified_ok(&c[1]), "accepted {s:?}");
                assert!(label_value_ok(c.get(3).map_or("", |m| m.as_str())), "accepted {s:?}");
            }
            Err(v) => assert!(v.rule.name.starts_with("k8s-"), "{s:?}: {v}"),
        }
    }

    #[test]
    fn timezone(s in hostile("[A-Za-z+0-9_]{0,16}(/[A-Za-z_.-]{0,16}){0,3}")) {
        agree(&s, host::timezone(&s), &host::TIMEZONE, |v| {
            re("^[A-Za-z][A-Za-z0-9._+-]{0,13}(/[A-Za-z][A-Za-z0-9._+-]{0,13})*$").is_match(v)
        });
    }

    #[test]
    fn usb_quirk(s in hostile("[0-9a-fA-Fx]{3,5}:[0-9a-fA-F]{3,5}(:[a-zA-Z]{0,3})?")) {
        agree(&s, host::usb_quirk(&s), &host::USB_QUIRK, |v| {
            re("^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}(:[abcdefghijklmnoprstuwy]+)?$").is_match(v)
        });
    }

    #[test]
    fn interface_name(s in hostile("[a-z0-9/: *]{0,18}")) {
        agree(&s, net::interface_name(&s), &net::INTERFACE_NAME, |v| {
            re("^[!-~]{1,15}$").is_match(v)
                && !v.contains(['/', ':', '*'])
                && v != "." && v != ".."
                && !re("^[0-9]+$").is_match(v)
        });
    }

    #[test]
    fn data_disk(s in hostile("/dev/(disk/by-[a-z]{0,5}/)?[a-zA-Z0-9. /-]{0,12}")) {
        agree(&s, host::data_disk(&s), &host::DATA_DISK, |v| {
            (re(r"^/dev/disk/by-[a-z]+/[^/\s]+$").is_match(v) && !v.ends_with("/..") && !v.ends_with("/."))
                || re("^/dev/[A-Za-z0-9]+$").is_match(v)
        });
    }

    #[test]
    fn static_address(s in hostile("[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{0,3})?")) {
        agree(&s, net::static_address(&s), &net::STATIC_ADDRESS, |v| {
            let Some((ip, p)) = v.split_once('/') else { return false };
            ip.parse::<std::net::Ipv4Addr>().is_ok()
                && re("^[1-9][0-9]?$").is_match(p)
                && p.parse::<u8>().is_ok_and(|p| (1..=32).contains(&p))
        });
    }

    #[test]
    fn metallb_entry(s in hostile("[0-9.:a-f]{0,16}[-/][0-9.:a-f]{0,16}")) {
        agree(&s, net::metallb_entry(&s), &net::METALLB_RANGE, |v| {
            let v = v.trim();
            if let Some((ip, p)) = v.split_once('/') {
                let Ok(ip) = ip.parse::<std::net::IpAddr>() else { return false };
                let max = if ip.is_ipv4() { 32 } else { 128 };
                re("^[0-9]+$").is_match(p) && p.parse::<u32>().is_ok_and(|p| p <= max)
            } else if let Some((a, b)) = v.split_once('-') {
                match (a.trim().parse::<std::net::IpAddr>(), b.trim().parse::<std::net::IpAddr>()) {
                    (Ok(a), Ok(b)) => a.is_ipv4() == b.is_ipv4() && a <= b,
                    _ => false,
                }
            } else {
                false
            }
        });
    }

    #[test]
    fn datastore_url(s in hostile("postgres(ql)?://[a-z:]{0,6}@?[a-z0-9.:\\[\\]]{0,12}(/[a-z]{0,4})?")) {
        agree(&s, net::datastore_url(&s), &net::DATASTORE_URL, |v| {
            re(r"^postgres(ql)?://[^:@/\s]+@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[1-9][0-9]{0,4})?(/\S*)?$").is_match(v)
        });
    }

    #[test]
    fn k3s_flag(key in hostile("-{0,2}[a-z-]{1,20}"), server in any::<bool>(), as_list in any::<bool>()) {
        let value = if as_list {
            toml::Value::Array(vec![toml::Value::String("x".into())])
        } else {
            toml::Value::String("x".into())
        };
        let known = k3s_flags::FLAGS.iter().any(|(n, r, _)| *n == key && (server || *r == k3s_flags::Roles::Both));
        match k3s_flags::check(&key, &value, server) {
            Ok(_) => assert!(known, "accepted {key:?}"),
            Err(v) => {
                assert_eq!(v.rule.name, "k3s-flag");
                // a refused known flag is a type mismatch, which names the key too
                assert!(v.detail.contains(key.as_str()), "{v}");
            }
        }
    }
}
