//! `nodeforge inspect`: describe an image.

use anyhow::Result;

/// Arguments of `nodeforge inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {}

/// Run `nodeforge inspect`.
pub fn cmd_inspect(_a: &InspectArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
