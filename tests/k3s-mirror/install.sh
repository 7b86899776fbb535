#!/bin/sh
# ============================================================================================
# TEST-ONLY install.sh. This is NOT get.k3s.io's install.sh and nodeforge never ships it.
# It does on a system what the real one does for an air-gapped install, for nodeforge's boot
# tests: install the (stand-in) k3s binary, write the k3s / k3s-agent systemd unit and its
# 0600 env file, enable and start it. It understands the same environment:
#   INSTALL_K3S_SKIP_DOWNLOAD, INSTALL_K3S_EXEC, INSTALL_K3S_BIN_DIR, INSTALL_K3S_SKIP_ENABLE,
#   INSTALL_K3S_SKIP_START, INSTALL_K3S_SYMLINK, K3S_URL, K3S_TOKEN, K3S_* (saved to the env file).
# ============================================================================================
set -e

info() { echo "[INFO]  (TEST-ONLY install.sh) $*"; }
fatal() {
  echo "[ERROR] (TEST-ONLY install.sh) $*" >&2
  exit 1
}

BIN_DIR=${INSTALL_K3S_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=${INSTALL_K3S_SYSTEMD_DIR:-/etc/systemd/system}

# Command the same way as the real script: INSTALL_K3S_EXEC, then K3S_URL implies agent.
if [ -z "$INSTALL_K3S_EXEC" ] || echo "$INSTALL_K3S_EXEC" | grep -q '^-'; then
  if [ -n "$K3S_URL" ]; then CMD_K3S=agent; else CMD_K3S=server; fi
  CMD_K3S_EXEC="$CMD_K3S${INSTALL_K3S_EXEC:+ $INSTALL_K3S_EXEC}"
else
  CMD_K3S_EXEC="$INSTALL_K3S_EXEC"
  CMD_K3S=$(echo "$INSTALL_K3S_EXEC" | awk '{print $1}')
fi
for a in "$@"; do CMD_K3S_EXEC="$CMD_K3S_EXEC $a"; done
case "$CMD_K3S" in
  server) SYSTEM_NAME=k3s ;;
  agent)
    SYSTEM_NAME=k3s-agent
    [ -n "$K3S_URL" ] || [ -f /etc/rancher/k3s/config.yaml ] || fatal "agent needs K3S_URL or a config.yaml with server"
    ;;
  *) fatal "unknown command '$CMD_K3S' (want server or agent)" ;;
esac

# Binary.
case "$INSTALL_K3S_SKIP_DOWNLOAD" in
  true | binary)
    [ -x "$BIN_DIR/k3s" ] || fatal "INSTALL_K3S_SKIP_DOWNLOAD=$INSTALL_K3S_SKIP_DOWNLOAD but $BIN_DIR/k3s is missing or not executable"
    info "Skipping k3s download and verify"
    ;;
  *) fatal "the TEST-ONLY install.sh cannot download; place k3s in $BIN_DIR and set INSTALL_K3S_SKIP_DOWNLOAD=true" ;;
esac
for cmd in kubectl crictl ctr; do
  if [ ! -e "$BIN_DIR/$cmd" ] && [ "$INSTALL_K3S_SYMLINK" != skip ]; then
    info "Creating $BIN_DIR/$cmd symlink to k3s"
    ln -sf k3s "$BIN_DIR/$cmd"
  fi
done

# Env file (0600): every K3S_* variable, like the real script (it carries the token).
FILE_K3S_ENV="$SYSTEMD_DIR/$SYSTEM_NAME.service.env"
FILE_K3S_SERVICE="$SYSTEMD_DIR/$SYSTEM_NAME.service"
info "env: Creating environment file $FILE_K3S_ENV"
umask 077
env | grep -E '^(K3S|CONTAINERD)_' | sed -e 's/=\(.*\)/="\1"/' >"$FILE_K3S_ENV" || true
chmod 0600 "$FILE_K3S_ENV"
umask 022

info "systemd: Creating service file $FILE_K3S_SERVICE"
cat >"$FILE_K3S_SERVICE" <<EOF
# TEST-ONLY unit written by nodeforge's test install.sh
[Unit]
Description=Lightweight Kubernetes (TEST-ONLY stand-in)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=simple
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-$FILE_K3S_ENV
KillMode=process
Delegate=yes
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStart=$BIN_DIR/k3s $CMD_K3S_EXEC
EOF

# The first-boot scripts' run counter for the boot proof (a second boot must not run them again).
mkdir -p /var/log/k3s-standin && chmod 0700 /var/log/k3s-standin
cat /proc/sys/kernel/random/boot_id >>/var/log/k3s-standin/install.runs 2>/dev/null || true
systemctl daemon-reload
if [ "$INSTALL_K3S_SKIP_ENABLE" != true ]; then
  info "systemd: Enabling $SYSTEM_NAME unit"
  systemctl enable "$SYSTEM_NAME" >/dev/null 2>&1
fi
if [ "$INSTALL_K3S_SKIP_START" != true ] && [ "$INSTALL_K3S_SKIP_ENABLE" != true ]; then
  info "systemd: Starting $SYSTEM_NAME"
  systemctl restart --no-block "$SYSTEM_NAME"
fi
