//! Rendering `bootconf.txt`: the recovery card's base settings, a boot order, extra `KEY=VALUE`s.

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

/// Longest config `vcgencmd bootloader_config` can show (rpi-eeprom-config's old limit).
pub const MAX_RENDERED_SIZE: usize = 2024;

/// Boot order: a named preset or a raw `BOOT_ORDER` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootOrder {
    /// USB mass storage first, then SD, then restart (`0xf14`).
    Usb,
    /// SD first, then USB, then restart (`0xf41`, the factory default).
    Sd,
    /// Network first, then SD, then restart (`0xf21`).
    Network,
    /// A validated raw value.
    Custom(u32),
}

/// Boot modes a BOOT_ORDER nibble may name (docs/raspberry-pi-eeprom.md#boot_order).
const NIBBLES: &[(u32, &str)] = &[
    (0x1, "SD"),
    (0x2, "network"),
    (0x3, "RPIBOOT"),
    (0x4, "USB-MSD"),
    (0x5, "BCM-USB-MSD"),
    (0x6, "NVMe"),
    (0x7, "HTTP"),
    (0xe, "STOP"),
    (0xf, "RESTART"),
];

impl BootOrder {
    /// The `BOOT_ORDER` value.
    pub fn value(self) -> u32 {
        match self {
            BootOrder::Usb => 0xf14,
            BootOrder::Sd => 0xf41,
            BootOrder::Network => 0xf21,
            BootOrder::Custom(v) => v,
        }
    }

    /// Boot modes in the order the bootloader tries them (nibbles right to left).
    pub fn describe(self) -> String {
        let mut v = self.value();
        let mut names = Vec::new();
        while v != 0 {
            let n = v & 0xf;
            names.push(
                NIBBLES
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map_or("?", |(_, name)| name),
            );
            v >>= 4;
        }
        names.join(" → ")
    }
}

impl fmt::Display for BootOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.value())
    }
}

impl FromStr for BootOrder {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "usb" => return Ok(BootOrder::Usb),
            "sd" => return Ok(BootOrder::Sd),
            "network" | "net" => return Ok(BootOrder::Network),
            _ => {}
        }
        let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) else {
            bail!("boot order {s:?}: use usb, sd, network or a hex value such as 0xf14");
        };
        if hex.is_empty() || hex.len() > 8 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("boot order {s:?}: expected 1 to 8 hex digits after 0x");
        }
        let v =
            u32::from_str_radix(hex, 16).map_err(|e| anyhow::anyhow!("boot order {s:?}: {e}"))?;
        if v == 0 {
            bail!("boot order {s:?}: names no boot mode");
        }
        let mut rest = v;
        while rest != 0 {
            let n = rest & 0xf;
            if !NIBBLES.iter().any(|(k, _)| *k == n) {
                bail!(
                    "boot order {s:?}: nibble 0x{n:x} is not a boot mode (1 SD, 2 network, 3 RPIBOOT, \
                     4 USB-MSD, 5 BCM-USB-MSD, 6 NVMe, 7 HTTP, e STOP, f RESTART)"
                );
            }
            rest >>= 4;
        }
        Ok(BootOrder::Custom(v))
    }
}

/// Pi 4 bootloader properties nodeforge knows (raspberrypi/documentation raspberry-pi/eeprom-bootloader.adoc).
pub const KNOWN_KEYS: &[&str] = &[
    "BOOT_LOAD_FLAGS",
    "BOOT_ORDER",
    "BOOT_UART",
    "CLIENT_IP",
    "DHCP_OPTION97",
    "DHCP_REQ_TIMEOUT",
    "DHCP_TIMEOUT",
    "DISABLE_HDMI",
    "EEPROM_WRITE_PROTECT",
    "ENABLE_SELF_UPDATE",
    "FREEZE_VERSION",
    "GATEWAY",
    "HDMI_DELAY",
    "HTTP_HOST",
    "HTTP_PATH",
    "HTTP_PORT",
    "IMAGER_REPO_URL",
    "MAC_ADDRESS",
    "MAC_ADDRESS_OTP",
    "MAX_RESTARTS",
    "NETCONSOLE",
    "NET_BOOT_MAX_RETRIES",
    "NET_INSTALL_AT_POWER_ON",
    "NET_INSTALL_ENABLED",
    "NET_INSTALL_KEYBOARD_WAIT",
    "PARTITION",
    "POWER_OFF_ON_HALT",
    "PXE_OPTION43",
    "SD_BOOT_MAX_RETRIES",
    "SD_QUIRKS",
    "SUBNET",
    "TFTP_FILE_TIMEOUT",
    "TFTP_IP",
    "TFTP_PREFIX",
    "TFTP_PREFIX_STR",
    "UART_BAUD",
    "USB_MSD_DISCOVER_TIMEOUT",
    "USB_MSD_EXCLUDE_VID_PID",
    "USB_MSD_LUN_TIMEOUT",
    "USB_MSD_PWR_OFF_TIME",
    "USB_MSD_STARTUP_DELAY",
    "VL805",
    "WAKE_ON_GPIO",
    "XHCI_DEBUG",
];

/// Parse a `--set KEY=VALUE` argument; KEY must be `[A-Z0-9_]+`, VALUE one line of printable text.
pub fn parse_setting(arg: &str) -> Result<(String, String)> {
    let Some((k, v)) = arg.split_once('=') else {
        bail!("setting {arg:?}: expected KEY=VALUE");
    };
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("setting {arg:?}: the key must be upper-case letters, digits and '_'");
    }
    if v.is_empty() || v.len() > 256 || v.chars().any(|c| c.is_control()) {
        bail!("setting {arg:?}: the value must be 1 to 256 printable characters on one line");
    }
    Ok((k.to_string(), v.to_string()))
}

/// Keys of `extra` that are not in [`KNOWN_KEYS`] (the CLI warns about them).
pub fn unknown_keys(extra: &[(String, String)]) -> Vec<String> {
    extra
        .iter()
        .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Render `bootconf.txt`: rpi-eeprom's 2711 recovery config (`imager/2711-config/boot-conf-*.txt`)
/// with `boot_order`, then `extra` (a base key given again replaces its value; the last one wins).
pub fn render_bootconf(boot_order: BootOrder, extra: &[(String, String)]) -> Result<String> {
    let mut settings: Vec<(String, String)> = vec![
        ("BOOT_UART".into(), "0".into()),
        ("WAKE_ON_GPIO".into(), "1".into()),
        ("ENABLE_SELF_UPDATE".into(), "1".into()),
        ("BOOT_ORDER".into(), boot_order.to_string()),
        ("NET_INSTALL_AT_POWER_ON".into(), "1".into()),
    ];
    for (k, v) in extra {
        let (k, v) = parse_setting(&format!("{k}={v}"))?;
        if k == "BOOT_ORDER" {
            bail!("set BOOT_ORDER with --boot-order, not as an extra setting");
        }
        match settings.iter_mut().find(|(sk, _)| *sk == k) {
            Some(slot) => slot.1 = v,
            None => settings.push((k, v)),
        }
    }
    let mut out = String::from("[all]\n");
    for (k, v) in &settings {
        out.push_str(&format!("{k}={v}\n"));
    }
    if out.len() > MAX_RENDERED_SIZE {
        bail!(
            "bootconf.txt would be {} bytes; keep it under {MAX_RENDERED_SIZE} so `vcgencmd bootloader_config` can show it",
            out.len()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_upstream_recovery_configs() {
        assert_eq!(
            render_bootconf(BootOrder::Usb, &[]).unwrap(),
            "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nENABLE_SELF_UPDATE=1\nBOOT_ORDER=0xf14\nNET_INSTALL_AT_POWER_ON=1\n"
        );
        assert_eq!("sd".parse::<BootOrder>().unwrap().value(), 0xf41);
        assert_eq!("network".parse::<BootOrder>().unwrap().value(), 0xf21);
        assert_eq!("USB".parse::<BootOrder>().unwrap().value(), 0xf14);
    }

    #[test]
    fn hex_orders_are_validated() {
        assert_eq!("0xf461".parse::<BootOrder>().unwrap().value(), 0xf461);
        assert_eq!(
            "0xf14".parse::<BootOrder>().unwrap().describe(),
            "USB-MSD → SD → RESTART"
        );
        for bad in [
            "0x",
            "0x0",
            "0xf08",
            "0xg1",
            "0x123456789",
            "f14",
            "usbfirst",
        ] {
            assert!(bad.parse::<BootOrder>().is_err(), "{bad}");
        }
    }

    #[test]
    fn extra_settings() {
        let extra = vec![
            ("USB_MSD_DISCOVER_TIMEOUT".to_string(), "20000".to_string()),
            ("BOOT_UART".to_string(), "1".to_string()),
            ("MY_KEY".to_string(), "x".to_string()),
        ];
        let conf = render_bootconf(BootOrder::Usb, &extra).unwrap();
        assert!(conf.contains("BOOT_UART=1\n") && !conf.contains("BOOT_UART=0"));
        assert!(conf.ends_with("USB_MSD_DISCOVER_TIMEOUT=20000\nMY_KEY=x\n"));
        assert_eq!(unknown_keys(&extra), vec!["MY_KEY".to_string()]);
        let bo = vec![("BOOT_ORDER".to_string(), "0xf41".to_string())];
        assert!(render_bootconf(BootOrder::Usb, &bo).is_err());
        assert!(parse_setting("lower=1").is_err());
        assert!(parse_setting("A=b\nc").is_err());
        assert!(parse_setting("NOVALUE").is_err());
        let big: Vec<_> = (0..10)
            .map(|i| (format!("X{i}"), "y".repeat(256)))
            .collect();
        assert!(render_bootconf(BootOrder::Usb, &big).is_err());
    }
}
