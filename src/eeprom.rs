//! Raspberry Pi 4 bootloader EEPROM: embed/read bootconf.txt, make a recovery card.
//!
//! `image` is the pure section format, `bootconf` renders the config, `card` writes the SD card
//! image, `pins` holds the pinned upstream files. This file is the `nodeforge eeprom` command.

pub mod bootconf;
pub mod card;
pub mod image;
pub mod pins;

pub use bootconf::{parse_setting, render_bootconf, unknown_keys, BootOrder};
pub use card::{card_epoch, sig_file, write_card, CardInputs};
pub use image::{embed_bootconf, parse_sections, read_bootconf, Section};

use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// Arguments of `nodeforge eeprom`.
#[derive(clap::Args)]
pub struct EepromArgs {
    /// Print the bootconf.txt embedded in this pieeprom.bin and exit.
    #[arg(long, value_name = "PIEEPROM", conflicts_with_all = ["output", "eeprom_out", "eeprom", "recovery", "set", "boot_order"])]
    pub show: Option<PathBuf>,
    /// Boot order: usb (0xf14), sd (0xf41), network (0xf21) or a hex BOOT_ORDER such as 0xf461.
    #[arg(long, value_name = "ORDER", default_value = "usb")]
    pub boot_order: String,
    /// Extra bootloader setting, e.g. USB_MSD_DISCOVER_TIMEOUT=20000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Local Pi 4 EEPROM image (pieeprom-YYYY-MM-DD.bin) instead of the pinned download.
    #[arg(long, value_name = "FILE")]
    pub eeprom: Option<PathBuf>,
    /// Local recovery.bin instead of the pinned download.
    #[arg(long, value_name = "FILE")]
    pub recovery: Option<PathBuf>,
    /// Where pinned firmware comes from (boxed: keeps the CLI enum small).
    #[command(flatten)]
    pub source: Box<SourceArgs>,
    /// Also write the EEPROM image with the new config alone (for `rpi-eeprom-update -d -f FILE`).
    #[arg(long, value_name = "FILE")]
    pub eeprom_out: Option<PathBuf>,
    /// Card image to write (MBR + FAT32, flash it to an SD card).
    #[arg(short = 'o', long = "output", value_name = "CARD.IMG")]
    pub output: Option<PathBuf>,
}

/// Options for fetching the pinned firmware files.
#[derive(clap::Args)]
pub struct SourceArgs {
    /// Pinned firmware list to use instead of the built-in firmware/rpi-eeprom.toml.
    #[arg(long, value_name = "TOML")]
    pub pins: Option<PathBuf>,
    /// Cache directory for downloads.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Never download; fail if a pinned file is not cached.
    #[arg(long)]
    pub offline: bool,
}

/// Run `nodeforge eeprom`.
pub fn cmd_eeprom(a: &EepromArgs) -> Result<()> {
    if let Some(path) = &a.show {
        print!("{}", show(path)?);
        return Ok(());
    }
    if a.output.is_none() && a.eeprom_out.is_none() {
        bail!(
            "nodeforge eeprom: give -o CARD.IMG to make a card, --eeprom-out FILE for the EEPROM \
             image alone, or --show PIEEPROM.BIN"
        );
    }
    let order: BootOrder = a.boot_order.parse()?;
    let extra = a
        .set
        .iter()
        .map(|s| parse_setting(s))
        .collect::<Result<Vec<_>>>()?;
    for k in unknown_keys(&extra) {
        eprintln!(
            "warning: {k} is not a Pi 4 bootloader setting nodeforge knows; writing it anyway"
        );
    }
    let conf = render_bootconf(order, &extra)?;

    let pins = pins::load_pins(a.source.pins.as_deref())?;
    let cache = a.source.cache_dir.as_deref();
    let eeprom_path = match &a.eeprom {
        Some(p) => p.clone(),
        None => {
            pins::require_verified(&pins.pieeprom, "EEPROM image", "--eeprom")?;
            pins::fetch_pin(&pins.pieeprom, "EEPROM image", cache, a.source.offline)?
        }
    };
    let original = read_file(&eeprom_path, "EEPROM image")?;
    let eeprom = embed_bootconf(&original, &conf)
        .with_context(|| format!("embedding bootconf.txt into {}", eeprom_path.display()))?;
    let sha = hex::encode(sha2::Sha256::digest(&eeprom));

    // Read every input before writing anything, so a bad input leaves no output.
    let recovery = match &a.output {
        None => None,
        Some(_) => {
            let recovery_path = match &a.recovery {
                Some(p) => p.clone(),
                None => {
                    pins::require_verified(&pins.recovery, "recovery.bin", "--recovery")?;
                    pins::fetch_pin(&pins.recovery, "recovery.bin", cache, a.source.offline)?
                }
            };
            let recovery = read_file(&recovery_path, "recovery.bin")?;
            if recovery.is_empty() {
                bail!("{}: recovery.bin is empty", recovery_path.display());
            }
            Some(recovery)
        }
    };

    if let Some(path) = &a.eeprom_out {
        crate::output::write_atomic(path, &eeprom)?;
        eprintln!("wrote {} (sha256 {sha})", path.display());
    }
    if let (Some(out), Some(recovery)) = (&a.output, recovery) {
        let sde = std::env::var("SOURCE_DATE_EPOCH").ok();
        // The release date in the file name: the local file's, or the pin's (not the cache path's).
        let eeprom_name = match &a.eeprom {
            Some(p) => p.file_name().and_then(|n| n.to_str()),
            None => Some(pins.pieeprom.file_name()),
        };
        let timestamp = card_epoch(sde.as_deref(), eeprom_name, &pins.release_date)?;
        let eeprom_source = match &a.eeprom {
            // Only the file name: the card must not depend on where the input sat.
            Some(p) => format!(
                "local file {}",
                p.file_name().map_or_else(
                    || p.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            ),
            None => pins.pieeprom.url.clone(),
        };
        let inputs = CardInputs {
            eeprom,
            recovery,
            bootconf: conf,
            timestamp,
            eeprom_source,
        };
        write_card(out, &inputs)?;
        eprintln!(
            "wrote {}: boot order {order} ({}), pieeprom.bin sha256 {sha}",
            out.display(),
            order.describe(),
        );
        eprintln!(
            "write it to an SD card, boot the Pi 4 from it and wait for the fast green blink; \
             then remove the card and boot from USB"
        );
    }
    Ok(())
}

/// The bootconf.txt embedded in the EEPROM image at `path`.
pub fn show(path: &Path) -> Result<String> {
    let image = read_file(path, "EEPROM image")?;
    read_bootconf(&image).with_context(|| format!("reading bootconf.txt from {}", path.display()))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}
