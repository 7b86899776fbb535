#!/bin/sh
# nodeforge (Debian raspi): raspi-firmware regenerates cmdline.txt and config.txt on every kernel
# update; it appends /etc/default/raspi-extra-cmdline and /etc/default/raspi-firmware-custom, so the
# cgroup flags, USB quirks and config lines go there too.
# usage: pi-boot-persist.sh "CMDLINE TOKENS" [CONFIG_LINE...]
# NODEFORGE_ROOT (tests only): prefix for the files.
set -eu
extra="${NODEFORGE_ROOT:-}/etc/default/raspi-extra-cmdline"
custom="${NODEFORGE_ROOT:-}/etc/default/raspi-firmware-custom"
mkdir -p "$(dirname "$extra")"
want="$1"
shift
cur=""
[ -f "$extra" ] && cur="$(tr '\n' ' ' <"$extra")"
out=""
for t in $cur; do
  case "$t" in
  usb-storage.quirks=*) case " $want " in *" usb-storage.quirks="*) continue ;; esac ;;
  esac
  out="$out $t"
done
for t in $want; do
  case " $out " in
  *" $t "*) ;;
  *) out="$out $t" ;;
  esac
done
printf '%s\n' "${out# }" >"$extra"
touch "$custom"
for l in "$@"; do
  grep -qxF -- "$l" "$custom" || printf '%s\n' "$l" >>"$custom"
done
