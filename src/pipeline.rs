//! The build pipeline: config → fetch → base → seed → compose → output.

use anyhow::Result;

/// Arguments of `nodeforge build`.
#[derive(clap::Args)]
pub struct BuildArgs {}
/// Arguments of `nodeforge fetch`.
#[derive(clap::Args)]
pub struct FetchArgs {}

/// Run `nodeforge build`.
pub fn cmd_build(_a: &BuildArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
/// Run `nodeforge fetch`.
pub fn cmd_fetch(_a: &FetchArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
