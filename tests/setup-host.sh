#!/usr/bin/env bash
# Installs every system package nodeforge's build and tests need (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
PKGS=(build-essential pkg-config cmake clang curl ca-certificates xz-utils zstd
  dosfstools mtools fdisk gdisk e2fsprogs bmap-tools cloud-init
  mmdebstrap qemu-system-x86 ovmf qemu-system-arm qemu-efi-aarch64 qemu-user-static binfmt-support arch-test)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
