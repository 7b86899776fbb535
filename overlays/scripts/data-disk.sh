#!/bin/sh
# nodeforge: prepare a node's data disk. Formats it ONLY when blkid finds no filesystem and no
# partition table on it (a rebuilt node must never wipe its data), then mounts it by UUID via fstab.
# usage: data-disk.sh DEVICE MOUNTPOINT
# NODEFORGE_ROOT (tests only): prefix for /etc/fstab and the mount point; DEVICE may be a regular file
# and nothing is mounted.
set -eu
dev="$1"
root="${NODEFORGE_ROOT:-}"
mnt="$root$2"
fstab="$root/etc/fstab"
isdev() { [ -b "$1" ] || { [ -n "$root" ] && [ -f "$1" ]; }; }
# USB disks may appear a little after boot: wait up to 30 s (not in tests).
i=0
tries=30
[ -z "$root" ] || tries=0
while ! isdev "$dev" && [ "$i" -lt "$tries" ]; do sleep 1; i=$((i + 1)); done
if ! isdev "$dev"; then
  echo "nodeforge: data disk $dev not found; not formatting anything" >&2
  exit 1
fi
# blkid -p exits 2 when the device holds no recognisable signature (filesystem, RAID, partition table).
rc=0
blkid -p "$dev" >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 2 ]; then
  echo "nodeforge: $dev is empty: creating ext4"
  mkfs.ext4 -q -L nodeforge-data "$dev" </dev/null
elif [ "$rc" -ne 0 ]; then
  echo "nodeforge: blkid failed on $dev ($rc); not formatting" >&2
  exit 1
fi
uuid="$(blkid -p -s UUID -o value "$dev" || true)"
fstype="$(blkid -p -s TYPE -o value "$dev" || true)"
if [ -z "$uuid" ] || [ -z "$fstype" ]; then
  echo "nodeforge: $dev holds no filesystem with a UUID (a partition table?): mount it yourself" >&2
  exit 1
fi
mkdir -p "$mnt"
mkdir -p "$(dirname "$fstab")"
touch "$fstab"
if ! grep -q "^UUID=$uuid " "$fstab"; then
  printf 'UUID=%s %s %s defaults,nofail 0 2\n' "$uuid" "$2" "$fstype" >>"$fstab"
fi
[ -n "$root" ] || mountpoint -q "$mnt" || mount "$mnt"
echo "nodeforge: data disk $dev ($fstype) mounted at $mnt"
