#!/bin/sh
# nodeforge: GPU setup of a gpu-worker. Run once by cloud-init before the k3s agent first starts (so
# k3s finds nvidia-container-runtime in $PATH and registers the `nvidia` runtime), then by
# nodeforge-gpu-setup.service on every boot until it has succeeded. It never stops the node from
# joining: a failure (no NVIDIA GPU, no network to the package repositories, a card the driver does
# not drive) is recorded and the next boot tries again.
#  - nouveau (Debian's driver for NVIDIA cards) is blacklisted and the initramfs rebuilt before the
#    driver is installed; the first boot then reboots once (cloud-init power_state) when
#    /run/nodeforge/gpu-reboot exists.
#  - State: /var/lib/nodeforge/gpu-setup (`ok`, `installed, reboot pending` or `failed: why`), the
#    unit's status (`systemctl status nodeforge-gpu-setup`), and the node label
#    nodeforge.io/gpu-setup=ok|pending|failed: set at registration from
#    /etc/rancher/k3s/config.yaml.d/50-nodeforge-gpu.yaml, and with the node's own kubelet
#    credentials once the node is registered (k3s applies node-label only at registration).
#  - nvidia.com/gpu.present=true (what the device plugin's affinity selects) goes with `ok` only:
#    a node whose setup failed or waits for its reboot does not attract GPU pods or the plugin;
#    it is taken off again if a later setup fails.
# NODEFORGE_ROOT (tests only): prefix for files read and written (state, config, apt sources, sysfs).
set -u
export DEBIAN_FRONTEND=noninteractive
root="${NODEFORGE_ROOT:-}"
statedir="$root/var/lib/nodeforge"
state="$statedir/gpu-setup"
dropin="$root/etc/rancher/k3s/config.yaml.d/50-nodeforge-gpu.yaml"
blacklist="$root/etc/modprobe.d/nodeforge-blacklist-nouveau.conf"
kubeconfig="$root/var/lib/rancher/k3s/agent/kubelet.kubeconfig"
# A repository that cannot be reached fails `apt-get update` (by default it only warns).
apt="apt-get -o APT::Update::Error-Mode=any -o DPkg::Lock::Timeout=300 -o Acquire::Retries=2 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30"
mkdir -p "$statedir" "$root/run/nodeforge"
step() { echo "nodeforge-gpu: $*"; }

label_value() { case "$1" in ok) echo ok ;; installed*) echo pending ;; *) echo failed ;; esac; }

# The label follows the state: written for registration into the k3s config drop-in, and put on
# the registered node with its kubelet credentials (allowed to label its own Node object).
sync_label() {
  v="$(label_value "$(cat "$state" 2>/dev/null)")"
  was="$(cat "$statedir/gpu-setup.label" 2>/dev/null)"
  mkdir -p "$(dirname "$dropin")"
  {
    printf '# nodeforge: GPU setup outcome, applied when the node registers\nnode-label+:\n- nodeforge.io/gpu-setup=%s\n' "$v"
    [ "$v" = ok ] && printf -- '- nvidia.com/gpu.present=true\n'
  } >"$dropin"
  [ "$was" = "$v" ] && return 0
  # The labels for kubectl: gpu.present with ok; removed ("KEY-") when it was ok before.
  labels="nodeforge.io/gpu-setup=$v"
  if [ "$v" = ok ]; then
    labels="$labels nvidia.com/gpu.present=true"
  elif [ "$was" = ok ]; then
    labels="$labels nvidia.com/gpu.present-"
  fi
  if [ -s "$kubeconfig" ]; then
    node="$(hostname)"
    i=0
    # shellcheck disable=SC2086 # $labels: one word per label
    until k3s kubectl --kubeconfig "$kubeconfig" label --overwrite node "$node" $labels >/dev/null 2>&1; do
      i=$((i + 1))
      if [ "$i" -ge 12 ]; then
        step "could not label node $node (API unreachable?); tried again at the next boot"
        return 0
      fi
      sleep 10
    done
    step "node $node labelled $labels"
  fi
  printf '%s\n' "$v" >"$statedir/gpu-setup.label"
}

record() {
  printf '%s\n' "$1" >"$state"
  sync_label
}

fail() {
  step "FAILED: $* (the node joins without a GPU; setup is retried at the next boot)" >&2
  record "failed: $*"
  exit 1
}

# 1. An NVIDIA display device (PCI vendor 0x10de, class 0x03xxxx) must be present.
gpu=""
for d in "$root"/sys/bus/pci/devices/*; do
  [ -r "$d/vendor" ] || continue
  if [ "$(cat "$d/vendor")" = 0x10de ]; then
    case "$(cat "$d/class" 2>/dev/null)" in 0x03*) gpu="${d##*/}" ;; esac
  fi
done
[ -n "$gpu" ] || fail "no NVIDIA GPU found on the PCI bus"
step "NVIDIA GPU at $gpu"

# Already done (or installed before the first-boot reboot): the driver answers, the runtime is there.
if command -v nvidia-container-runtime >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  record ok
  step "NVIDIA driver and container toolkit ready"
  exit 0
fi

# 2. nouveau off before the driver goes in (it takes the card otherwise).
if [ ! -f "$blacklist" ] || [ ! -e "$statedir/initramfs-nouveau" ]; then
  mkdir -p "$(dirname "$blacklist")"
  printf 'blacklist nouveau\noptions nouveau modeset=0\n' >"$blacklist"
  if command -v update-initramfs >/dev/null 2>&1; then
    update-initramfs -u || fail "update-initramfs failed"
  fi
  : >"$statedir/initramfs-nouveau"
fi

# 3. Driver and container toolkit.
. "$root/etc/os-release"
$apt update || fail "apt-get update failed (no network to the package repositories?)"
$apt install -y curl gnupg ca-certificates || fail "cannot install curl, gnupg"
if [ "${ID:-}" = ubuntu ]; then
  $apt install -y ubuntu-drivers-common || fail "cannot install ubuntu-drivers-common"
  ubuntu-drivers install || fail "ubuntu-drivers install failed"
else
  # Debian: the driver and GSP firmware live in contrib / non-free / non-free-firmware.
  cat >"$root/etc/apt/sources.list.d/nodeforge-nonfree.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  $apt update || fail "apt-get update failed (non-free sources)"
  $apt install -y "linux-headers-$(uname -r)" linux-headers-amd64 nvidia-driver firmware-nvidia-gsp ||
    fail "cannot install nvidia-driver"
fi
key="$root/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
mkdir -p "$(dirname "$key")"
curl -fsSL --retry 2 --max-time 60 https://nvidia.github.io/libnvidia-container/gpgkey |
  gpg --batch --yes --dearmor -o "$key" || fail "cannot fetch the NVIDIA repository key"
list="$(curl -fsSL --retry 2 --max-time 60 https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list)" ||
  fail "cannot fetch the NVIDIA repository list"
printf '%s\n' "$list" | sed "s#deb https://#deb [signed-by=${key#"$root"}] https://#g" \
  >"$root/etc/apt/sources.list.d/nvidia-container-toolkit.list"
$apt update || fail "apt-get update failed (NVIDIA repository)"
$apt install -y nvidia-container-toolkit || fail "cannot install nvidia-container-toolkit"

# 4. Driver loaded? nouveau still holding the card means the first-boot reboot is due.
if [ -d "$root/sys/module/nouveau" ] && [ ! -d "$root/sys/module/nvidia" ]; then
  : >"$root/run/nodeforge/gpu-reboot"
  record "installed, reboot pending"
  step "driver installed; nouveau holds the card until the reboot"
  exit 0
fi
modprobe nvidia 2>/dev/null || true
if ! nvidia-smi -L >/dev/null 2>&1; then
  fail "nvidia-smi finds no usable GPU (card not supported by this driver?)"
fi
record ok
# k3s looks for nvidia-container-runtime when it starts: restart a running agent so it registers it.
if systemctl is-active --quiet k3s-agent 2>/dev/null; then
  systemctl restart --no-block k3s-agent || true
fi
step "NVIDIA driver and container toolkit ready"
