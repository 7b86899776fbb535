#!/usr/bin/env bash
# `make bench`: nodeforge build speed and memory against the plain tools, in one run on one base
# (a Raspberry Pi OS Lite–shaped image of ~2.6 GiB holding ~1.6 GiB, see mkfixture.sh):
#   1. warm build (base already unpacked in the cache) / `cp --sparse=always` of the cached raw  <= 1.2
#   2. cold build (empty cache)                         / `xz -dc base.img.xz > /dev/null`        <= 1.1
#   3. the `--compress xz` step                         / `xz -T2 -6 -c` of the same raw          <= 1.0
#      and the .img.xz size within 1% of xz's. xz -6 runs at a few MB/s per core, so this one
#      uses a smaller base of the same shape (BENCH_XZ_DATA_MB of data in a BENCH_XZ_ROOT_MB root,
#      default 300 in 600) to keep `make bench` within ~10 minutes.
#   4. peak RSS of the builds (`/usr/bin/time`, Maximum resident set size)                      <= 200 MiB
# Then the flash benchmark (tests/bench/flash.sh). The summary goes to target/bench/results.txt.
# Env: NODEFORGE (binary), BENCH_DIR (default target/bench), BENCH_ROUNDS (default 2: best of the
#      rounds for the warm build and cp), BENCH_STRICT=1 (exit 1 when a target is missed),
#      BENCH_NO_FLASH=1 (skip flash.sh), BENCH_DATA_MB / BENCH_ROOT_MB / BENCH_FIXTURE_XZ (the
#      fixture, see mkfixture.sh), BENCH_XZ_DATA_MB / BENCH_XZ_ROOT_MB (the base of measure 3).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
NODEFORGE="${NODEFORGE:-$root/target/release/nodeforge}"
B="${BENCH_DIR:-$root/target/bench}"
ROUNDS="${BENCH_ROUNDS:-2}"
TIME=/usr/bin/time

[ -x "$NODEFORGE" ] || { echo "bench: no nodeforge binary at $NODEFORGE (cargo build --release)" >&2; exit 2; }
[ -x "$TIME" ] || { echo "bench: $TIME is required (apt-get install time)" >&2; exit 2; }
for t in xz cp awk sha256sum; do
  command -v "$t" >/dev/null || { echo "bench: $t is required" >&2; exit 2; }
done
case "$B" in /*) ;; *) B="$PWD/$B" ;; esac
NODEFORGE="$(cd "$(dirname "$NODEFORGE")" && pwd)/$(basename "$NODEFORGE")"

bench_start=$(date +%s)
bash "$root/tests/bench/mkfixture.sh" "$B/fixture"
base_xz="$B/fixture/base.img.xz"
BENCH_DATA_MB=${BENCH_XZ_DATA_MB:-300} BENCH_ROOT_MB=${BENCH_XZ_ROOT_MB:-600} \
  bash "$root/tests/bench/mkfixture.sh" "$B/fixture-xz" raw

work="$B/run"
rm -rf "$work"
mkdir -p "$work"
# Logs of every timed command are kept in $B/logs; the rest of the run is removed.
trap 'mkdir -p "$B/logs"; cp "$work"/*.log "$B/logs/" 2>/dev/null; rm -rf "$work"' EXIT
cache="$work/cache"

# mkcluster DIR BASE: a one-node cluster on BASE with a file:// k3s mirror (stand-in binaries
# of 16 MiB), secrets created.
mkcluster() {
  local c="$1" base="$2" a bin
  mkdir -p "$c/mirror"
  ln -s "$base" "$c/$(basename "$base")"
  for a in amd64 arm64; do
    bin=k3s; [ $a = arm64 ] && bin=k3s-arm64
    head -c $((16 << 20)) /dev/urandom > "$c/mirror/$bin"
    (cd "$c/mirror" && sha256sum "$bin" > "sha256sum-$a.txt")
  done
  printf '#!/bin/sh\necho install\n' > "$c/mirror/install.sh"
  cat > "$c/cluster.toml" <<EOF
[cluster]
name = "bench"
k3s_version = "v1.33.5+k3s1"
server = "https://10.0.0.10:6443"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx bench@nodeforge"]
[boards.rpi4]
base = "$(basename "$base")"
sha256 = "$(sha256sum "$base" | cut -d' ' -f1)"
[k3s]
mirror = "file://$c/mirror"
[[nodes]]
hostname = "cp1"
role = "server"
board = "rpi4"
address = "10.0.0.10/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
EOF
  "$NODEFORGE" init --update -c "$c/cluster.toml" >/dev/null 2>"$c/init.log" \
    || { echo "bench: nodeforge init failed:" >&2; cat "$c/init.log" >&2; exit 1; }
}
c="$work/cluster"
mkcluster "$c" "$base_xz"
mkcluster "$work/cluster-xz" "$B/fixture-xz/base.img"

drop_caches() { sync; { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || true; }
# timed NAME CMD...: run CMD under /usr/bin/time; sets $dt (s) and $rss (KiB); output in $work/NAME.log.
timed() {
  local name="$1"; shift
  if ! "$TIME" -f '%e %M' -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.log"; then
    echo "bench: $name failed:" >&2; tail -20 "$work/$name.log" >&2; exit 1
  fi
  read -r dt rss < "$work/$name.time"
  echo "bench: $name $dt s, max RSS $((rss >> 10)) MiB"
}
min() { if [ -z "$1" ]; then echo "$2"; else awk "BEGIN{print ($2 < $1) ? $2 : $1}"; fi; }
max() { if [ -z "$1" ]; then echo "$2"; else awk "BEGIN{print ($2 > $1) ? $2 : $1}"; fi; }
build=("$NODEFORGE" build cp1 -c "$c/cluster.toml" --cache-dir "$cache")
peak=""

# 2. Cold: nothing in the nodeforge cache, nothing in the page cache, for both.
drop_caches
timed xz-dc sh -c "xz -dc '$base_xz' > /dev/null"
t_xzdc=$dt
drop_caches
timed cold-build "${build[@]}" -o "$work/out-cold"
t_cold=$dt; peak=$(max "$peak" "$rss")
img="$work/out-cold/cp1/cp1.img"
raw=$(ls "$cache"/raw/*.raw)
echo "bench: base $(($(stat -c %s "$raw") >> 20)) MiB, $(($(du -k "$raw" | cut -f1) >> 10)) MiB of data;" \
  "image $(($(stat -c %s "$img") >> 20)) MiB, $(($(du -k "$img" | cut -f1) >> 10)) MiB of data;" \
  "base.img.xz $(($(stat -c %s "$base_xz") >> 20)) MiB"

# 1. Warm: the base is unpacked in the cache. Rounds are interleaved; the best time is kept.
t_cp=""; t_warm=""
for r in $(seq 1 "$ROUNDS"); do
  rm -f "$work/cp.raw"; sync
  timed "cp-$r" cp --sparse=always "$raw" "$work/cp.raw"
  t_cp=$(min "$t_cp" "$dt")
  rm -rf "$work/out-warm"; sync
  timed "warm-build-$r" "${build[@]}" -o "$work/out-warm"
  t_warm=$(min "$t_warm" "$dt"); peak=$(max "$peak" "$rss")
done
rm -f "$work/cp.raw"
cmp -s "$img" "$work/out-warm/cp1/cp1.img" || { echo "bench: warm and cold builds differ" >&2; exit 1; }
rm -rf "$work/out-warm"

# 3. xz: the same raw image, compressed by xz and by nodeforge's compression step (whose own
# "compressing ...: done in N s" line is the step time; the whole build time is shown too).
timed xz-prep "$NODEFORGE" build cp1 -c "$work/cluster-xz/cluster.toml" --cache-dir "$work/cache-xz" \
  -o "$work/out-xz"
peak=$(max "$peak" "$rss")
img_xz="$work/out-xz/cp1/cp1.img"
timed xz-ref sh -c "xz -T2 -6 -c '$img_xz' > '$work/ref.img.xz'"
t_xzref=$dt; rss_xzref=$rss
timed xz-build "$NODEFORGE" build cp1 -c "$work/cluster-xz/cluster.toml" --cache-dir "$work/cache-xz" \
  -o "$work/out-xz2" --compress xz
t_xzbuild=$dt; rss_xz=$rss
t_xz=$(sed -n 's/^compressing cp1\.img\.xz: done in \([0-9.]*\) s$/\1/p' "$work/xz-build.log" | tail -1)
[ -n "$t_xz" ] || { echo "bench: no compression step time in the build log" >&2; exit 1; }
s_ref=$(stat -c %s "$work/ref.img.xz")
s_nf=$(stat -c %s "$work/out-xz2/cp1/cp1.img.xz")
cmp -s "$img_xz" "$work/out-xz2/cp1/cp1.img" || { echo "bench: the two xz-base builds differ" >&2; exit 1; }
xz -dc "$work/out-xz2/cp1/cp1.img.xz" | cmp -s - "$img_xz" \
  || { echo "bench: cp1.img.xz does not decompress to the image" >&2; exit 1; }
xz_img_mb=$(($(stat -c %s "$img_xz") >> 20)); xz_data_mb=$(($(du -k "$img_xz" | cut -f1) >> 10))
rm -rf "$work/out-xz" "$work/out-xz2" "$work/ref.img.xz"

# Summary.
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
verdict() { awk "BEGIN{print ($1 <= $2) ? \"ok\" : \"MISSED\"}"; }
r1=$(ratio "$t_warm" "$t_cp"); r2=$(ratio "$t_cold" "$t_xzdc"); r3=$(ratio "$t_xz" "$t_xzref")
rs=$(awk "BEGIN{printf \"%.4f\", $s_nf / $s_ref}")
ds=$(awk "BEGIN{d = $s_nf / $s_ref - 1; if (d < 0) d = -d; printf \"%.4f\", d}")
pm=$(awk "BEGIN{printf \"%.0f\", $peak / 1024}")
missed=0
results="$B/results.txt"
{
  echo "nodeforge bench $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "base: $(($(stat -c %s "$raw") >> 20)) MiB raw, $(($(du -k "$raw" | cut -f1) >> 10)) MiB data;" \
    "measure 3 on a $xz_img_mb MiB image with $xz_data_mb MiB data"
  printf '%-46s %9s %9s %7s %8s %s\n' measure nodeforge reference ratio target result
  printf '%-46s %8.2fs %8.2fs %7s %8s %s\n' "1. warm build / cp --sparse=always raw" "$t_warm" "$t_cp" "$r1" "<= 1.2" "$(verdict "$r1" 1.2)"
  printf '%-46s %8.2fs %8.2fs %7s %8s %s\n' "2. cold build / xz -dc base.img.xz" "$t_cold" "$t_xzdc" "$r2" "<= 1.1" "$(verdict "$r2" 1.1)"
  printf '%-46s %8.2fs %8.2fs %7s %8s %s\n' "3. --compress xz step / xz -T2 -6" "$t_xz" "$t_xzref" "$r3" "<= 1.0" "$(verdict "$r3" 1.0)"
  printf '%-46s %8sB %8sB %7s %8s %s\n' "   .img.xz size / xz -T2 -6 size" "$s_nf" "$s_ref" "$rs" "+-1%" "$(verdict "$ds" 0.01)"
  printf '%-46s %7sMiB %9s %7s %8s %s\n' "4. peak RSS of the builds (no --compress)" "$pm" "-" "-" "<= 200" "$(verdict "$pm" 200)"
  echo "(build with --compress xz: ${t_xzbuild}s, max RSS $((rss_xz >> 10)) MiB (xz -T2 -6 itself: $((rss_xzref >> 10)) MiB);" \
    "warm/cp best of $ROUNDS rounds)"
  for l in cold-build "warm-build-$ROUNDS"; do
    echo "$l steps: $(sed -n 's/^\([a-z]*\) [^:]*: done in \([0-9.]* s\)$/\1 \2/p' "$work/$l.log" | paste -sd, -)"
  done
} > "$results.partial"
mv "$results.partial" "$results"
echo
cat "$results"
grep -q MISSED "$results" && missed=1
echo "bench: build benchmarks took $(( $(date +%s) - bench_start )) s"
echo
if [ "${BENCH_NO_FLASH:-0}" != 1 ]; then
  if ! NODEFORGE="$NODEFORGE" BENCH_DIR="$B/flash" bash "$root/tests/bench/flash.sh" | tee "$B/flash.txt"; then
    missed=1
  fi
  grep -q MISSED "$B/flash.txt" && missed=1
  { echo; grep '^flash bench: .*[/=]' "$B/flash.txt"; } >> "$results"
fi
if [ "${BENCH_STRICT:-0}" = 1 ] && [ "$missed" = 1 ]; then
  exit 1
fi
