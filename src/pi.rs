//! Raspberry Pi boot settings: `cmdline.txt` and `config.txt` edits (docs/raspberry-pi-boot.md).
//!
//! Both edits are idempotent: running them on their own output changes nothing.

/// Kernel command-line flags k3s needs on a Pi (memory cgroup). A later `cgroup_enable=memory`
/// wins over the `cgroup_disable=memory` that recent firmware injects; `cgroup_memory=1` is kept
/// for older kernels.
pub const CGROUP_FLAGS: [&str; 2] = ["cgroup_memory=1", "cgroup_enable=memory"];

/// Prefix of the usb-storage quirks parameter (`VVVV:PPPP:u` = ignore UAS for that adapter).
pub const USB_QUIRKS_PREFIX: &str = "usb-storage.quirks=";

/// What a Pi node adds to its boot FAT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PiBoot {
    /// Tokens appended to `cmdline.txt` (once each; `usb-storage.quirks=` merged with an existing one).
    pub cmdline_add: Vec<String>,
    /// `config.txt` lines as (section without brackets, e.g. `all`/`pi4`; line).
    pub config: Vec<(String, String)>,
}

impl PiBoot {
    /// The boot settings of a Pi node: cgroup flags, USB quirks (`VVVV:PPPP` or `VVVV:PPPP:flags`),
    /// and the serial console (`enable_uart=1`, pairs with `console=serial0,115200`).
    pub fn for_node(usb_quirks: &[String]) -> PiBoot {
        let mut cmdline_add: Vec<String> = CGROUP_FLAGS.iter().map(|s| s.to_string()).collect();
        if !usb_quirks.is_empty() {
            let q: Vec<String> = usb_quirks.iter().map(|q| quirk_with_flags(q)).collect();
            cmdline_add.push(format!("{USB_QUIRKS_PREFIX}{}", q.join(",")));
        }
        PiBoot {
            cmdline_add,
            config: vec![("all".into(), "enable_uart=1".into())],
        }
    }
}

/// `152d:0578` → `152d:0578:u`; entries that already carry flags are kept (lower-cased).
pub fn quirk_with_flags(q: &str) -> String {
    let q = q.trim().to_ascii_lowercase();
    if q.split(':').count() == 2 {
        format!("{q}:u")
    } else {
        q
    }
}

/// The `VVVV:PPPP` part of a quirk entry, for de-duplication.
fn quirk_id(q: &str) -> String {
    q.split(':')
        .take(2)
        .collect::<Vec<_>>()
        .join(":")
        .to_ascii_lowercase()
}

/// Merge quirk lists: keep `existing` entries, append new devices not already listed.
fn merge_quirks(existing: &str, add: &str) -> String {
    let mut out: Vec<String> = existing
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for q in add.split(',').filter(|s| !s.is_empty()) {
        if !out.iter().any(|e| quirk_id(e) == quirk_id(q)) {
            out.push(q.to_string());
        }
    }
    out.join(",")
}

/// Text as the firmware and kernel should see it: a UTF-8 byte-order mark (U+FEFF, written
/// by Windows editors) removed, CRLF and lone CR line ends turned into LF. A BOM left in
/// `cmdline.txt` glues itself to the first parameter (`\u{feff}console=serial0,115200`), which the
/// kernel then ignores.
pub fn normalize_text(orig: &str) -> String {
    let t = orig.strip_prefix('\u{feff}').unwrap_or(orig);
    t.replace("\r\n", "\n").replace('\r', "\n")
}

/// Edit `cmdline.txt`: ONE line (later lines are ignored by the firmware and dropped), each token of
/// `b.cmdline_add` added once, `usb-storage.quirks=` merged into an existing one. Ends with `\n`.
/// The text is normalised first ([`normalize_text`]): no BOM, CRLF accepted.
pub fn edit_cmdline(orig: &str, b: &PiBoot) -> String {
    let orig = normalize_text(orig);
    let first = orig.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut toks: Vec<String> = first.split_whitespace().map(str::to_string).collect();
    for add in &b.cmdline_add {
        if let Some(new) = add.strip_prefix(USB_QUIRKS_PREFIX) {
            match toks.iter().position(|t| t.starts_with(USB_QUIRKS_PREFIX)) {
                Some(i) => {
                    let merged = merge_quirks(&toks[i][USB_QUIRKS_PREFIX.len()..], new);
                    toks[i] = format!("{USB_QUIRKS_PREFIX}{merged}");
                }
                None => toks.push(add.clone()),
            }
        } else if !toks.iter().any(|t| t == add) {
            toks.push(add.clone());
        }
    }
    format!("{}\n", toks.join(" "))
}

/// Edit `config.txt`: each (section, line) of `b.config` that is not already present under that
/// section is appended under a `[section]` header at the end (a header is needed because the file
/// may end inside another filter section). Lines before any header count as `[all]`. The text is
/// normalised first ([`normalize_text`]).
pub fn edit_config(orig: &str, b: &PiBoot) -> String {
    let orig = normalize_text(orig);
    let orig = orig.as_str();
    let mut present: Vec<(String, String)> = Vec::new();
    let mut section = "all".to_string();
    for l in orig.lines() {
        let t = l.trim();
        if let Some(s) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = s.trim().to_string();
        } else if !t.is_empty() && !t.starts_with('#') {
            present.push((section.clone(), t.to_string()));
        }
    }
    // Additions grouped by section, in first-seen order.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (s, line) in &b.config {
        if present.iter().any(|(ps, pl)| ps == s && pl == line.trim()) {
            continue;
        }
        match groups.iter_mut().find(|(gs, _)| gs == s) {
            Some((_, ls)) if !ls.contains(line) => ls.push(line.clone()),
            Some(_) => {}
            None => groups.push((s.clone(), vec![line.clone()])),
        }
    }
    if groups.is_empty() {
        return orig.to_string();
    }
    let mut out = orig.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n# added by nodeforge\n");
    for (s, lines) in groups {
        out.push_str(&format!("[{s}]\n"));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RASPIOS: &str = "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait resize\n";
    const UBUNTU: &str = "console=serial0,115200 multipath=off dwc_otg.lpm_enable=0 console=tty1 root=LABEL=writable rootfstype=ext4 rootwait fixrtc\n";
    const DEBIAN: &str = "console=tty0 console=ttyS1,115200 root=LABEL=RASPIROOT rw fsck.repair=yes net.ifnames=0  rootwait\n";

    fn boot() -> PiBoot {
        PiBoot::for_node(&["152d:0578".to_string(), "174C:55AA:u".to_string()])
    }

    #[test]
    fn vendor_cmdlines_get_flags_once() {
        for orig in [RASPIOS, UBUNTU, DEBIAN] {
            let once = edit_cmdline(orig, &boot());
            assert_eq!(once.lines().count(), 1, "{once}");
            assert!(once.ends_with('\n'));
            for f in CGROUP_FLAGS {
                assert_eq!(once.split_whitespace().filter(|t| *t == f).count(), 1);
            }
            assert!(once.contains("usb-storage.quirks=152d:0578:u,174c:55aa:u"));
            // everything the vendor had is kept, in order
            let orig_toks: Vec<&str> = orig.split_whitespace().collect();
            let new_toks: Vec<&str> = once.split_whitespace().collect();
            assert_eq!(&new_toks[..orig_toks.len()], &orig_toks[..]);
            assert_eq!(edit_cmdline(&once, &boot()), once, "not idempotent");
        }
    }

    #[test]
    fn cmdline_keeps_root_partuuid() {
        let once = edit_cmdline(RASPIOS, &boot());
        assert!(once.contains("root=PARTUUID=1234abcd-02"));
    }

    #[test]
    fn existing_quirks_are_merged() {
        let orig = "root=LABEL=x usb-storage.quirks=0bda:9210:u rootwait\nsecond line ignored\n";
        let out = edit_cmdline(orig, &boot());
        assert_eq!(
            out,
            "root=LABEL=x usb-storage.quirks=0bda:9210:u,152d:0578:u,174c:55aa:u rootwait cgroup_memory=1 cgroup_enable=memory\n"
        );
        let orig2 = "root=LABEL=x usb-storage.quirks=152D:0578:u\n";
        let out2 = edit_cmdline(orig2, &boot());
        assert_eq!(out2.matches("152").count(), 1, "{out2}");
        assert_eq!(out2.matches(USB_QUIRKS_PREFIX).count(), 1);
    }

    #[test]
    fn no_quirks_no_param() {
        let out = edit_cmdline(RASPIOS, &PiBoot::for_node(&[]));
        assert!(!out.contains(USB_QUIRKS_PREFIX));
        assert!(out.ends_with("resize cgroup_memory=1 cgroup_enable=memory\n"));
    }

    #[test]
    fn config_under_section_and_idempotent() {
        let orig = "# comment\ndtparam=audio=on\n[cm4]\notg_mode=1\n";
        let b = PiBoot {
            cmdline_add: vec![],
            config: vec![
                ("all".into(), "enable_uart=1".into()),
                ("pi4".into(), "arm_boost=1".into()),
            ],
        };
        let once = edit_config(orig, &b);
        assert!(once.starts_with(orig));
        assert!(
            once.ends_with("[all]\nenable_uart=1\n[pi4]\narm_boost=1\n"),
            "{once}"
        );
        assert_eq!(edit_config(&once, &b), once);
    }

    #[test]
    fn config_present_in_other_section_still_added() {
        let orig = "[pi3]\nenable_uart=1\n[all]\n";
        let out = edit_config(orig, &boot());
        assert!(out.ends_with("[all]\nenable_uart=1\n"), "{out}");
        let orig2 = "enable_uart=1\n";
        assert_eq!(edit_config(orig2, &boot()), orig2);
        // no trailing newline in the original
        let out3 = edit_config("arm_64bit=1", &boot());
        assert!(out3.starts_with("arm_64bit=1\n"));
        assert_eq!(edit_config(&out3, &boot()), out3);
    }

    #[test]
    fn bom_and_crlf_are_normalised() {
        let orig = format!("\u{feff}{}", RASPIOS.replace('\n', "\r\n"));
        let out = edit_cmdline(&orig, &boot());
        assert!(out.starts_with("console=serial0,115200 "), "{out:?}");
        assert!(!out.contains('\u{feff}') && !out.contains('\r'), "{out:?}");
        assert_eq!(out.lines().count(), 1);
        assert_eq!(edit_cmdline(&out, &boot()), out);
        let cfg = "\u{feff}dtparam=audio=on\r\n[all]\r\nenable_uart=1\r\n";
        let out = edit_config(cfg, &boot());
        assert_eq!(out, "dtparam=audio=on\n[all]\nenable_uart=1\n");
        let out = edit_config("\u{feff}arm_64bit=1\r\n", &boot());
        assert_eq!(
            out,
            "arm_64bit=1\n\n# added by nodeforge\n[all]\nenable_uart=1\n"
        );
    }
}
