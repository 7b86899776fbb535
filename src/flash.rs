//! Flash images to block devices or files using their bmap, verified; list removable disks.
//! OWNER: flash helper.

use anyhow::Result;

/// Arguments of `nodeforge flash`.
#[derive(clap::Args)]
pub struct FlashArgs {}

/// Arguments of `nodeforge devices`.
#[derive(clap::Args)]
pub struct DevicesArgs {}

/// Run `nodeforge flash`.
pub fn cmd_flash(_a: &FlashArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}

/// Run `nodeforge devices`.
pub fn cmd_devices(_a: &DevicesArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
