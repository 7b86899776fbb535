# >>> nodeforge secret-scan.sh (make-mirror.sh appends it to the stand-in; the checker runs it)
# ============================================================================================
# TEST-ONLY guest-side check of nodeforge's boot proof; nodeforge never ships it. Run as root
# after cloud-init finished. It reads the node's secrets from the root-only files (the token and
# datastore password from /etc/rancher/k3s/config.yaml, /etc/rancher/node/password) and hands
# them through a pipe (never argv, never a file) to a grep run as `nobody`, which searches every
# file `nobody` can read under /boot /boot/firmware /etc /var/lib/cloud /var/log /run. Then, as
# root, it checks that the seed itself (the boot FAT, or the CIDATA partition mounted read-only)
# no longer holds them (the last first-boot step scrubs them).
# Prints `NF-MARK secret-scan ok`, or one `NF-MARK secret-scan FAIL <what>` line per finding.
# ============================================================================================
secrets() {
  python3 - <<'PY'
import yaml, urllib.parse
out = []
try:
    with open("/etc/rancher/k3s/config.yaml") as f:
        c = yaml.safe_load(f) or {}
    for k in ("token", "agent-token"):
        if c.get(k):
            out.append(str(c[k]))
    ep = c.get("datastore-endpoint")
    if ep and "://" in str(ep):
        pw = urllib.parse.urlsplit(str(ep)).password
        if pw:
            out.append(pw)
except FileNotFoundError:
    pass
try:
    with open("/etc/rancher/node/password") as f:
        pw = f.read().strip()
    if pw:
        out.append(pw)
except FileNotFoundError:
    pass
for s in out:
    if len(s) >= 8:
        print(s)
PY
}
fails=0
fail() { echo "NF-MARK secret-scan FAIL $*"; fails=$((fails + 1)); }
n=$(secrets | wc -l)
[ "$n" -ge 2 ] || fail "found $n secrets to look for (want the token and the node password)"
# The search must be able to find them: as root, config.yaml matches.
secrets | grep -qsF -f - /etc/rancher/k3s/config.yaml || fail "self-test: the secrets do not match config.yaml"
nobody_uid=$(id -u nobody)
nobody_gid=$(id -g nobody)
found=$(mktemp)
secrets | setpriv --reuid="$nobody_uid" --regid="$nobody_gid" --clear-groups -- \
  grep -rlsaF -D skip -f - /boot /boot/firmware /etc /var/lib/cloud /var/log /run 2>/dev/null | sort -u >"$found"
while IFS= read -r p; do fail "$p"; done <"$found"
rm -f "$found"
# The seed itself, as root.
if [ -f /boot/firmware/user-data ]; then
  secrets | grep -qsF -f - /boot/firmware/user-data && fail "seed /boot/firmware/user-data"
else
  dev=$(blkid -l -o device -t LABEL=CIDATA 2>/dev/null)
  if [ -n "$dev" ]; then
    tmp=$(mktemp -d)
    if mount -o ro "$dev" "$tmp"; then
      secrets | grep -qsF -f - "$tmp/user-data" && fail "seed $dev:/user-data"
      umount "$tmp"
    else
      fail "cannot mount the seed $dev"
    fi
    rmdir "$tmp"
  fi
fi
[ "$fails" -eq 0 ] && echo "NF-MARK secret-scan ok"
exit 0
