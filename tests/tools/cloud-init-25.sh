#!/usr/bin/env bash
# TEST-ONLY: run the `cloud-init schema` of Debian 13 "trixie" (cloud-init 25.x) on a file, so the
# seed tests check rendered user-data and network-config against a second cloud-init version.
#
# The first run builds a minimal trixie chroot with cloud-init (mmdebstrap --variant=apt) under
# /var/cache/nodeforge-fixtures/<hash of this script>/root; later runs reuse it. Needs root (mmdebstrap
# --mode=root, chroot) and a Debian mirror (NODEFORGE_DEBIAN_MIRROR, default deb.debian.org).
#
# Usage: cloud-init-25.sh --root                 build if needed, print the chroot path
#        cloud-init-25.sh --version              print the chroot's cloud-init version
#        cloud-init-25.sh FILE [SCHEMA ARGS...]  `cloud-init schema --config-file FILE ARGS...`
#                                                in the chroot; exits with cloud-init's status
set -euo pipefail

die() { echo "cloud-init-25.sh: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root and chroot)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap; see tests/setup-host.sh)"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
HASH=$(sha256sum "$SELF" | cut -c1-12)
CACHE=${NODEFORGE_FIXTURE_CACHE:-/var/cache/nodeforge-fixtures}/$HASH
ROOT="$CACHE/root"
MIRROR=${NODEFORGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}

ensure_root() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  if [ ! -x "$ROOT/usr/bin/cloud-init" ]; then
    rm -rf "$ROOT.partial"
    echo "cloud-init-25.sh: building the trixie chroot in $ROOT (once)" >&2
    mmdebstrap --mode=root --variant=apt --format=directory --include=cloud-init \
      trixie "$ROOT.partial" "$MIRROR" >&2 \
      || die "mmdebstrap trixie failed (mirror $MIRROR)"
    [ -x "$ROOT.partial/usr/bin/cloud-init" ] || die "the chroot has no /usr/bin/cloud-init"
    mv "$ROOT.partial" "$ROOT"
  fi
  flock -u 9
}

ensure_root
case "${1:-}" in
  "") die "usage: cloud-init-25.sh --root | --version | FILE [SCHEMA ARGS...]" ;;
  --root) echo "$ROOT"; exit 0 ;;
  --version) exec chroot "$ROOT" cloud-init --version ;;
esac

file=$1; shift
[ -f "$file" ] || die "no such file: $file"
work=$(mktemp -d "$ROOT/tmp/nf-schema.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$file" "$work/config"
set +e
chroot "$ROOT" cloud-init schema --config-file "/tmp/$(basename "$work")/config" "$@"
rc=$?
set -e
exit $rc
