#!/bin/sh
# nodeforge: take the secrets off the seed once the first boot has consumed it (the last first-boot
# step). The seed's user-data holds the cluster token and the node password; on Raspberry Pi OS and
# Ubuntu it sits on the boot FAT, which has no permissions, so every local user could read it. It is
# replaced by SCRUBBED: the same cloud-config without the files that carry secrets. meta-data is
# left alone, so the instance-id stays and cloud-init never re-runs its per-instance modules.
# The old bytes are overwritten in place (FAT rewrites a file's data where it lies) before the new
# file is renamed over them, so they do not linger in free clusters of the stick either.
# usage: scrub-seed.sh SEED SCRUBBED
#   SEED as for install-k3s.sh: a mounted directory (/boot/firmware), or LABEL=CIDATA (mounted
#   read-write on a temporary dir here, unmounted after).
# NODEFORGE_ROOT (tests only): prefix for the files checked on the root filesystem.
set -eu
seed="$1"
scrubbed="$2"
root="${NODEFORGE_ROOT:-}"
# The secrets must be on the root filesystem before they leave the seed: nothing could bring them back.
for f in /etc/rancher/k3s/config.yaml /etc/rancher/node/password; do
  if [ ! -s "$root$f" ]; then
    echo "nodeforge: $f is missing or empty: the seed keeps its secrets" >&2
    exit 1
  fi
done
if [ ! -s "$scrubbed" ]; then
  echo "nodeforge: no scrubbed user-data at $scrubbed: the seed keeps its secrets" >&2
  exit 1
fi
case "$seed" in
LABEL=*)
  label="${seed#LABEL=}"
  dev="$(blkid -l -o device -t "LABEL=$label" 2>/dev/null || true)"
  [ -n "$dev" ] || dev="/dev/disk/by-label/$label"
  tmp="$(mktemp -d)"
  mount -o rw "$dev" "$tmp"
  trap 'umount "$tmp" && rmdir "$tmp"' EXIT
  dir="$tmp"
  ;;
*)
  dir="$seed"
  ;;
esac
ud="$dir/user-data"
if [ ! -f "$ud" ]; then
  echo "nodeforge: no user-data in $dir" >&2
  exit 1
fi
if cmp -s "$scrubbed" "$ud"; then
  echo "nodeforge: the seed in $seed holds no secrets (already scrubbed)"
  exit 0
fi
new="$dir/user-data.nodeforge-new"
cp "$scrubbed" "$new"
size="$(wc -c <"$ud")"
head -c "$size" /dev/zero | dd of="$ud" conv=notrunc,fsync status=none
mv -f "$new" "$ud"
sync
echo "nodeforge: secrets removed from the seed in $seed (instance-id kept)"
