#!/usr/bin/env bash
# mkfixture.sh DIR [raw] — a Raspberry Pi OS Lite–shaped benchmark base, cached in DIR:
#   DIR/base.img.xz   ~2.6 GiB disk (MBR, FAT32 `bootfs`, 2600 MiB ext4 `rootfs`) holding ~1.6 GiB
#                     of data, compressed with `xz -T2 -6` (multi-block, like the upstream image);
#   DIR/base.img      with `raw`: the sparse raw disk instead (no compression).
# The root filesystem is mkbase.sh's raspios root plus ~1.5 GiB of this host's /usr/share and
# /usr/lib files (real binaries, libraries and text: partially compressible, like a distro).
# A stamp records the knobs, so a rerun with the same knobs returns at once.
# Env: BENCH_DATA_MB (default 1500) data added to the root; BENCH_ROOT_MB (default 2600);
#      BENCH_FIXTURE_XZ (default -6) the xz preset of base.img.xz.
set -euo pipefail

DIR=${1:?usage: mkfixture.sh DIR}
DATA_MB=${BENCH_DATA_MB:-1500}
ROOT_MB=${BENCH_ROOT_MB:-2600}
MODE=${2:-xz}
PRESET=${BENCH_FIXTURE_XZ:--6}
case "$MODE" in xz) out=base.img.xz ;; raw) out=base.img; PRESET=none ;; *) echo "mkfixture: mode is xz or raw" >&2; exit 2 ;; esac
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
stamp="v2 data=$DATA_MB root=$ROOT_MB $MODE $PRESET $(sha256sum "$root/tests/fixtures/mkbase.sh" | cut -c1-16)"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
if [ -f "$DIR/$out" ] && [ "$(cat "$DIR/stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
for t in debugfs mke2fs xz dd find awk; do
  command -v "$t" >/dev/null || { echo "mkfixture: missing tool $t (see tests/setup-host.sh)" >&2; exit 1; }
done
rm -f "$DIR/base.img.xz" "$DIR/base.img" "$DIR/stamp"
work="$(mktemp -d "$DIR/fixture.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export TZ=UTC LC_ALL=C E2FSPROGS_FAKE_TIME=${SOURCE_DATE_EPOCH:-1700000000}

echo "bench fixture: raspios base with a ${ROOT_MB} MiB root and ~${DATA_MB} MiB of data (one-off, cached)"
MKBASE_ROOT_MB=$ROOT_MB bash "$root/tests/fixtures/mkbase.sh" raspios "$work/disk.img"

# mkbase's raspios layout: p2 (rootfs) starts at sector 16384 + 131072.
p2=$((16384 + 131072))
dd if="$work/disk.img" of="$work/root-small.img" bs=1M iflag=skip_bytes skip=$((p2 * 512)) \
  count="$ROOT_MB" conv=sparse status=none
mkdir "$work/root"
debugfs -R "rdump / $work/root" "$work/root-small.img" >/dev/null 2>&1
rm -f "$work/root-small.img"
# rdump may nest the tree one level down depending on the e2fsprogs version.
[ -f "$work/root/etc/os-release" ] || { echo "mkfixture: debugfs rdump did not extract the root" >&2; exit 1; }
rm -rf "$work/root/lost+found"

# Pick regular files below 16 MiB, in path order, until the budget is reached; hard-link them
# into the tree when possible (same filesystem), else copy them.
budget=$((DATA_MB << 20))
find /usr/share /usr/lib -xdev -type f -size -16M -readable -printf '%s %p\n' 2>/dev/null \
  > "$work/all" || true
sort -k2 "$work/all" | awk -v b="$budget" 's + $1 > b { exit } { s += $1; sub(/^[0-9]+ /, ""); print }' \
  > "$work/list" || true
mkdir -p "$work/root/opt/data"
sed 's|^/||' "$work/list" > "$work/rel"
(cd / && xargs -d '\n' cp -l --parents -t "$work/root/opt/data" < "$work/rel") 2>/dev/null \
  || (cd / && xargs -d '\n' cp --parents -t "$work/root/opt/data" < "$work/rel")
echo "bench fixture: $(wc -l < "$work/list") files, $(du -sm --apparent-size "$work/root" | cut -f1) MiB in the root"

mke2fs -q -F -t ext4 -L rootfs -U 7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d \
  -E hash_seed=4a1f2b3c-0d9e-4c8b-a7f6-5e4d3c2b1a09,root_owner=0:0 \
  -d "$work/root" "$work/root.img" "${ROOT_MB}M" >/dev/null
rm -rf "$work/root"
dd if="$work/root.img" of="$work/disk.img" bs=1M oflag=seek_bytes seek=$((p2 * 512)) \
  conv=notrunc,sparse status=none
rm -f "$work/root.img"
if [ "$MODE" = raw ]; then
  mv "$work/disk.img" "$DIR/base.img"
else
  echo "bench fixture: compressing with xz -T2 $PRESET"
  xz -T2 "$PRESET" -c "$work/disk.img" > "$work/base.img.xz"
  mv "$work/base.img.xz" "$DIR/base.img.xz"
fi
echo "$stamp" > "$DIR/stamp"
ls -l "$DIR/$out"
