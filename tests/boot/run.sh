#!/usr/bin/env bash
# Boot proof (issue 5): images built from the test fixtures boot under QEMU (TCG) and configure
# themselves. Markers (`NF-MARK ...`) come from the TEST-ONLY k3s stand-in's checker
# (tests/k3s-mirror/k3s-standin.sh), printed on the serial console after cloud-init finished.
#
# Usage: tests/boot/run.sh x86_64 | arm64 [raspios|ubuntu-raspi|debian-raspi]
# Boots: server + agent together on one private network (the agent's RTC behind the build time:
#   the bounded clock wait), the server's disk a second time (nothing per-instance runs again),
#   then (x86_64, or NODEFORGE_BOOT_ONLY=all)
#   a rebuild of the server (byte-identical image, same identity) together with an agent image
#   whose user-data was corrupted (the harness must fail on it, showing cloud-init's own error).
# Each boot is judged by tests/boot/check.py from its serial log and an expectations file.
# Environment:
#   NODEFORGE_K3S_MIRROR=DIR|URL   use this k3s mirror (e.g. the real k3s) instead of the stand-in
#   NODEFORGE_BOOT_COMPOSE=hand    compose the images with shell tools instead of `nodeforge build`
#                                  (x86_64 and debian-raspi only); never chosen automatically
#   NODEFORGE_BOOT_TIMEOUT=900     seconds per boot
#   NODEFORGE_BOOT_FIXTURE=FILE    use this base instead of the fixture from tests/fixtures/build.sh
#   NODEFORGE_BOOT_ONLY=pair|second|all  run only the first (server+agent) or second pair of boots
#                                  (default: all on x86_64, pair on arm64)
# Output: target/boot/<arch>[-family]/ (serial logs *.serial, marker times *.marks, expectations
# *.expect.json, verdicts *.verdict), target/boot/timings.txt
set -euo pipefail

ARCH=${1:-x86_64}
FAMILY=${2:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN="$ROOT/target/release/nodeforge"
case "$ARCH" in
  x86_64) FAMILY=debian-generic ;;
  arm64) FAMILY=${FAMILY:-raspios} ;;
esac
OUT="$ROOT/target/boot/$ARCH"
[ "$ARCH" = arm64 ] && OUT="$ROOT/target/boot/$ARCH-$FAMILY"
CHECK="$HERE/check.py"
TIMINGS="$ROOT/target/boot/timings.txt"
TIMEOUT=${NODEFORGE_BOOT_TIMEOUT:-900}
K3S_VERSION=v1.31.4+k3s1
NET_PREFIX=10.77.0
SERVER_IP=$NET_PREFIX.10
AGENT_IP=$NET_PREFIX.11
ADMIN_USER=nf
FAILED=0

log() { printf '[boot %s %s] %s\n' "$ARCH" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
need() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null || die "missing tool '$t': run tests/setup-host.sh"; done
}

case "$ARCH" in
  x86_64)
    need qemu-system-x86_64 sgdisk
    IFACE=enp0s3
    OVMF=/usr/share/ovmf/OVMF.fd
    [ -f "$OVMF" ] || die "missing $OVMF: apt-get install ovmf"
    ;;
  arm64)
    need qemu-system-aarch64 sfdisk
    case "$FAMILY" in
      # Predictable names (no net.ifnames=0 on their cmdline): virtio-net-pci in slot 3.
      raspios | ubuntu-raspi) IFACE=enp0s3 ;;
      debian-raspi) IFACE=eth0 ;;
      *) die "unknown arm64 family '$FAMILY' (raspios, ubuntu-raspi, debian-raspi)" ;;
    esac
    ;;
  *) die "usage: $0 x86_64 | arm64 [raspios|ubuntu-raspi|debian-raspi]" ;;
esac
need mkfs.vfat mcopy mdir xz tar python3 ssh-keygen sha256sum timeout

mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
# QEMU never outlives the harness (Ctrl-C, a failed step, a timeout of the caller).
kill_vms() {
  local f p
  for f in "$OUT"/*.pid; do
    [ -e "$f" ] || continue
    p=$(cat "$f")
    kill "$p" 2>/dev/null && log "stopped QEMU $p ($(basename "$f" .pid))"
    rm -f "$f"
  done
  return 0
}
trap kill_vms EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Inputs: fixture, k3s mirror, ssh key, secrets.
if [ -n "${NODEFORGE_BOOT_FIXTURE:-}" ]; then
  FIXTURE=$NODEFORGE_BOOT_FIXTURE
  [ -s "$FIXTURE.sha256" ] || sha256sum "$FIXTURE" >"$FIXTURE.sha256"
else
  bash "$ROOT/tests/fixtures/build.sh" "$ARCH" || die "building the $ARCH fixture failed"
  if [ "$ARCH" = arm64 ]; then
    FIXTURE=$(bash "$ROOT/tests/fixtures/build.sh" --path arm64 "$FAMILY")
  else
    FIXTURE=$(bash "$ROOT/tests/fixtures/build.sh" --path x86_64)
  fi
fi
[ -s "$FIXTURE" ] || die "fixture missing: $FIXTURE"
FIXTURE_SHA=$(cut -d' ' -f1 "$FIXTURE.sha256")

if [ -n "${NODEFORGE_K3S_MIRROR:-}" ]; then
  MIRROR=$NODEFORGE_K3S_MIRROR
  REAL_K3S=1
  log "k3s mirror: $MIRROR (a real k3s: no stand-in checker; cloud-init is judged from the console)"
else
  MIRROR="$OUT/k3s-mirror"
  bash "$ROOT/tests/k3s-mirror/make-mirror.sh" "$MIRROR" "$K3S_VERSION" >/dev/null
  REAL_K3S=0
fi
ssh-keygen -q -t ed25519 -N '' -C nodeforge-boot-test -f "$OUT/id_ed25519"
SSH_PUB=$(cat "$OUT/id_ed25519.pub")
SSH_FP=$(ssh-keygen -lf "$OUT/id_ed25519.pub" | awk '{print $2}')
# Test-only secrets, one file for every build (the rebuild keeps the node's identity).
TOKEN=nf-test-token-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
declare -A NODE_PW=([nf-server]=nf-server-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  [nf-agent]=nf-agent-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n'))
SECRETS="$OUT/nodeforge-secrets.toml"
(
  umask 077
  exec >"$SECRETS"
  printf '# TEST-ONLY secrets (tests/boot/run.sh)\ntoken = "%s"\n\n[node_passwords]\n' "$TOKEN"
  printf '%s = "%s"\n' nf-server "${NODE_PW[nf-server]}" nf-agent "${NODE_PW[nf-agent]}"
)

# ---------------------------------------------------------------------------------------------
# Image building.
# nodeforge unless the switch asks for the hand-made images: no silent fallback.
compose_mode() { echo "${NODEFORGE_BOOT_COMPOSE:-nodeforge}"; }

# Labels and taints from cluster.toml (space-separated here), and what each role adds: a server
# in a cluster with agents is tainted CriticalAddonsOnly (profiles/server.toml, README).
declare -A NODE_LABELS=([nf-server]="nodeforge.test/pool=control nodeforge.test/family=$FAMILY"
  [nf-agent]="nodeforge.test/pool=workers nodeforge.test/disk=usb")
declare -A NODE_TAINTS=([nf-server]="" [nf-agent]="nodeforge.test/dedicated=boot:NoSchedule")
declare -A ROLE_TAINTS=([server]="CriticalAddonsOnly=true:NoExecute" [agent]="")
toml_list() { local x out=(); for x in $1; do out+=("\"$x\""); done; local IFS=,; echo "${out[*]}"; }
json_list() { local x out=(); for x in $1; do out+=("\"$x\""); done; local IFS=,; echo "[${out[*]}]"; }

# The test cluster: one server and one agent (a plain worker) on a private network, the fixture as
# a file:// base and the test k3s mirror.
write_cluster_toml() { # FILE
  local board=x86_64 mirror_url=$MIRROR
  [ "$ARCH" = arm64 ] && board=rpi4
  case "$mirror_url" in *://*) ;; *) mirror_url="file://$mirror_url" ;; esac
  cat >"$1" <<EOF
# Boot-test cluster (written by tests/boot/run.sh)
[cluster]
name = "nf-boot"
k3s_version = "$K3S_VERSION"
server = "https://$SERVER_IP:6443"
datastore = "sqlite"
ssh_authorized_keys = ["$SSH_PUB"]
admin_user = "$ADMIN_USER"
timezone = "UTC"

[boards.$board]
base = "file://$FIXTURE"
sha256 = "$FIXTURE_SHA"

[k3s]
mirror = "$mirror_url"
airgap = false

# An add-on with a plain and a secret manifest, so the server's manifests directory has files.
[addons.sealed-secrets]

[[nodes]]
hostname = "nf-server"
role = "server"
board = "$board"
address = "$SERVER_IP/24"
interface = "$IFACE"
dns = ["$NET_PREFIX.1"]
labels = [$(toml_list "${NODE_LABELS[nf-server]}")]
taints = [$(toml_list "${NODE_TAINTS[nf-server]}")]

[[nodes]]
hostname = "nf-agent"
role = "agent"
board = "$board"
address = "$AGENT_IP/24"
interface = "$IFACE"
dns = ["$NET_PREFIX.1"]
labels = [$(toml_list "${NODE_LABELS[nf-agent]}")]
taints = [$(toml_list "${NODE_TAINTS[nf-agent]}")]
EOF
}

# The cluster CA (docs/k3s-trust.md): the test secrets get nodeforge's CA and an agent token, so
# the server image carries the CA's tls files and the agent joins with a secure token that pins
# the CA's root. The expected token is computed here with openssl, not with nodeforge.
write_cluster_toml "$OUT/ca-cluster.toml"
"$BIN" init --update --adopt-ca -c "$OUT/ca-cluster.toml" --secrets "$SECRETS" >/dev/null ||
  die "nodeforge init --update --adopt-ca failed"
AGENT_TOKEN=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["agent_token"])' "$SECRETS")
python3 -c 'import sys, tomllib; sys.stdout.write(tomllib.load(open(sys.argv[1], "rb"))["ca"]["root"]["crt"])' \
  "$SECRETS" >"$OUT/root-ca.pem"
CA_HASH=$(openssl x509 -in "$OUT/root-ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
ROOT_PEM_SHA=$(sha256sum "$OUT/root-ca.pem" | cut -d' ' -f1)
AGENT_JOIN_TOKEN="K10${CA_HASH}::node:${AGENT_TOKEN}"
[ -n "$AGENT_TOKEN" ] && [ ${#CA_HASH} -eq 64 ] || die "the secrets file has no agent token or CA root"

build_nodeforge() { # NODE OUTDIR CACHEDIR -> prints image path
  local node=$1 dir=$2 cache=$3
  mkdir -p "$dir"
  write_cluster_toml "$dir/cluster.toml"
  "$BIN" build -c "$dir/cluster.toml" --secrets "$SECRETS" --cache-dir "$cache" -o "$dir/out" "$node" >&2 ||
    die "nodeforge build $node failed"
  echo "$dir/out/$node/$node.img"
}

# Deterministic pseudo-UUID from a string (for the hand-made CIDATA partition).
uuid_of() { printf '%s' "$1" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'; }

write_seed() { # NODE ROLE DIR   (the hand-written seed: what nodeforge renders, minimal)
  local node=$1 role=$2 dir=$3 exec cfg
  mkdir -p "$dir/k3s"
  if [ "$role" = server ]; then
    exec=server
    cfg="      token: \"$TOKEN\"
      write-kubeconfig-mode: \"0600\""
  else
    exec=agent
    cfg="      token: \"$TOKEN\"
      server: \"https://$SERVER_IP:6443\""
  fi
  local x
  cfg+=$'\n      node-taint: []'
  for x in ${ROLE_TAINTS[$role]} ${NODE_TAINTS[$node]}; do cfg+=$'\n        - '"\"$x\""; done
  cfg+=$'\n      node-label: []'
  for x in ${NODE_LABELS[$node]}; do cfg+=$'\n        - '"\"$x\""; done
  cfg=${cfg//: \[\]$'\n'/:$'\n'}
  local ip=$SERVER_IP
  [ "$role" = agent ] && ip=$AGENT_IP
  local bin=k3s
  [ "$ARCH" = arm64 ] && bin=k3s-arm64
  cp "$MIRROR/$bin" "$dir/k3s/k3s"
  cp "$MIRROR/install.sh" "$dir/k3s/install.sh"
  cat >"$dir/user-data" <<EOF
#cloud-config
hostname: $node
preserve_hostname: false
users:
  - name: $ADMIN_USER
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - "$SSH_PUB"
ssh_pwauth: false
disable_root: true
growpart:
  mode: auto
  devices: ["/"]
write_files:
  - path: /etc/rancher/k3s/config.yaml
    permissions: "0600"
    content: |
$cfg
  - path: /etc/rancher/node/password
    permissions: "0600"
    content: "${NODE_PW[$node]}"
runcmd:
  - [sh, -c, 'set -e; d=\$(mktemp -d); mount -o ro /dev/disk/by-label/CIDATA "\$d"; install -m 0755 "\$d/k3s/k3s" /usr/local/bin/k3s; INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_EXEC=$exec sh "\$d/k3s/install.sh"; umount "\$d"']
EOF
  cat >"$dir/network-config" <<EOF
network:
  version: 2
  ethernets:
    $IFACE:
      addresses: [$ip/24]
EOF
  local iid
  iid=nf-$(cat "$dir/user-data" "$dir/network-config" | sha256sum | cut -c1-16)
  printf 'instance-id: %s\nlocal-hostname: %s\n' "$iid" "$node" >"$dir/meta-data"
}

# Hand composition (until nodeforge build lands): the fixture with a CIDATA FAT inserted before
# root, root's bytes moved and its number, GUIDs and filesystem UUID kept (docs/debian-cloud-images.md).
build_hand() { # NODE ROLE OUTDIR -> prints image path
  local node=$1 role=$2 dir=$3
  mkdir -p "$dir"
  write_seed "$node" "$role" "$dir/seed"
  local fat="$dir/cidata.fat" vol
  vol=$(printf '%s' "$node" | sha256sum | cut -c1-8)
  mkfs.vfat -C -n CIDATA -i "$vol" "$fat" $((32 * 1024)) >/dev/null
  (cd "$dir/seed" && mcopy -s -m -i "$fat" ./* ::/)
  local img="$dir/$node.img"
  if [ "$ARCH" = x86_64 ]; then
    tar -xJf "$FIXTURE" -C "$dir" disk.raw
    local base="$dir/disk.raw"
    python3 - "$base" >"$dir/layout" <<'EOF'
import json, subprocess, sys
t = json.loads(subprocess.check_output(["sfdisk", "-J", sys.argv[1]]))["partitiontable"]
print(t["id"], t["sectorsize"] if "sectorsize" in t else 512)
for p in t["partitions"]:
    print(p["node"][len(sys.argv[1]):], p["start"], p["size"], p["type"], p["uuid"])
EOF
    local disk_guid rs rn g1 g14 g15
    disk_guid=$(awk 'NR==1{print $1}' "$dir/layout")
    read -r _ rs rn _ g1 < <(awk '$1=="1"' "$dir/layout")
    g14=$(awk '$1=="14"{print $5}' "$dir/layout")
    g15=$(awk '$1=="15"{print $5}' "$dir/layout")
    [ "$rs" = 262144 ] || die "unexpected fixture layout (root at $rs)"
    local cid_start=262144 cid_sectors=65536
    local new_rs=$((cid_start + cid_sectors))
    local size=$(((new_rs + rn + 33) * 512))
    rm -f "$img"
    truncate -s "$size" "$img"
    sgdisk --disk-guid="$disk_guid" \
      -n 14:2048:8191 -t 14:EF02 -u 14:"$g14" \
      -n 15:8192:262143 -t 15:EF00 -u 15:"$g15" \
      -n 2:$cid_start:$((new_rs - 1)) -t 2:0700 -u 2:"$(uuid_of "$node-cidata")" \
      -n 1:$new_rs:$((new_rs + rn - 1)) -t 1:8304 -u 1:"$g1" "$img" >/dev/null
    dd if="$base" of="$img" bs=1M skip=4 seek=4 count=124 conv=notrunc,sparse status=none
    dd if="$fat" of="$img" bs=1M seek=$((cid_start / 2048)) conv=notrunc,sparse status=none
    dd if="$base" of="$img" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes skip=$((rs * 512)) \
      seek=$((new_rs * 512)) count=$((rn * 512)) conv=notrunc,sparse status=none
    rm -f "$base"
    [ "$(sfdisk -J "$img" | grep -c '"node"')" = 4 ] && sgdisk -v "$img" | grep -q 'No problems found' ||
      die "hand-made GPT of $img is invalid"
  else
    xz -dc "$FIXTURE" | cp --sparse=always /dev/stdin "$dir/base.img"
    local base="$dir/base.img" id fs fn rs rn
    id=$(sfdisk -J "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["id"])')
    read -r fs fn < <(sfdisk -d "$base" | awk -F'[=,]' '/1 :/{gsub(/ /,""); print $2, $4}')
    read -r rs rn < <(sfdisk -d "$base" | awk -F'[=,]' '/2 :/{gsub(/ /,""); print $2, $4}')
    local cid_start=$rs cid_sectors=65536
    local new_rs=$((cid_start + cid_sectors))
    rm -f "$img"
    truncate -s $(((new_rs + rn) * 512)) "$img"
    printf 'label: dos\nlabel-id: %s\n1 : start=%s, size=%s, type=c\n2 : start=%s, size=%s, type=83\n3 : start=%s, size=%s, type=c\n' \
      "$id" "$fs" "$fn" "$new_rs" "$rn" "$cid_start" "$cid_sectors" | sfdisk -q --no-reread "$img"
    dd if="$base" of="$img" bs=512 skip="$fs" seek="$fs" count="$fn" conv=notrunc,sparse status=none
    dd if="$fat" of="$img" bs=512 seek="$cid_start" conv=notrunc,sparse status=none
    dd if="$base" of="$img" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes skip=$((rs * 512)) \
      seek=$((new_rs * 512)) count=$((rn * 512)) conv=notrunc,sparse status=none
    rm -f "$base"
  fi
  rm -f "$fat"
  echo "$img"
}

build_image() { # NODE ROLE TAG -> image path
  local node=$1 role=$2 tag=$3 t0 img
  t0=$(date +%s)
  case "$(compose_mode)" in
    nodeforge) img=$(build_nodeforge "$node" "$OUT/build-$tag" "$OUT/cache-$tag") || exit 1 ;;
    hand)
      case "$FAMILY" in debian-generic | debian-raspi) ;; *) die "NODEFORGE_BOOT_COMPOSE=hand knows only x86_64 and debian-raspi" ;; esac
      img=$(build_hand "$node" "$role" "$OUT/build-$tag") || exit 1
      ;;
    *) die "NODEFORGE_BOOT_COMPOSE must be nodeforge or hand" ;;
  esac
  [ -s "$img" ] || die "no image for $node at $img"
  log "built $node ($tag, $(compose_mode)) in $(($(date +%s) - t0)) s: $img"
  echo "$img"
}

# Offset (bytes) of the seed FAT in IMG, for mtools' IMG@@OFFSET: the FAT labelled CIDATA, else
# (Raspberry Pi OS, Ubuntu) the boot FAT, partition 1.
seed_offset() {
  local img=$1 start
  for start in $(sfdisk -d "$img" | sed -n 's/.*start= *\([0-9]*\).*/\1/p'); do
    if mlabel -s -i "$img@@$((start * 512))" :: 2>/dev/null | grep -q CIDATA; then
      echo $((start * 512))
      return
    fi
  done
  [ "$ARCH" = arm64 ] || die "no CIDATA FAT in $img"
  sfdisk -d "$img" | awk -F'[=,]' '/1 :/{gsub(/ /,""); print $2 * 512}'
}

# ---------------------------------------------------------------------------------------------
# Booting and watching.
PORT_BASE=$((20000 + $$ % 20000))

# boot NAME IMG NETMODE(listen|connect|solo) PORT MAC [PEER] -- runs in the background, writes
# NAME.*; with PEER, the VM stays up (serving 6443) until PEER's boot has ended too.
boot() {
  local name=$1 img=$2 netmode=$3 port=$4 mac=$5 peer=${6:-}
  local disk="$OUT/$name.disk" serial="$OUT/$name.serial"
  # BOOT_REUSE_DISK=FILE (issue 14): boot that disk as it was left (a second boot of the same
  # node; it is neither copied nor grown again). BOOT_KEEP_DISK=1 keeps the disk after the boot.
  if [ -n "${BOOT_REUSE_DISK:-}" ]; then
    mv "$BOOT_REUSE_DISK" "$disk"
  else
  cp --sparse=always "$img" "$disk"
  # Root is the largest partition in every layout: remember its size to prove it grew.
  sfdisk -J "$disk" | python3 -c 'import json,sys; print(max(p["size"] for p in json.load(sys.stdin)["partitiontable"]["partitions"]) * 512)' >"$OUT/$name.rootsize"
  truncate -s +1G "$disk"
  fi
  local net
  case "$netmode" in
    listen | solo) net="socket,id=n0,listen=127.0.0.1:$port" ;;
    connect) net="socket,id=n0,connect=127.0.0.1:$port" ;;
  esac
  local -a cmd
  if [ "$ARCH" = x86_64 ]; then
    # One TCG thread for both vCPUs: with multi-threaded TCG the kernel's live code patching
    # (int3 + text_poke, e.g. when sched_clock is marked stable) races the other vCPU's cached
    # translation and panics ("Oops: int3" in sched_clock_idle_wakeup_event), seen once in ~10 boots.
    cmd=(qemu-system-x86_64 -accel tcg,thread=single -machine q35 -m 2048 -smp 2 -bios "$OVMF"
      -drive "file=$disk,format=raw,if=virtio"
      -netdev "$net" -device "virtio-net-pci,netdev=n0,mac=$mac,addr=0x3"
      -nographic -monitor none -serial "file:$serial")
  else
    # The Pi image's own kernel and initrd, read from its boot FAT (QEMU cannot run the Pi
    # firmware), named as the firmware finds them: config.txt's `kernel=` and `initramfs` lines,
    # else kernel8.img and (auto_initramfs) initramfs8. The kernel line is the image's own
    # cmdline.txt with the Pi's serial consoles swapped for the virt machine's PL011 (ttyAMA0).
    local off append kfile ifile
    off=$(sfdisk -d "$disk" | awk -F'[=,]' '/1 :/{gsub(/ /,""); print $2 * 512}')
    mtype -i "$disk@@$off" ::config.txt | tr -d '\r' >"$OUT/$name.config.txt"
    kfile=$(sed -n 's/^kernel=//p' "$OUT/$name.config.txt" | tail -n1)
    ifile=$(sed -n 's/^initramfs[ \t]\+\([^ \t]*\).*/\1/p' "$OUT/$name.config.txt" | tail -n1)
    mcopy -o -i "$disk@@$off" "::${kfile:-kernel8.img}" "$OUT/$name.vmlinuz" || die "$name: no kernel ${kfile:-kernel8.img} on the boot FAT"
    mcopy -o -i "$disk@@$off" "::${ifile:-initramfs8}" "$OUT/$name.initrd" || die "$name: no initramfs ${ifile:-initramfs8} on the boot FAT"
    append=$(mtype -i "$disk@@$off" ::cmdline.txt | tr -d '\r\n' |
      sed -E 's/(^| )console=[^ ]*//g; s/^ +//')
    # TEST-ONLY concession to TCG on a loaded machine (udev may need minutes; see the x86 fixture).
    append="$append console=ttyAMA0 systemd.default_device_timeout_sec=900"
    echo "$append" >"$OUT/$name.cmdline"
    cmd=(qemu-system-aarch64 -M virt -cpu cortex-a72 -m 2048 -smp 2
      -kernel "$OUT/$name.vmlinuz" -initrd "$OUT/$name.initrd"
      -append "$append"
      -drive "file=$disk,format=raw,if=virtio"
      -netdev "$net" -device "virtio-net-pci,netdev=n0,mac=$mac,addr=0x3"
      -nographic -monitor none -serial "file:$serial")
  fi
  # BOOT_QEMU_EXTRA (issue 14): e.g. `-rtc base=...`, a real-time clock behind the build time.
  # shellcheck disable=SC2206
  [ -n "${BOOT_QEMU_EXTRA:-}" ] && cmd+=(${BOOT_QEMU_EXTRA})
  : >"$serial"
  local t0 qpid
  t0=$(date +%s)
  echo "${cmd[*]}" >"$OUT/$name.cmd"
  "${cmd[@]}" </dev/null >"$OUT/$name.qemu.log" 2>&1 &
  qpid=$!
  echo "$qpid" >"$OUT/$name.pid"
  # This runs in a background subshell: its QEMU goes with it.
  trap 'kill "$qpid" 2>/dev/null; exit 143' INT TERM
  watch_boot "$name" "$serial" "$t0" "$qpid"
  if [ -n "$peer" ]; then
    while [ ! -e "$OUT/$peer.result" ] && kill -0 "$qpid" 2>/dev/null && [ $(($(date +%s) - t0)) -lt $((TIMEOUT + 120)) ]; do
      sleep 2
    done
  fi
  kill "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  [ "${BOOT_KEEP_DISK:-0}" = 1 ] || rm -f "$disk"
  rm -f "$OUT/$name.pid"
}

# Records the first time each NF-MARK line appears; stops on `NF-MARK done`, on cloud-init having
# finished without the stand-in starting (a broken seed), on QEMU exiting, or at the timeout.
watch_boot() {
  local name=$1 serial=$2 t0=$3 qpid=$4 now el finished_at=0 result=timeout
  local marks="$OUT/$name.marks"
  : >"$marks"
  declare -A seen=()
  while :; do
    sleep 2
    now=$(date +%s)
    el=$((now - t0))
    while IFS= read -r line; do
      [ -n "${seen[$line]:-}" ] && continue
      seen[$line]=1
      printf '%4d s  %s\n' "$el" "$line" >>"$marks"
    done < <(tr -d '\r' <"$serial" | grep -a -o 'NF-MARK .*' || true)
    if grep -q ' NF-MARK done$' "$marks"; then result=done; break; fi
    if [ "$finished_at" = 0 ] && tr -d '\r' <"$serial" | grep -aq 'Cloud-init v\. .* finished at'; then
      finished_at=$now
      printf '%4d s  %s\n' "$el" "(cloud-init finished)" >>"$marks"
    fi
    if [ "$REAL_K3S" = 1 ] && [ "$finished_at" != 0 ] && [ $((now - finished_at)) -ge 60 ]; then
      result=done
      break
    fi
    # BOOT_K3S_GRACE (issue 14): a boot whose k3s first waits for the clock (at most 180 s).
    if [ "$finished_at" != 0 ] && [ $((now - finished_at)) -ge "${BOOT_K3S_GRACE:-90}" ] && ! grep -q 'NF-MARK k3s-start' "$marks"; then
      result=no-k3s-after-cloud-init
      break
    fi
    if ! kill -0 "$qpid" 2>/dev/null; then result=qemu-exited; break; fi
    if [ "$el" -ge "$TIMEOUT" ]; then result=timeout; break; fi
  done
  echo "$result $el" >"$OUT/$name.result"
}

# ---------------------------------------------------------------------------------------------
# Assertions.
show_guest_errors() {
  local name=$1
  log "--- $name: the guest's cloud-init warnings and errors (verbatim) ---"
  grep -a 'NF-MARK cloud-init-\(status\|log\)' "$OUT/$name.marks" >&2 || true
  # Each warning with its continuation lines (a YAML error spans several).
  tr -d '\r' <"$OUT/$name.serial" | grep -a -A6 -E '\[(WARNING|ERROR|CRITICAL)\]|Traceback' |
    grep -av -E 'NF-MARK|randomart|^\[ *[0-9.]+\] cloud-init\[[0-9]+\]: [|+]' | head -n 60 >&2 || true
  log "--- $name: last serial lines ---"
  tr -d '\r' <"$OUT/$name.serial" | grep -av -e 'ssh-' -e 'ecdsa-' -e '^ *$' | tail -n 12 >&2 || true
}

# expect NAME ROLE HOSTNAME: what check.py must find in NAME's boot (no secret in it, only hashes).
expect() {
  local name=$1 role=$2 host=$3 server_url=null mgr=null ip=$SERVER_IP
  [ "$role" = agent ] && server_url="\"https://$SERVER_IP:6443\"" && ip=$AGENT_IP
  case "$FAMILY" in
    raspios) mgr='"nm"' ;;
    ubuntu-raspi | debian-generic) mgr='"networkd"' ;;
  esac
  local unit=k3s token=$TOKEN tls_root="\"$ROOT_PEM_SHA\""
  [ "$role" = agent ] && unit=k3s-agent token=$AGENT_JOIN_TOKEN tls_root=null
  # The hand-made seeds (NODEFORGE_BOOT_COMPOSE=hand) know nothing of the CA.
  [ "$(compose_mode)" = hand ] && token=$TOKEN tls_root=null
  # The agent's join check must accept the server's CA by the hash in its token; the server's
  # manifests directory must hold exactly its seed's manifests (an agent has none).
  local join_ca=null manifests="$MANIFESTS_JSON"
  [ "$role" = agent ] && join_ca="\"$CA_HASH\"" && manifests='{}'
  [ "$(compose_mode)" = hand ] && join_ca=null manifests=null
  cat >"$OUT/$name.expect.json" <<EOF
{"name": "$name", "hostname": "$host", "node_name": "$host", "role": "$role", "unit": "$unit", "admin_user": "$ADMIN_USER",
 "ssh_fp": "$SSH_FP", "token_sha256": "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)",
 "tls_root_sha256": $tls_root, "join_ca_sha256": $join_ca, "manifests": $manifests,
 "node_password_sha256": "$(printf '%s' "${NODE_PW[$host]}" | sha256sum | cut -d' ' -f1)",
 "server_url": $server_url, "labels": $(json_list "${NODE_LABELS[$host]}"),
 "taints": $(json_list "${ROLE_TAINTS[$role]} ${NODE_TAINTS[$host]}"),
 "root_size_before": $(cat "$OUT/$name.rootsize" 2>/dev/null || echo 0), "address": "$ip/24",
 "net_manager": $mgr, "require_secret_scan": ${NODEFORGE_BOOT_REQUIRE_SECRET_SCAN:-false}}
EOF
  # The clock path this boot must show (issue 14; nodeforge's seeds only): rtc, wait or later.
  if [ "$(compose_mode)" = nodeforge ] && [ -n "${CLOCK_EXPECT[$name]:-}" ]; then
    python3 - "$OUT/$name.expect.json" "${CLOCK_EXPECT[$name]}" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
e["clock"], e["clock_bound"] = sys.argv[2], 180
if sys.argv[2] == "later":
    e["require_secret_scan"] = True
json.dump(e, open(sys.argv[1], "w"))
PY
  fi
}

# check NAME ROLE HOSTNAME: judges the boot with check.py; returns non-zero and shows the guest's
# errors when any property fails.
check() {
  local name=$1 role=$2 host=$3 fails=()
  local result
  result=$(cat "$OUT/$name.result")
  log "$name: boot ended: $result; markers (seconds after QEMU started):"
  sed 's/^/    /' "$OUT/$name.marks" >&2
  [ "${result%% *}" = done ] || fails+=("no 'NF-MARK done' ($result)")
  if [ "$REAL_K3S" = 1 ]; then
    # A real k3s has no checker: judge cloud-init from the console (and the agent cannot prove
    # the join from here; see tests/boot/README.md).
    grep -q '(cloud-init finished)' "$OUT/$name.marks" || fails+=("cloud-init did not finish")
    if tr -d '\r' <"$OUT/$name.serial" | grep -aqE 'cloud-init\[[0-9]+\]: .*\[(WARNING|ERROR|CRITICAL)\]'; then
      fails+=("cloud-init logged warnings or errors")
    fi
  else
    expect "$name" "$role" "$host"
    python3 "$CHECK" boot "$OUT/$name.serial" "$OUT/$name.expect.json" >"$OUT/$name.verdict" 2>&1 || true
    local f
    while IFS= read -r f; do fails+=("${f#FAIL "$name": }"); done < <(grep '^FAIL ' "$OUT/$name.verdict")
    grep -q "^PASS $name\$" "$OUT/$name.verdict" || [ ${#fails[@]} -gt 0 ] ||
      fails+=("check.py gave no verdict: $(head -c 300 "$OUT/$name.verdict")")
  fi
  echo "boot $ARCH $FAMILY $name $result" >>"$TIMINGS"
  sed "s/^/  $ARCH $FAMILY $name /" "$OUT/$name.marks" | grep -E 'k3s-start|cloud-init-finished|\(cloud-init finished\)|server-reachable|NF-MARK done' >>"$TIMINGS" || true
  if [ ${#fails[@]} -gt 0 ]; then
    local f
    for f in "${fails[@]}"; do log "FAIL $name: $f"; done
    show_guest_errors "$name"
    return 1
  fi
  log "PASS $name"
}

# ---------------------------------------------------------------------------------------------
log "fixture: $FIXTURE; compose: $(compose_mode); timeout per boot: ${TIMEOUT}s"
mkdir -p "$(dirname "$TIMINGS")"
echo "# $(date -u +%FT%TZ) tests/boot/run.sh $ARCH (compose: $(compose_mode))" >>"$TIMINGS"
T_ALL=$(date +%s)
# arm64 boots only the pair by default (the rebuild and broken-seed proofs are the same code).
ONLY=${NODEFORGE_BOOT_ONLY:-all}
[ "$ARCH" = arm64 ] && ONLY=${NODEFORGE_BOOT_ONLY:-pair}

SERVER_IMG=$(build_image nf-server server a) || die "building nf-server failed"
AGENT_IMG=$(build_image nf-agent agent a) || die "building nf-agent failed"
# The cluster names no family: nodeforge must have recognised the fixture's shape by itself.
if [ "$(compose_mode)" = nodeforge ]; then
  for img in "$FIXTURE" "$SERVER_IMG"; do
    case "$img" in *.tar.xz) continue ;; esac
    got=$("$BIN" inspect --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("family") or "")')
    if [ "$(echo "$got" | tr 'A-Z' 'a-z')" = "${FAMILY//-/}" ]; then
      log "PASS family: nodeforge detects $(basename "$img") as $got"
    else
      log "FAIL family: nodeforge detects $(basename "$img") as '$got', want $FAMILY"
      FAILED=1
    fi
  done
fi

# Clock paths (issue 14): QEMU's PC has a battery-backed RTC (no wait); the agent's RTC is set
# behind the build time (a flat battery, or a Pi without RTC): its first k3s start must wait for
# NTP, which no QEMU guest here reaches, and start after the bounded wait with the warning.
declare -A CLOCK_EXPECT=([server]=rtc [agent]=wait [rebuild]=rtc [server-again]=later)
AGENT_RTC="-rtc base=2019-06-01T00:00:00" # before the default SOURCE_DATE_EPOCH (2020-01-01)
# The server's auto-deploy manifests as its seed carries them (name -> sha256 of the content), read
# with mtools and PyYAML: the guest must hold exactly these, mode 0600 (issue 18).
MANIFESTS_JSON=null
if [ "$(compose_mode)" = nodeforge ]; then
  mcopy -n -i "$SERVER_IMG@@$(seed_offset "$SERVER_IMG")" ::user-data "$OUT/server-user-data" ||
    die "cannot read user-data from $SERVER_IMG"
  MANIFESTS_JSON=$(python3 - "$OUT/server-user-data" <<'EOF'
import hashlib, json, sys, yaml
pre = "/var/lib/rancher/k3s/server/manifests/"
d = yaml.safe_load(open(sys.argv[1])) or {}
print(json.dumps({w["path"][len(pre):]: hashlib.sha256(w["content"].encode()).hexdigest()
                  for w in d.get("write_files") or [] if w.get("path", "").startswith(pre)}, sort_keys=True, separators=(",", ":")))
EOF
  )
  rm -f "$OUT/server-user-data"
  [ "$MANIFESTS_JSON" != "{}" ] || die "the server's seed has no manifests: the manifests check could not fail"
fi

if [ "$ONLY" != second ]; then
  log "pair 1: server + agent on one network ($NET_PREFIX.0/24)"
  BOOT_KEEP_DISK=1 boot server "$SERVER_IMG" listen "$PORT_BASE" 52:54:00:4e:46:10 agent &
  p1=$!
  sleep 3
  BOOT_QEMU_EXTRA=$AGENT_RTC BOOT_K3S_GRACE=400 boot agent "$AGENT_IMG" connect "$PORT_BASE" 52:54:00:4e:46:11 &
  p2=$!
  wait $p1 $p2
  check server server nf-server || FAILED=1
  check agent agent nf-agent || FAILED=1
  # Second boot of the same server disk (issue 14): the same checks again, and check.py again:
  # same instance-id, no per-instance module run again, the seed still scrubbed, k3s started.
  if [ -f "$OUT/server.disk" ]; then
    log "server again: a second boot of the server's disk"
    cp "$OUT/server.rootsize" "$OUT/server-again.rootsize"
    BOOT_REUSE_DISK="$OUT/server.disk" boot server-again "$SERVER_IMG" solo $((PORT_BASE + 3)) 52:54:00:4e:46:10 &
    wait $!
    check server-again server nf-server || FAILED=1
    if [ "$REAL_K3S" = 0 ]; then
      if python3 "$CHECK" again "$OUT/server.serial" "$OUT/server-again.serial" >"$OUT/again.verdict" 2>&1; then
        log "PASS again: same instance-id, no per-instance module or first-boot script ran again, seed still scrubbed"
      else
        log "$(cat "$OUT/again.verdict")"
        FAILED=1
      fi
    fi
  else
    log "FAIL server again: the server's disk was not kept"
    FAILED=1
  fi
fi

if [ "$ONLY" != pair ]; then
  # Rebuild identity: a fresh build of the same node (other output and cache dirs).
  REBUILD_IMG=$(build_image nf-server server b) || die "rebuilding nf-server failed"
  if python3 "$CHECK" rebuild "$SERVER_IMG" "$REBUILD_IMG" >"$OUT/rebuild-bytes.verdict" 2>&1; then
    log "PASS rebuild: the image is byte-identical"
  else
    log "$(cat "$OUT/rebuild-bytes.verdict")"
    FAILED=1
  fi
  # Broken seed: the agent image with its user-data replaced by invalid YAML on the seed FAT.
  BROKEN_IMG="$OUT/broken.img"
  cp --sparse=always "$AGENT_IMG" "$BROKEN_IMG"
  off=$(seed_offset "$BROKEN_IMG")
  printf '#cloud-config\nusers: [ {name: nf\nruncmd: [\n' >"$OUT/broken-user-data"
  mcopy -o -i "$BROKEN_IMG@@$off" "$OUT/broken-user-data" ::user-data

  log "pair 2: rebuilt server (identity) + broken seed"
  boot rebuild "$REBUILD_IMG" solo $((PORT_BASE + 1)) 52:54:00:4e:46:10 &
  p1=$!
  boot broken "$BROKEN_IMG" solo $((PORT_BASE + 2)) 52:54:00:4e:46:12 &
  p2=$!
  wait $p1 $p2
  check rebuild server nf-server || FAILED=1
  if [ "$ONLY" = all ] && [ -s "$OUT/server.marks" ]; then
    if python3 "$CHECK" identity "$OUT/server.serial" "$OUT/rebuild.serial" >"$OUT/identity.verdict" 2>&1; then
      log "PASS identity: node-password and instance-id unchanged after rebuild"
    else
      log "$(cat "$OUT/identity.verdict")"
      FAILED=1
    fi
  fi
  # The broken seed must fail the harness, with the guest's own cloud-init error in its output.
  if check broken agent nf-agent >"$OUT/broken.check" 2>&1; then
    cat "$OUT/broken.check" >&2
    log "FAIL broken-seed: the harness accepted a node whose user-data is invalid"
    FAILED=1
  elif grep -aE 'cloud-init\[[0-9]+\]: .*\[(WARNING|ERROR|CRITICAL)\]|cloud-init warnings|cloud-init errors' "$OUT/broken.check" | grep -aqiE 'yaml|cloud.config|user.?data'; then
    log "PASS broken-seed: the harness failed and showed the guest's own error:"
    grep -aE 'cloud-init\[[0-9]+\]: .*\[(WARNING|ERROR|CRITICAL)\]|cloud-init warnings|cloud-init errors' "$OUT/broken.check" | head -n 3 | cut -c1-400 | sed 's/^/    /' >&2
  else
    cat "$OUT/broken.check" >&2
    log "FAIL broken-seed: the harness failed but the guest's cloud-init error is not in its output"
    FAILED=1
  fi
fi

log "total $(($(date +%s) - T_ALL)) s"
echo "total $ARCH $FAMILY $(($(date +%s) - T_ALL))s" >>"$TIMINGS"
if [ "$FAILED" != 0 ]; then
  log "boot test FAILED (serial logs in $OUT)"
  exit 1
fi
log "boot test passed"
