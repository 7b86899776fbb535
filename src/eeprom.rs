//! Raspberry Pi 4 bootloader EEPROM: embed/read bootconf.txt, make a recovery card.
//! OWNER: eeprom helper.

use anyhow::Result;

/// Arguments of `nodeforge eeprom`.
#[derive(clap::Args)]
pub struct EepromArgs {}

/// Run `nodeforge eeprom`.
pub fn cmd_eeprom(_a: &EepromArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
