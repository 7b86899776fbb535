#!/usr/bin/env python3
"""Judge one boot of the boot proof from what was recorded; no QEMU needed.

usage:
  check.py boot SERIAL EXPECT.json       one node's first boot (serial log + expectations)
  check.py rebuild IMAGE_A IMAGE_B        a rebuild must be byte-identical
  check.py identity SERIAL_A SERIAL_B     the same node-password hash and instance-id
  check.py again SERIAL_FIRST SERIAL_SECOND  a second boot of the same disk: same instance-id, no
                                          per-instance module or first-boot script ran again,
                                          the seed's user-data unchanged (still scrubbed), k3s
                                          started, the clock state kept
  check.py marks SERIAL                   print the NF-MARK lines of a serial log

SERIAL is the guest's serial console log; the TEST-ONLY k3s stand-in's checker prints
`NF-MARK key value` lines there (tests/k3s-mirror/k3s-standin.sh). EXPECT.json (written by
tests/boot/run.sh) holds what the node must show:
  hostname, node_name (k3s `node-name`; checked when given), role ("server"|"agent"), unit, admin_user, ssh_fp, token_sha256, tls_root_sha256 (servers with the cluster CA; null otherwise), join_ca_sha256 (agents with a K10 token: the hash
  their join check must accept; null otherwise), manifests (name -> sha256 of the server's
  auto-deploy manifests as in its seed, {} for an agent, null: not checked),
  node_password_sha256, server_url (agent; null for a server), labels, taints (lists, compared as
  sets), root_size_before (bytes), address ("10.77.0.10/24"), net_manager ("nm"|"networkd"|null),
  require_secret_scan (bool: the hardening checks' `NF-MARK secret-scan` must be there),
  clock (optional: "rtc" | "wait" | "later") and clock_bound (seconds): how k3s's first start met
  the clock (docs/first-boot.md): "rtc" started without waiting because a real-time clock set the
  time; "wait" started after time-sync.target (synchronised) or after the bounded wait with its
  warning in the unit's journal; "later" (a second boot) started without waiting again.
Secrets are compared as sha256 only and never printed. Each failed property is one `FAIL` line;
exit status 1 when any failed, 0 when all passed.
"""
import json
import re
import sys

MARK = re.compile(r"NF-MARK (.*?)\s*$")


def marks(serial_path):
    with open(serial_path, "rb") as f:
        text = f.read().decode("utf-8", "replace").replace("\r", "\n")
    out = []
    for line in text.split("\n"):
        m = MARK.search(line)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def value(ms, prefix):
    """The rest of the first mark starting with prefix, or None."""
    for m in ms:
        if m.startswith(prefix):
            return m[len(prefix):]
    return None


def judge_boot(ms, e):
    fails = []

    def need(cond, msg):
        if not cond:
            fails.append(msg)

    if "done" not in ms:
        fails.append("no 'NF-MARK done': the boot did not finish its checks")
    if "cloud-init-finished" not in ms:
        fails.append("the checker never ran: k3s (which starts it) was not installed or did not start")
        return fails
    v = value(ms, "hostname=")
    need(v == e["hostname"], f"hostname is {v!r}, want {e['hostname']!r}")
    want_key = f"ssh-key user={e['admin_user']} fp={e['ssh_fp']}"
    need(want_key in ms, f"ssh key {e['ssh_fp']} not installed for {e['admin_user']}")
    v = value(ms, "sshd passwordauthentication=")
    need(v == "no", f"sshd PasswordAuthentication is {v!r}, want 'no'")
    if "node_name" in e:
        v = value(ms, "config node-name=")
        need(v == e["node_name"], f"config.yaml node-name={v!r}, want {e['node_name']!r}")
    v = value(ms, "config token-sha256=")
    need(v == e["token_sha256"], "the k3s token is not the secrets file's (sha256 differs or token missing)")
    v = value(ms, "config server=")
    want = e.get("server_url") or "-"
    need(v == want, f"config.yaml server={v!r}, want {want!r}")
    for key, field in (("node-label", "labels"), ("node-taint", "taints")):
        raw = value(ms, f"config {key}-json=")
        try:
            got = json.loads(raw) if raw is not None else None
        except ValueError:
            got = None
        if got is None:
            fails.append(f"config.yaml {key}: not reported")
            continue
        want = sorted(e.get(field, []))
        missing = [x for x in want if x not in got]
        extra = [x for x in got if x not in want]
        need(not missing, f"config.yaml {key} lacks {missing} (has {sorted(got)})")
        need(not extra, f"config.yaml {key} has unexpected {extra}")
    v = value(ms, "node-password sha256=")
    need(v == e["node_password_sha256"], "/etc/rancher/node/password is not the secrets file's (sha256 differs)")
    need(bool(value(ms, "instance-id=")), "no instance-id")
    v = value(ms, f"unit {e['unit']} ") or ""
    need(v.startswith(f"enabled=enabled active=active cmd={e['role']}"), f"unit {e['unit']}: {v!r}")
    # cloud-init's verdict by its fields: done, no errors, no recoverable errors (warnings).
    raw = value(ms, "cloud-init-json ")
    try:
        st = json.loads(raw) if raw is not None else None
    except ValueError:
        st = None
    if not isinstance(st, dict):
        fails.append(f"cloud-init status --format json not reported or unparsable ({raw!r})")
    else:
        need(st.get("status") == "done", f"cloud-init status is {st.get('status')!r}, want 'done'")
        need(not st.get("errors"), f"cloud-init errors: {st.get('errors')}")
        rec = st.get("recoverable_errors") or {}
        rec = {k: v for k, v in rec.items() if v} if isinstance(rec, dict) else {"?": rec}
        need(not rec, f"cloud-init warnings/recoverable errors: {rec}")
    # Root grown: the partition took the 1 GiB added to the disk and the filesystem fills it.
    v = value(ms, "root ") or ""
    m = re.match(r"fs=(\d+) part=(\d+) disk=(\d+)", v)
    before = int(e.get("root_size_before", 0))
    if not m:
        fails.append(f"root size not reported ({v!r})")
    else:
        fs, part = int(m.group(1)), int(m.group(2))
        need(part >= before + (1 << 30) - (16 << 20) and fs >= part * 9 // 10,
             f"root not grown: fs={fs} part={part} (was {before})")
    if e.get("address"):
        nets = [m for m in ms if m.startswith("net ")]
        hit = [n for n in nets if re.search(r"addr=(\S*,)?" + re.escape(e["address"]) + r"(,|\s)", n + " ")]
        need(bool(hit), f"no interface has {e['address']} ({nets})")
        mgr = e.get("net_manager")
        if hit and mgr == "nm":
            need(" nm=connected" in hit[0], f"NetworkManager does not manage it: {hit[0]}")
        elif hit and mgr == "networkd":
            need(" networkd=configured" in hit[0], f"systemd-networkd does not manage it: {hit[0]}")
    if e["role"] == "agent" and e.get("server_url"):
        hp = re.sub(r"^\w+://", "", e["server_url"]).split("/")[0]
        need(f"server-reachable {hp}" in ms, f"agent did not reach {hp}")
    # The cluster CA (docs/k3s-trust.md): a server carries the secrets' root, and its CA keys 0600.
    if e.get("tls_root_sha256"):
        need(f"tls root-ca.pem mode=644 sha256={e['tls_root_sha256']}" in ms,
             "the server's tls/root-ca.pem is missing, not 0644, or not the secrets file's root")
        for key in ("server-ca.key", "client-ca.key", "request-header-ca.key", "service.key"):
            need(any(m.startswith(f"tls {key} mode=600 ") for m in ms),
                 f"the server's tls/{key} is missing or not 0600")
    # k3s's join bootstrap (docs/k3s-trust.md): the server serves /cacerts from its cluster CA; the
    # agent's check accepts it with the hash of its K10 token and refuses the two impostors.
    if e.get("tls_root_sha256"):
        need(any(m.startswith("https-serving cluster=6443 ") for m in ms),
             "the server did not serve /cacerts over HTTPS from its cluster CA")
    if e.get("join_ca_sha256"):
        want = e["join_ca_sha256"]
        need(any(re.fullmatch(r"join-check cluster port=\d+ accepted ca=" + re.escape(want), m) for m in ms),
             "join-check: the agent did not accept the server's /cacerts with its token's CA hash")
        need(any(re.match(r"join-check other-ca port=\d+ refused ca-hash-mismatch", m) for m in ms),
             "join-check: the agent did not refuse a server with another CA")
        need(any(re.match(r"join-check other-cert port=\d+ refused server-cert-not-verified", m) for m in ms),
             "join-check: the agent did not refuse a server whose certificate is not from the CA it serves")
        need(not any(re.match(r"join-check other-\S+ port=\d+ accepted", m) for m in ms),
             "join-check: the agent accepted an impostor server")
    # Auto-deploy manifests (issue 18): exactly the seed's files, each 0600 and intact.
    if isinstance(e.get("manifests"), dict):
        got = {}
        for m in ms:
            mm = re.fullmatch(r"manifest (\S+) mode=(\d+) sha256=([0-9a-f]{64})", m)
            if mm:
                got[mm.group(1)] = (mm.group(2), mm.group(3))
        for name, sha in sorted(e["manifests"].items()):
            g = got.get(name)
            need(g is not None, f"manifests/{name} is missing")
            if g:
                need(g[0] == "600", f"manifests/{name} has mode {g[0]}, want 600")
                need(g[1] == sha, f"manifests/{name} differs from the seed's (sha256)")
        extra = sorted(set(got) - set(e["manifests"]))
        need(not extra, f"manifests dir has unexpected files {extra}")
    # First-boot security checks (hardening issue): assert them when they ran, or when required.
    scan = value(ms, "secret-scan ")
    if scan is not None:
        need(scan.strip() == "ok", f"secret-scan: {scan}")
    elif e.get("require_secret_scan"):
        fails.append("secret-scan did not run")
    if e.get("clock"):
        fails += judge_clock(ms, e["clock"], int(e.get("clock_bound", 180)))
    return fails


def clock_marks(ms):
    """The `clock unit=...` mark as a dict of ints (None when missing or unparsable)."""
    v = value(ms, "clock unit=")
    if v is None:
        return None
    out = {}
    for kv in v.split()[1:]:
        k, _, x = kv.partition("=")
        try:
            out[k] = int(x)
        except ValueError:
            out[k] = None
    return out


def judge_clock(ms, want, bound):
    """k3s's start against the clock: time-wait.sh's state and journal lines, and the unit's
    monotonic timestamps (µs) from systemctl show."""
    fails = []
    c = clock_marks(ms)
    state = value(ms, "clock state=")
    journal = [m[len("clock journal "):] for m in ms if m.startswith("clock journal ")]
    if c is None or state is None:
        return ["clock: not reported (no `clock unit=` / `clock state=` marks)"]
    exit_us, start_us, sync_us = c.get("inactive-exit-us"), c.get("main-start-us"), c.get("time-sync-us")
    if not exit_us or not start_us or start_us < exit_us:
        return [f"clock: k3s's start times are missing or out of order ({c})"]
    waited = (start_us - exit_us) / 1e6
    if want == "rtc":
        if not state.startswith("set from the real-time clock"):
            fails.append(f"clock: want the real-time-clock path, state is {state!r}")
        if not any("real-time clock" in j for j in journal):
            fails.append(f"clock: the unit's journal lacks time-wait.sh's real-time-clock line ({journal})")
        if waited >= 60:
            fails.append(f"clock: k3s waited {waited:.0f} s before starting although the RTC was trusted")
    elif want == "wait":
        if state.startswith("synchronised"):
            # Synced path: k3s's main process started after time-sync.target was reached.
            if not sync_us or sync_us > start_us:
                fails.append(f"clock: state {state!r} but time-sync.target was not reached before k3s started ({c})")
        elif state.startswith("not synchronised after "):
            # Bounded path: time-wait.sh gave up after the bound, said so, then k3s started.
            m = re.match(r"not synchronised after (\d+) s", state)
            took = int(m.group(1)) if m else -1
            if took < bound - 2:
                fails.append(f"clock: gave up after {took} s, before the {bound} s bound")
            if waited < bound - 2:
                fails.append(f"clock: k3s started {waited:.0f} s after its start job began, before the {bound} s bound")
            if waited > bound + 120:
                fails.append(f"clock: k3s started {waited:.0f} s after its start job began, far past the {bound} s bound")
            if not any("WARNING: the clock is not synchronised" in j for j in journal):
                fails.append(f"clock: the unit's journal lacks the bounded wait's warning ({journal})")
        else:
            fails.append(f"clock: want the wait (synchronised or bounded), state is {state!r}")
    elif want == "later":
        if waited >= 60:
            fails.append(f"clock: a later start waited {waited:.0f} s")
        if any("synchronised" in j or "real-time clock" in j for j in journal):
            fails.append(f"clock: a later start went through the first start's clock check again ({journal})")
    else:
        fails.append(f"clock: unknown expectation {want!r}")
    return fails


def judge_again(a, b):
    """A second boot (b) of the disk whose first boot is a: nothing per-instance ran again."""
    fails = []

    def same(key, what):
        va, vb = value(a, key), value(b, key)
        if va is None or vb is None:
            fails.append(f"{what}: not reported on {'the first' if va is None else 'the second'} boot")
        elif va != vb:
            fails.append(f"{what} changed on the second boot ({va!r} -> {vb!r})")

    same("instance-id=", "instance-id")
    same("per-instance-sem ", "cloud-init's per-instance semaphores (a per-instance module ran again)")
    same("install-runs n=", "the first-boot scripts' run counter (install ran again)")
    same("cloud-instances n=", "the number of cloud-init instances")
    same("seed user-data sha256=", "the seed's user-data")
    same("clock state=", "the clock state of the first start")
    if value(a, "install-runs n=") not in (None, "1"):
        fails.append(f"the first boot ran install {value(a, 'install-runs n=')} times, want 1")
    if value(a, "boot n=") != "1" or value(b, "boot n=") != "2":
        fails.append(f"boot counters are {value(a, 'boot n=')!r} and {value(b, 'boot n=')!r}, want '1' and '2' (not the same disk?)")
    if not any(m.startswith("k3s-start ") for m in b):
        fails.append("k3s did not start on the second boot")
    if value(b, "secret-scan ") != "ok":
        fails.append(f"secret-scan on the second boot: {value(b, 'secret-scan ')!r}")
    return fails


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "marks" and len(argv) == 3:
        print("\n".join(marks(argv[2])))
        return 0
    if cmd == "boot" and len(argv) == 4:
        with open(argv[3]) as f:
            e = json.load(f)
        fails = judge_boot(marks(argv[2]), e)
        name = e.get("name", e["hostname"])
    elif cmd == "rebuild" and len(argv) == 4:
        name = "rebuild"
        fails = []
        with open(argv[2], "rb") as a, open(argv[3], "rb") as b:
            off = 0
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                if x != y:
                    i = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
                    fails.append(f"rebuilt image differs from the first build at byte {off + i}")
                    break
                if not x:
                    break
                off += len(x)
    elif cmd == "identity" and len(argv) == 4:
        name = "identity"
        a, b = marks(argv[2]), marks(argv[3])
        fails = []
        for k in ("node-password sha256=", "instance-id="):
            va, vb = value(a, k), value(b, k)
            if not va or va != vb:
                fails.append(f"{k.rstrip('=')} changed after rebuild (or missing)")
    elif cmd == "again" and len(argv) == 4:
        name = "again"
        fails = judge_again(marks(argv[2]), marks(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for f in fails:
        print(f"FAIL {name}: {f}")
    if not fails:
        print(f"PASS {name}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
