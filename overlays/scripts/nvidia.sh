#!/bin/sh
# nodeforge: NVIDIA driver + nvidia-container-toolkit, installed before the k3s agent first starts so
# k3s finds nvidia-container-runtime in $PATH and registers the `nvidia` runtime (docs/gpu-and-storage.md).
set -eu
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release
apt-get update
apt-get install -y curl gnupg ca-certificates
if [ "${ID:-}" = ubuntu ]; then
  apt-get install -y ubuntu-drivers-common
  ubuntu-drivers install
else
  # Debian: the driver and GSP firmware live in non-free / non-free-firmware.
  cat >/etc/apt/sources.list.d/nodeforge-nonfree.sources <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  apt-get update
  apt-get install -y "linux-headers-$(uname -r)" linux-headers-amd64 nvidia-driver firmware-nvidia-gsp
fi
key=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o "$key"
curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list |
  sed "s#deb https://#deb [signed-by=$key] https://#g" >/etc/apt/sources.list.d/nvidia-container-toolkit.list
apt-get update
apt-get install -y nvidia-container-toolkit
echo "nodeforge: NVIDIA driver and container toolkit installed"
