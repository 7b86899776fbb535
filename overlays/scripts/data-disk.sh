#!/bin/sh
# nodeforge: prepare a node's data disk. Formats it ONLY when blkid finds no filesystem and no
# partition table on it (a rebuilt node must never wipe its data), then mounts it by UUID via fstab.
# usage: data-disk.sh DEVICE MOUNTPOINT
set -eu
dev="$1"
mnt="$2"
i=0
while [ ! -b "$dev" ] && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
if [ ! -b "$dev" ]; then
  echo "nodeforge: data disk $dev not found; not formatting anything" >&2
  exit 1
fi
# blkid -p exits 2 when the device holds no recognisable signature (filesystem, RAID, partition table).
rc=0
blkid -p "$dev" >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 2 ]; then
  echo "nodeforge: $dev is empty: creating ext4"
  mkfs.ext4 -q -L nodeforge-data "$dev"
elif [ "$rc" -ne 0 ]; then
  echo "nodeforge: blkid failed on $dev ($rc); not formatting" >&2
  exit 1
fi
uuid="$(blkid -s UUID -o value "$dev" || true)"
fstype="$(blkid -s TYPE -o value "$dev" || true)"
if [ -z "$uuid" ] || [ -z "$fstype" ]; then
  echo "nodeforge: $dev holds no filesystem with a UUID (a partition table?): mount it yourself" >&2
  exit 1
fi
mkdir -p "$mnt"
if ! grep -q "^UUID=$uuid " /etc/fstab; then
  printf 'UUID=%s %s %s defaults,nofail 0 2\n' "$uuid" "$mnt" "$fstype" >>/etc/fstab
fi
mountpoint -q "$mnt" || mount "$mnt"
echo "nodeforge: data disk $dev ($fstype) mounted at $mnt"
