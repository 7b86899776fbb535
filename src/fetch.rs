//! Pinned, cached, resumable fetching of every input; the k3s bundle.
//! OWNER: fetch helper.

use serde::{Deserialize, Serialize};

/// CPU architecture of a node image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The name k3s release assets use (`amd64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}
