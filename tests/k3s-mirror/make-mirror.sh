#!/usr/bin/env bash
# Writes a TEST-ONLY k3s mirror laid out like a k3s GitHub release, for nodeforge's boot tests:
#   OUTDIR/k3s, OUTDIR/k3s-arm64            the stand-in (tests/k3s-mirror/k3s-standin.sh), NOT k3s
#   OUTDIR/sha256sum-amd64.txt, -arm64.txt   checksum lines as the release has them ("<sha>  k3s")
#   OUTDIR/install.sh                        the TEST-ONLY install.sh (tests/k3s-mirror/install.sh)
# Usage: tests/k3s-mirror/make-mirror.sh OUTDIR VERSION      (e.g. v1.31.4+k3s1)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUTDIR=${1:?usage: make-mirror.sh OUTDIR VERSION}
VERSION=${2:?usage: make-mirror.sh OUTDIR VERSION}
mkdir -p "$OUTDIR"
esc=${VERSION//&/\\&}
# secret-scan.sh rides at the end of the stand-in (never reached when it runs); its checker runs it.
cat "$HERE/k3s-standin.sh" "$HERE/secret-scan.sh" | sed "s|@VERSION@|${esc//|/\\|}|" >"$OUTDIR/k3s"
cp "$OUTDIR/k3s" "$OUTDIR/k3s-arm64"
cp "$HERE/install.sh" "$OUTDIR/install.sh"
chmod 0755 "$OUTDIR/k3s" "$OUTDIR/k3s-arm64" "$OUTDIR/install.sh"
(cd "$OUTDIR" && sha256sum k3s >sha256sum-amd64.txt && sha256sum k3s-arm64 >sha256sum-arm64.txt)
echo "$OUTDIR"
