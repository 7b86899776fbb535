//! nodeforge: one cluster file in, one bootable k3s node image per node out.
//!
//! Data flows one way: `config` → `seed` (pure rendering) → `fetch` → `base` → `compose` → `output`.

pub mod addons;
pub mod base;
pub mod bmap;
pub mod ca;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod compose;
pub mod config;
pub mod disk;
pub mod eeprom;
pub mod fat;
pub mod fetch;
pub mod flash;
pub mod fsmap;
pub mod hash;
pub mod inspect;
pub mod lock;
pub mod output;
pub mod partition;
pub mod pi;
pub mod pipeline;
pub mod progress;
pub mod provenance;
pub mod release;
pub mod reseed;
pub mod sbom;
pub mod secrets;
pub mod seed;
pub mod sign;
pub mod sparse;
pub mod window;
pub mod yaml;
