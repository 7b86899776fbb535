//! Command-line interface: parses arguments and hands each subcommand to the module that owns it.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Build bootable disk images for home k3s clusters.
#[derive(Parser)]
#[command(name = "nodeforge", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write an example cluster.toml and a secrets file (mode 0600).
    Init(crate::commands::InitArgs),
    /// Validate the cluster file and print the plan.
    Check(crate::commands::CheckArgs),
    /// Write a node's seed files for inspection.
    Render(crate::commands::RenderArgs),
    /// Build node images.
    Build(crate::pipeline::BuildArgs),
    /// Prefetch every input a cluster needs and write nodeforge.lock.
    Fetch(crate::pipeline::FetchArgs),
    /// Show an image's partitions, family, seed and bundle.
    Inspect(crate::inspect::InspectArgs),
    /// Write an image to a USB stick, SSD or file, verified.
    Flash(crate::flash::FlashArgs),
    /// List removable disks.
    Devices(crate::flash::DevicesArgs),
    /// Make a Raspberry Pi 4 bootloader (EEPROM) card, or show an EEPROM's config.
    Eeprom(crate::eeprom::EepromArgs),
    /// Build the generic images of a cluster as release assets (xz, bmap, manifests, SHA256SUMS, lock).
    Release(crate::release::ReleaseArgs),
    /// Check a downloaded release: the signature of SHA256SUMS and every listed file's sha256.
    Verify(crate::provenance::VerifyArgs),
    /// Show public parts of the secrets file (`secrets sealing-cert`).
    Secrets(crate::addons::sealed_secrets::SecretsArgs),
}

/// Parse the command line and run it.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Init(a) => crate::commands::cmd_init(&a),
        Cmd::Check(a) => crate::commands::cmd_check(&a),
        Cmd::Render(a) => crate::commands::cmd_render(&a),
        Cmd::Build(a) => crate::pipeline::cmd_build(&a),
        Cmd::Fetch(a) => crate::pipeline::cmd_fetch(&a),
        Cmd::Inspect(a) => crate::inspect::cmd_inspect(&a),
        Cmd::Flash(a) => crate::flash::cmd_flash(&a),
        Cmd::Devices(a) => crate::flash::cmd_devices(&a),
        Cmd::Eeprom(a) => crate::eeprom::cmd_eeprom(&a),
        Cmd::Release(a) => crate::release::cmd_release(&a),
        Cmd::Verify(a) => crate::provenance::cmd_verify(&a),
        Cmd::Secrets(a) => crate::addons::sealed_secrets::cmd_secrets(&a),
    }
}
