#!/bin/sh
# ============================================================================================
# TEST-ONLY k3s STAND-IN. This is NOT k3s and nodeforge never ships it.
# nodeforge's boot tests (tests/boot/run.sh) bundle it in place of the real k3s binary because
# k3s cannot be downloaded on the test machines. It records how it was started, prints markers
# (`NF-MARK ...`) to the serial console, listens on 6443 as a server, and starts a checker that
# reports, after cloud-init has finished, whether the node configured itself.
# Secrets are never printed: the token only as `token=present`, the node password only as sha256.
# ============================================================================================
VERSION="@VERSION@"
LOGDIR=/var/log/k3s-standin

console() {
  # The serial console the harness reads: ttyAMA0 (arm64 virt / Pi PL011) first, then ttyS0.
  for t in /dev/ttyAMA0 /dev/ttyS0 /dev/console; do
    if [ -c "$t" ] && printf '' 2>/dev/null >"$t"; then echo "$t"; return; fi
  done
  echo /dev/null
}

mark() { printf '\r\nNF-MARK %s\r\n' "$*" >"$(console)" 2>/dev/null; printf 'NF-MARK %s\n' "$*" >>"$LOGDIR/marks"; }

# Prints `KEY VALUE` lines for the config keys the tests look at (`-` when absent), reading
# /etc/rancher/k3s/config.yaml then config.yaml.d/*.yaml like k3s. Never prints the token itself.
config_summary() {
  python3 - <<'EOF'
import glob, yaml
merged, keys = {}, []
for f in ["/etc/rancher/k3s/config.yaml"] + sorted(glob.glob("/etc/rancher/k3s/config.yaml.d/*.yaml")):
    try:
        with open(f) as fh:
            d = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        continue
    except Exception as e:
        print("unreadable %s:%s" % (f, type(e).__name__))
        continue
    if f.endswith("/config.yaml"):
        keys = sorted(d.keys())
    merged.update(d)
def show(v):
    if v is None:
        return "-"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)
print("keys " + ",".join(keys))
print("token " + ("present" if merged.get("token") or merged.get("token-file") else "absent"))
for k in ("server", "node-taint", "node-label", "node-name"):
    print(k + " " + show(merged.get(k)))
# Token kinds (issue 16): secure-<user> with the pinned CA hash, short, or absent; never the value.
import re
for k in ("token", "agent-token"):
    t = merged.get(k)
    m = re.fullmatch(r"K10([0-9a-f]{64})::([^:]*):.+", t) if isinstance(t, str) else None
    print(k + "-kind " + ("secure-%s ca=%s" % (m.group(2), m.group(1)) if m else ("short" if t else "absent")))
# Exact values for the harness' checker: the token only as its sha256, lists as JSON.
import hashlib, json
tok = merged.get("token")
if tok is None and merged.get("token-file"):
    try:
        tok = open(merged["token-file"]).read().strip()
    except OSError:
        tok = None
print("token-sha256 " + (hashlib.sha256(str(tok).encode()).hexdigest() if tok else "-"))
for k in ("node-taint", "node-label"):
    v = merged.get(k)
    v = [] if v is None else (v if isinstance(v, list) else [v])
    print(k + "-json " + json.dumps([str(x) for x in v], separators=(",", ":")))
EOF
}

# First-boot hardening (issue 14), for every boot including a second boot of the same disk:
# - boot/install counters (this stand-in's and the TEST-ONLY install.sh's own, kept on root),
# - cloud-init's instances and the digest of the per-instance semaphores (a module that runs again
#   rewrites its sem file), the seed's user-data as sha256 (scrubbed once, then unchanged),
# - the clock: the unit's start vs time-sync.target (monotonic, from `systemctl show`), the state
#   time-wait.sh kept, and time-wait.sh's journal lines in this boot.
hardening_marks() {
  unit=$1
  mark "boot n=$(wc -l <"$LOGDIR/boots" 2>/dev/null || echo 0)"
  mark "install-runs n=$(wc -l <"$LOGDIR/install.runs" 2>/dev/null || echo 0)"
  mark "cloud-instances n=$(find /var/lib/cloud/instances -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)"
  mark "per-instance-sem $(python3 -c '
import glob, hashlib, os
h, n = hashlib.sha256(), 0
for f in sorted(glob.glob("/var/lib/cloud/instance/sem/*")):
    n += 1
    with open(f, "rb") as fh:
        h.update(("%s %d " % (os.path.basename(f), os.stat(f).st_mtime_ns)).encode() + fh.read())
print("count=%d sha256=%s" % (n, h.hexdigest()))
' 2>&1)"
  seed=/boot/firmware/user-data
  if [ ! -f "$seed" ]; then
    dev=$(blkid -l -o device -t LABEL=CIDATA 2>/dev/null)
    seed=
    if [ -n "$dev" ]; then
      tmp=$(mktemp -d)
      mount -o ro "$dev" "$tmp" 2>/dev/null && seed=$tmp/user-data
    fi
  fi
  mark "seed user-data sha256=$([ -n "$seed" ] && sha256sum "$seed" 2>/dev/null | cut -d' ' -f1)"
  [ -n "${tmp:-}" ] && umount "$tmp" 2>/dev/null && rmdir "$tmp"
  show() { systemctl show -P "$2" "$1" 2>/dev/null; }
  mark "clock unit=$unit inactive-exit-us=$(show "$unit" InactiveExitTimestampMonotonic) main-start-us=$(show "$unit" ExecMainStartTimestampMonotonic) time-sync-us=$(show time-sync.target ActiveEnterTimestampMonotonic) now=$(date +%s) rtc=$(cat /sys/class/rtc/rtc0/since_epoch 2>/dev/null)"
  mark "clock state=$(cat /var/lib/nodeforge/time-sync 2>/dev/null)"
  journalctl -b -u "$unit" -o cat --no-pager 2>/dev/null | grep '^nodeforge: ' | head -n 5 |
    while IFS= read -r l; do mark "clock journal $l"; done
}

check() {
  role=$1 unit=$2
  mark "check-start role=$role"
  cloud-init status --wait >/dev/null 2>&1
  mark "cloud-init-finished"
  mark "hostname=$(hostname)"
  for home in /root /home/*; do
    ak="$home/.ssh/authorized_keys"
    [ -s "$ak" ] || continue
    user=$(stat -c %U "$ak")
    ssh-keygen -lf "$ak" 2>/dev/null | while read -r _bits fp _rest; do mark "ssh-key user=$user fp=$fp"; done
  done
  mark "sshd passwordauthentication=$(sshd -T 2>/dev/null | awk '$1=="passwordauthentication"{print $2}')"
  if [ -f /etc/rancher/k3s/config.yaml ]; then
    config_summary >"$LOGDIR/config.summary" 2>&1
    while read -r k v; do mark "config $k=$v"; done <"$LOGDIR/config.summary"
  else
    mark "config missing"
  fi
  # Cluster CA files (issue 16): mode and sha256 of each (the stand-in itself never writes there).
  if [ -d /var/lib/rancher/k3s/server/tls ]; then
    (cd /var/lib/rancher/k3s/server/tls && find . -type f | sort | while read -r f; do
      mark "tls ${f#./} mode=$(stat -c %a "$f") sha256=$(sha256sum "$f" | cut -d' ' -f1)"
    done)
  fi
  if [ -s /etc/rancher/node/password ]; then
    mark "node-password sha256=$(sha256sum /etc/rancher/node/password | cut -d' ' -f1)"
  else
    mark "node-password missing"
  fi
  iid=$(cloud-init query instance-id 2>/dev/null || cat /var/lib/cloud/data/instance-id 2>/dev/null)
  mark "instance-id=$iid"
  mark "unit $unit enabled=$(systemctl is-enabled "$unit" 2>&1) active=$(systemctl is-active "$unit" 2>&1) cmd=$(cat "$LOGDIR/args" 2>/dev/null)"
  # cloud-init's verdict as data (fields, not wording): status, errors, recoverable_errors.
  cloud-init status --format json 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception as e:
    d = {"unparsable": type(e).__name__}
keep = ("status", "extended_status", "errors", "recoverable_errors", "boot_status_code", "datasource")
print(json.dumps({k: d.get(k) for k in keep if k in d} if "unparsable" not in d else d, separators=(",", ":"), sort_keys=True))
' | while IFS= read -r l; do mark "cloud-init-json $l"; done
  # The node's address and who manages the interface (NetworkManager or systemd-networkd).
  for dev in $(ip -o -4 addr show scope global 2>/dev/null | awk '{print $2}' | sort -u); do
    nm=-
    command -v nmcli >/dev/null && nm=$(nmcli -g GENERAL.STATE device show "$dev" 2>/dev/null | cut -d' ' -f2 | tr -d '()' | head -n1)
    nd=$(networkctl list --no-legend "$dev" 2>/dev/null | awk '{print $5}')
    mark "net dev=$dev addr=$(ip -o -4 addr show dev "$dev" scope global | awk '{print $4}' | paste -sd, -) nm=${nm:--} networkd=${nd:--}"
  done
  # cloud-init's own words, verbatim (errors included).
  cloud-init status --long 2>&1 | while IFS= read -r l; do mark "cloud-init-status $l"; done
  grep -E '\[(WARNING|ERROR|CRITICAL)\]|Traceback' /var/log/cloud-init.log 2>/dev/null | head -n 40 |
    while IFS= read -r l; do mark "cloud-init-log $l"; done
  # Root filesystem vs the disk holding it (grown = fills the disk).
  src=$(findmnt -no SOURCE /)
  disk=$(lsblk -no PKNAME "$src" 2>/dev/null | head -n1)
  mark "root fs=$(df -B1 --output=size / | tail -n1 | tr -d ' ') part=$(lsblk -bdno SIZE "$src") disk=$(lsblk -bdno SIZE "/dev/$disk") dev=$src"
  if [ "$role" = agent ]; then
    url=$(awk '$1=="server"{print $2}' "$LOGDIR/config.summary")
    hostport=${url#*://}
    hostport=${hostport%%/*}
    host=${hostport%:*} port=${hostport##*:}
    i=0
    until nc -z -w 3 "$host" "$port" 2>/dev/null; do
      i=$((i + 1))
      if [ $i -ge 200 ]; then mark "server-unreachable $host:$port"; break; fi
      sleep 3
    done
    [ $i -lt 200 ] && mark "server-reachable $host:$port"
  fi
  hardening_marks "$unit"
  sed -n '/^# >>> nodeforge secret-scan.sh/,$p' "$0" | sh 2>&1 | while IFS= read -r l; do mark "${l#NF-MARK }"; done
  mark "done"
}

case "${1:-}" in
  --version | -v | version)
    echo "k3s version $VERSION (TEST-ONLY nodeforge stand-in)"
    exit 0
    ;;
  __nf_check)
    shift
    check "$@"
    exit 0
    ;;
  server | agent) ;;
  *)
    echo "TEST-ONLY k3s stand-in: unsupported command '${1:-}'" >&2
    exit 1
    ;;
esac

role=$1
unit=k3s
[ "$role" = agent ] && unit=k3s-agent
mkdir -p "$LOGDIR"
chmod 0700 "$LOGDIR"
echo "$*" >"$LOGDIR/args"
cp /etc/rancher/k3s/config.yaml "$LOGDIR/config.yaml" 2>/dev/null
env | sort >"$LOGDIR/env"
mark "k3s-start role=$role version=$VERSION args=$*"
# The checker must outlive this process' restarts and not hold the unit up: own session, background.
# Once per boot (the boot id), so a second boot of the same disk is checked too.
bootid=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
grep -qx "$bootid" "$LOGDIR/boots" 2>/dev/null || echo "$bootid" >>"$LOGDIR/boots"
if [ ! -e "$LOGDIR/check.started.$bootid" ]; then
  : >"$LOGDIR/check.started.$bootid"
  setsid "$0" __nf_check "$role" "$unit" </dev/null >>"$LOGDIR/check.log" 2>&1 &
fi
if [ "$role" = server ]; then
  mark "listening 6443"
  exec python3 -c '
import socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"TEST-ONLY k3s stand-in\n")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("", 6443), H).serve_forever()
'
fi
exec sleep infinity
