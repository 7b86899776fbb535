//! The cluster file, role profiles and node resolution; `init`, `check`, `render`.
//! OWNER: config/seed helper.

use anyhow::Result;

/// Arguments of `nodeforge init`.
#[derive(clap::Args)]
pub struct InitArgs {}
/// Arguments of `nodeforge check`.
#[derive(clap::Args)]
pub struct CheckArgs {}
/// Arguments of `nodeforge render`.
#[derive(clap::Args)]
pub struct RenderArgs {}

/// Run `nodeforge init`.
pub fn cmd_init(_a: &InitArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
/// Run `nodeforge check`.
pub fn cmd_check(_a: &CheckArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
/// Run `nodeforge render`.
pub fn cmd_render(_a: &RenderArgs) -> Result<()> {
    anyhow::bail!("not implemented")
}
