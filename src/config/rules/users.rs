//! The admin user name, created by cloud-init's `users:` module with `useradd` on the node.

use super::{Checked, Rule, Violation};

/// `cluster.admin_user`.
pub static USER_NAME: Rule = Rule {
    name: "user-name",
    summary: "matches ^[a-z][-a-z0-9_]*$, at most 31 characters, and is not root or a system account of the base",
    source: "Debian adduser.conf(5) NAME_REGEX default; useradd(8) (names up to 32 characters); systemd.io/USER_NAMES (strict names must fit utmp: UT_NAMESIZE 32 with the NUL, so 31)",
};

/// Accounts a Debian/Ubuntu/Raspberry Pi OS base already has (base-passwd's static list plus the
/// system users of packages every supported base installs). Creating the admin under one of these
/// names either fails or takes over a service account.
pub const SYSTEM_ACCOUNTS: &[&str] = &[
    // base-passwd /usr/share/base-passwd/passwd.master
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "_apt",
    // systemd, dbus, openssh, chrony/ntp, polkit, tcpdump, ubuntu/raspios cloud defaults
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "systemd-coredump",
    "messagebus",
    "sshd",
    "_chrony",
    "ntp",
    "ntpsec",
    "polkitd",
    "tcpdump",
    "tss",
    "uuidd",
    "syslog",
    "dnsmasq",
    "avahi",
    "lxd",
    "usbmux",
    "landscape",
    "pollinate",
    "fwupd-refresh",
    "dhcpcd",
    "statd",
    "rtkit",
];

/// Check `cluster.admin_user` ([`USER_NAME`]).
pub fn admin_user(s: &str) -> Checked {
    let err = |why: String| {
        Err(Violation::new(
            &USER_NAME,
            format!("admin_user {s:?} {why}"),
        ))
    };
    let b = s.as_bytes();
    if b.is_empty() {
        return err("is empty".into());
    }
    // useradd allows 32; systemd's strict check (units, logind) needs the name to fit utmp's
    // 32-byte field with its NUL, so 31.
    if b.len() > 31 {
        return err(format!("has {} characters (at most 31)", b.len()));
    }
    if !b[0].is_ascii_lowercase() {
        return err("must start with a lower-case letter a-z".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return err(format!(
            "holds {c:?}: only a-z, 0-9, '-' and '_' are allowed"
        ));
    }
    if SYSTEM_ACCOUNTS.contains(&s) {
        return err("is a system account of the base image: pick a personal name".into());
    }
    Ok(())
}
