#!/usr/bin/env bash
# Flash benchmark: nodeforge flash (verify included) vs `bmaptool copy` vs `dd bs=4M conv=fsync`
# on a ~2.6 GiB sparse image with ~62% of it mapped. Targets: nodeforge/bmaptool <= 1.0,
# dd/nodeforge >= 1.5. Set BENCH_STRICT=1 to exit non-zero when a target is missed.
# As root, the same three again onto loop devices (block devices over sparse files in BENCH_DIR):
# nodeforge flash (verify included) vs `bmaptool copy` to another loop device, and
# `dd bs=4M conv=fsync oflag=direct` to a third; BENCH_DEVICES=0 skips that part.
# Env: NODEFORGE (binary, default target/release/nodeforge), BENCH_DIR (default target/bench/flash),
#      BENCH_ROUNDS (default 2; the best time of the rounds is kept).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
NODEFORGE="${NODEFORGE:-$root/target/release/nodeforge}"
BENCH_DIR="${BENCH_DIR:-$root/target/bench/flash}"
ROUNDS="${BENCH_ROUNDS:-2}"

for t in bmaptool dd awk; do
  command -v "$t" >/dev/null || { echo "flash bench: $t is required" >&2; exit 2; }
done
[ -x "$NODEFORGE" ] || { echo "flash bench: no nodeforge binary at $NODEFORGE" >&2; exit 2; }

mkdir -p "$BENCH_DIR"
work="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"
loops=()
cleanup() {
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
img="$work/bench.img"
out="$work/out.img"

# 41 regions of 64 MiB = 2624 MiB (~2.6 GiB). In each, 40 MiB of data (62.5%): one 24 MiB run
# and 16 runs of 1 MiB separated by 1 MiB holes, like a file system with a few big files and
# scattered metadata. The data is a 64 MiB random chunk reused, so it is never all-zero.
echo "flash bench: load average at start: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
echo "flash bench: making a sparse image in $work"
head -c $((64 << 20)) /dev/urandom > "$work/chunk"
truncate -s $((41 * 64))M "$img"
for r in $(seq 0 40); do
  base=$((r * 64))
  dd if="$work/chunk" of="$img" bs=1M count=24 seek=$base conv=notrunc,sparse status=none
  for k in $(seq 0 15); do
    dd if="$work/chunk" of="$img" bs=1M skip=$((24 + k)) count=1 seek=$((base + 24 + 2 * k)) \
      conv=notrunc status=none
  done
done
rm -f "$work/chunk"
sync

"$NODEFORGE" flash --emit-bmap "$img.bmap" "$img"
mapped=$(sed -n 's|^ *<MappedBlocksCount> *\([0-9]*\) *</MappedBlocksCount>|\1|p' "$img.bmap")
total=$(sed -n 's|^ *<BlocksCount> *\([0-9]*\) *</BlocksCount>|\1|p' "$img.bmap")
size=$(stat -c %s "$img")
echo "flash bench: image $((size >> 20)) MiB, mapped $(awk "BEGIN{printf \"%.1f\", 100*$mapped/$total}")% ($((mapped * 4096 >> 20)) MiB)"

now() { date +%s.%N; }
# run_once NAME CMD...: time CMD on a fresh target and check the result; sets $dt.
run_once() {
  local name="$1"; shift
  rm -f "$out"; sync
  local t0 t1
  t0=$(now)
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "%U %S" -o "$work/cpu" "$@" >/dev/null 2>"$work/err" \
      || { echo "flash bench: $name failed:" >&2; cat "$work/err" >&2; exit 1; }
    cpu=$(awk '{print $1 + $2}' "$work/cpu")
  else
    "$@" >/dev/null 2>"$work/err" || { echo "flash bench: $name failed:" >&2; cat "$work/err" >&2; exit 1; }
    cpu=0
  fi
  t1=$(now)
  dt=$(awk "BEGIN{print $t1 - $t0}")
  cmp -s "$img" "$out" || { echo "flash bench: $name output differs from the image" >&2; exit 1; }
}
min() { if [ -z "$1" ]; then echo "$2"; else awk "BEGIN{print ($2 < $1) ? $2 : $1}"; fi; }

# Rounds are interleaved so a busy machine hurts every tool alike; the best time is kept.
t_nf=""; t_bm=""; t_dd=""
for round in $(seq 1 "$ROUNDS"); do
  run_once nodeforge "$NODEFORGE" flash "$img" "$out"; t_nf=$(min "$t_nf" "$dt")
  echo "flash bench: round $round nodeforge $dt s (cpu $cpu s)"
  run_once bmaptool bmaptool copy --bmap "$img.bmap" "$img" "$out"; t_bm=$(min "$t_bm" "$dt")
  echo "flash bench: round $round bmaptool  $dt s (cpu $cpu s)"
  run_once dd dd if="$img" of="$out" bs=4M conv=fsync; t_dd=$(min "$t_dd" "$dt")
  echo "flash bench: round $round dd        $dt s (cpu $cpu s)"
done
rm -f "$out"

# Block devices: loop devices over sparse files, one per tool, each checked with cmp.
dev_line=""
if [ "${BENCH_DEVICES:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
  for k in nf bm dd; do
    truncate -s "$size" "$work/dev-$k"
    l=$(losetup -f --show "$work/dev-$k") || { echo "flash bench: cannot attach a loop device" >&2; exit 1; }
    loops+=("$l")
  done
  d_nf=${loops[0]}; d_bm=${loops[1]}; d_dd=${loops[2]}
  # dev_once NAME DEV CMD...: time CMD writing DEV and compare DEV with the image; sets $dt.
  dev_once() {
    local name="$1" dev="$2"; shift 2
    sync
    local t0 t1
    t0=$(now)
    "$@" >/dev/null 2>"$work/err" || { echo "flash bench: $name failed:" >&2; cat "$work/err" >&2; exit 1; }
    t1=$(now)
    dt=$(awk "BEGIN{print $t1 - $t0}")
    cmp -s -n "$size" "$img" "$dev" || { echo "flash bench: $name: $dev differs from the image" >&2; exit 1; }
  }
  td_nf=""; td_bm=""; td_dd=""
  for round in $(seq 1 "$ROUNDS"); do
    dev_once nodeforge "$d_nf" "$NODEFORGE" flash --yes --force "$img" "$d_nf"; td_nf=$(min "$td_nf" "$dt")
    echo "flash bench: device round $round nodeforge $dt s"
    dev_once bmaptool "$d_bm" bmaptool copy --bmap "$img.bmap" "$img" "$d_bm"; td_bm=$(min "$td_bm" "$dt")
    echo "flash bench: device round $round bmaptool  $dt s"
    dev_once dd "$d_dd" dd if="$img" of="$d_dd" bs=4M conv=fsync oflag=direct; td_dd=$(min "$td_dd" "$dt")
    echo "flash bench: device round $round dd        $dt s"
  done
  rd_bm=$(awk "BEGIN{printf \"%.2f\", $td_nf / $td_bm}")
  rd_dd=$(awk "BEGIN{printf \"%.2f\", $td_dd / $td_nf}")
  dev_line="loop device: nodeforge $td_nf s, bmaptool copy $td_bm s, dd oflag=direct $td_dd s; nodeforge/bmaptool = $rd_bm (target <= 1.0), dd/nodeforge = $rd_dd"
else
  dev_line="loop device: skipped (needs root and losetup; BENCH_DEVICES=${BENCH_DEVICES:-1})"
fi

for n in nodeforge:$t_nf bmaptool:$t_bm dd:$t_dd; do
  printf 'flash bench: %-10s %7.2f s  %6.0f MB/s of image\n' "${n%%:*}" "${n#*:}" \
    "$(awk "BEGIN{print $size / ${n#*:} / 1e6}")"
done

echo "flash bench: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
r_bm=$(awk "BEGIN{printf \"%.2f\", $t_nf / $t_bm}")
r_dd=$(awk "BEGIN{printf \"%.2f\", $t_dd / $t_nf}")
ok_bm=$(awk "BEGIN{print ($r_bm <= 1.0) ? \"ok\" : \"MISSED\"}")
ok_dd=$(awk "BEGIN{print ($r_dd >= 1.5) ? \"ok\" : \"MISSED\"}")
echo "flash bench: nodeforge/bmaptool = $r_bm (target <= 1.0: $ok_bm)"
echo "flash bench: dd/nodeforge       = $r_dd (target >= 1.5: $ok_dd)"
echo "flash bench: $dev_line"
if [ "${BENCH_STRICT:-0}" = 1 ] && { [ "$ok_bm" != ok ] || [ "$ok_dd" != ok ]; }; then
  exit 1
fi
