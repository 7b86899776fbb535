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

# ---- k3s's join bootstrap, both sides (issue 16; docs/k3s-trust.md). tests/join_check.rs runs these
# same two programs on the host (it cuts them out of this file between the NF_* heredoc markers).
TLS=/var/lib/rancher/k3s/server/tls

# serve_https TLS_DIR WORK_DIR SANS CONFIG PORTS: a k3s server's /cacerts over HTTPS. PORTS is
# cluster,other-ca,other-cert: `cluster` serves TLS_DIR/server-ca.crt with a serving certificate
# signed by server-ca.key (as k3s does); `other-ca` is a server whose CA was made on the spot and
# serves that CA; `other-cert` serves the cluster's genuine /cacerts (anyone can copy it) with a
# certificate from the other CA (it has no server-ca.key). Prints one line once it listens.
serve_https() {
  python3 - "$@" <<'NF_SERVE_HTTPS'
import datetime, http.server, ipaddress, os, ssl, sys, threading
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

tls, work, sans, config, ports = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ports = [int(p) for p in ports.split(",")]
names = [x for x in sans.split(",") if x]
try:
    import glob, yaml
    for f in [config] + sorted(glob.glob(config + ".d/*.yaml")):
        if os.path.exists(f):
            with open(f) as fh:
                v = (yaml.safe_load(fh) or {}).get("tls-san") or []
            names += [str(x) for x in (v if isinstance(v, list) else [v])]
except ImportError:
    pass
os.makedirs(work, mode=0o700, exist_ok=True)
now = datetime.datetime.now(datetime.timezone.utc)
KU = dict(content_commitment=False, data_encipherment=False, key_agreement=False,
          crl_sign=False, encipher_only=False, decipher_only=False)

def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

def builder(subject, issuer, pub, days):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))

def other_ca():
    k = ec.generate_private_key(ec.SECP256R1())
    c = (builder(name("nf-test-other-ca"), name("nf-test-other-ca"), k.public_key(), 30)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=True, **KU), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(k.public_key()), critical=False)
         .sign(k, hashes.SHA256()))
    return c, k

def serving(ca_cert, ca_key, tag):
    k = ec.generate_private_key(ec.SECP256R1())
    alt = []
    for n in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    c = (builder(name("k3s"), ca_cert.subject, k.public_key(), 30)
         .add_extension(x509.SubjectAlternativeName(alt), critical=False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False, **KU), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
             ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value), critical=False)
         .sign(ca_key, hashes.SHA256()))
    pem = lambda x: x.public_bytes(serialization.Encoding.PEM)
    kf, cf = os.path.join(work, tag + ".key"), os.path.join(work, tag + ".crt")
    fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    with open(cf, "wb") as fh:
        fh.write(pem(c) + pem(ca_cert))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cf, kf)
    return ctx

with open(os.path.join(tls, "server-ca.crt"), "rb") as fh:
    bundle = fh.read()
with open(os.path.join(tls, "server-ca.key"), "rb") as fh:
    ca_key = serialization.load_pem_private_key(fh.read(), None)
ca_cert = x509.load_pem_x509_certificates(bundle)[0]
oc, ok = other_ca()
other_pem = oc.public_bytes(serialization.Encoding.PEM)
sites = [(ports[0], serving(ca_cert, ca_key, "cluster"), bundle),
         (ports[1], serving(oc, ok, "other-ca"), other_pem),
         (ports[2], serving(oc, ok, "other-cert"), bundle)]

def server(port, ctx, cacerts):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body, code = (cacerts, 200) if self.path == "/cacerts" else (b"TEST-ONLY k3s stand-in\n", 404)
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    class S(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True
        def finish_request(self, request, addr):
            # TLS per connection, in its own thread: a plain TCP probe (nc -z) costs nothing.
            request.settimeout(20)
            try:
                request = ctx.wrap_socket(request, server_side=True)
            except OSError:
                return
            H(request, addr, self)
    return S(("", port), H)

srvs = [server(p, c, b) for p, c, b in sites]
print("https-serving cluster=%d other-ca=%d other-cert=%d sans=%s" % (tuple(ports) + (",".join(dict.fromkeys(names)),)), flush=True)
threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in srvs]
for t in threads:
    t.start()
for t in threads:
    t.join()
NF_SERVE_HTTPS
}

# join_check CONFIG HOST LABEL=PORT...: the agent side of k3s's TLS bootstrap with a secure token
# (k3s docs/cli/token.md "TLS Bootstrapping"; pkg/clientaccess/token.go): 1. fetch /cacerts with
# TLS verification off; 2. hash it like hashCA (a bundle of several certificates: the DER of the
# root that the first one chains to; one certificate: the raw bytes); 3. compare with the token's
# hash; 4. fetch again verifying the server's certificate (and name) against that bundle. Only
# then would k3s send credentials; this check sends none. One line per LABEL; never the token.
join_check() {
  python3 - "$@" <<'NF_JOIN_CHECK'
import datetime, glob, hashlib, re, ssl, sys, urllib.request
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

config, host, sites = sys.argv[1], sys.argv[2], sys.argv[3:]
merged = {}
for f in [config] + sorted(glob.glob(config + ".d/*.yaml")):
    try:
        with open(f) as fh:
            merged.update(yaml.safe_load(fh) or {})
    except FileNotFoundError:
        pass
tok = merged.get("token")
m = re.fullmatch(r"K10([0-9a-f]{64})::.+", tok) if isinstance(tok, str) else None
now = datetime.datetime.now(datetime.timezone.utc)

def ski(c):
    try:
        return c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None

def aki(c):
    try:
        return c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None

def valid_now(c):
    # *_utc arrived in cryptography 42 (Ubuntu 24.04 ships 41).
    utc = datetime.timezone.utc
    nb = getattr(c, "not_valid_before_utc", None) or c.not_valid_before.replace(tzinfo=utc)
    na = getattr(c, "not_valid_after_utc", None) or c.not_valid_after.replace(tzinfo=utc)
    return nb <= now <= na

def issued(child, parent):
    try:
        bc = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
        child.verify_directly_issued_by(parent)
    except Exception:
        return False
    return bc.ca and valid_now(parent)

def hash_ca(b):
    certs = x509.load_pem_x509_certificates(b)
    if len(certs) > 1:
        # hashCA: later certificates without an authority key id, or with one equal to their
        # subject key id, are roots; the rest intermediates; hash the root the first chains to.
        roots = [c for c in certs[1:] if not aki(c) or aki(c) == ski(c)]
        inter = [c for c in certs[1:] if c not in roots]
        cur = certs[0] if valid_now(certs[0]) else None
        for _ in range(len(certs)):
            if cur is None:
                break
            root = next((r for r in roots if issued(cur, r)), None)
            if root is not None:
                return hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest()
            cur = next((i for i in inter if issued(cur, i)), None)
    return hashlib.sha256(b).hexdigest()

def get(url, ctx):
    with urllib.request.urlopen(url, context=ctx, timeout=15) as r:
        return r.read()

for site in sites:
    label, port = site.split("=", 1)
    url = "https://%s:%s/cacerts" % (host, port)
    head = "join-check %s port=%s" % (label, port)
    if not m:
        print(head + " skipped token=" + ("short" if tok else "absent"), flush=True)
        continue
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    try:
        cacerts = get(url, insecure)
    except Exception as e:
        print(head + " refused cacerts-unavailable (%s)" % type(e).__name__, flush=True)
        continue
    try:
        got = hash_ca(cacerts)
    except Exception as e:
        print(head + " refused cacerts-unparsable (%s)" % type(e).__name__, flush=True)
        continue
    if got != m.group(1):
        print(head + " refused ca-hash-mismatch got=%s" % got, flush=True)
        continue
    try:
        strict = ssl.create_default_context(cadata=cacerts.decode("ascii"))
        # Like Go's RootCAs pool: any certificate of the bundle is a trust anchor.
        strict.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        get(url, strict)
    except Exception as e:
        reason = getattr(e, "reason", e)
        print(head + " refused server-cert-not-verified (%s)" % getattr(reason, "verify_message", type(reason).__name__), flush=True)
        continue
    print(head + " accepted ca=%s" % got, flush=True)
NF_JOIN_CHECK
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
  # Auto-deploy manifests (issue 18): name, mode and sha256 of each (the stand-in never writes there).
  if [ -d /var/lib/rancher/k3s/server/manifests ]; then
    (cd /var/lib/rancher/k3s/server/manifests && find . -type f | sort | while read -r f; do
      mark "manifest ${f#./} mode=$(stat -c %a "$f") sha256=$(sha256sum "$f" | cut -d' ' -f1)"
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
    # k3s's TLS bootstrap against the server (the cluster's CA) and two impostors (issue 16).
    if [ $i -lt 200 ]; then
      join_check /etc/rancher/k3s/config.yaml "$host" cluster="$port" other-ca=6444 other-cert=6445 2>>"$LOGDIR/join-check.err" |
        while IFS= read -r l; do mark "$l"; done
      [ -s "$LOGDIR/join-check.err" ] && mark "join-check-error $(tail -n1 "$LOGDIR/join-check.err")"
    fi
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
  # The server's /cacerts over HTTPS from its cluster CA, and two impostor servers (issue 16).
  if [ -s "$TLS/server-ca.crt" ] && [ -s "$TLS/server-ca.key" ]; then
    sans=127.0.0.1,localhost,$(hostname),$(ip -o -4 addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | paste -sd, -)
    serve_https "$TLS" "$LOGDIR/https" "$sans" /etc/rancher/k3s/config.yaml 6443,6444,6445 2>>"$LOGDIR/https.err" |
      while IFS= read -r l; do mark "$l"; done
    mark "https-stopped $(tail -n1 "$LOGDIR/https.err" 2>/dev/null); plain TCP on 6443"
  fi
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
