#!/bin/sh
# nodeforge: install k3s from the bundle on the seed FAT (last first-boot step).
# usage: install-k3s.sh server|agent SEED
#   SEED = a mounted directory (/boot/firmware on Raspberry Pi OS and Ubuntu), or LABEL=CIDATA for the
#   seed partition that Debian does not mount (mounted read-only on a temporary dir, unmounted after).
# Bundle layout on the seed FAT: nodeforge/k3s, nodeforge/install.sh, nodeforge/images/, nodeforge/bundle.json
# NODEFORGE_ROOT (tests only): prefix for the installed files.
set -eu
role="$1"
seed="$2"
root="${NODEFORGE_ROOT:-}"
case "$seed" in
LABEL=*)
  label="${seed#LABEL=}"
  dev="$(blkid -l -o device -t "LABEL=$label" 2>/dev/null || true)"
  [ -n "$dev" ] || dev="/dev/disk/by-label/$label"
  tmp="$(mktemp -d)"
  mount -o ro "$dev" "$tmp"
  trap 'umount "$tmp" && rmdir "$tmp"' EXIT
  dir="$tmp"
  ;;
*)
  dir="$seed"
  ;;
esac
bundle="$dir/nodeforge"
if [ ! -f "$bundle/k3s" ] || [ ! -f "$bundle/install.sh" ]; then
  echo "nodeforge: no k3s bundle in $bundle" >&2
  exit 1
fi
install -D -m 0755 "$bundle/k3s" "$root/usr/local/bin/k3s"
images="$root/var/lib/rancher/k3s/agent/images"
mkdir -p "$images"
if [ -d "$bundle/images" ]; then
  for f in "$bundle"/images/*; do
    if [ -f "$f" ]; then cp "$f" "$images/"; fi
  done
fi
INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_EXEC="$role" sh "$bundle/install.sh"
echo "nodeforge: k3s $role installed"
