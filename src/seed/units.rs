//! systemd units and drop-ins written onto nodes: the k3s clock wait and the GPU setup.

use super::{CLOCK_WAIT_SECONDS, GPU_UNIT, SCRIPT_DIR};

/// The systemd drop-in that makes k3s's first start wait for a synchronised clock (see
/// `time-wait.sh`); `epoch` (Unix seconds) is the earliest time the clock may show.
pub fn clock_dropin(epoch: i64) -> String {
    format!(
        "# nodeforge: the clock never runs earlier than the image's build time, and k3s's first start\n\
         # waits at most {CLOCK_WAIT_SECONDS} s for a synchronised clock (none when a battery-backed RTC set it),\n\
         # then starts anyway with a warning (journalctl -u this unit; outcome in /var/lib/nodeforge/time-sync).\n\
         [Service]\n\
         ExecStartPre=/bin/sh {SCRIPT_DIR}/time-wait.sh {epoch} {CLOCK_WAIT_SECONDS}\n"
    )
}

/// The unit that runs a GPU worker's setup (`nvidia.sh`) at first boot and on every later boot
/// until it succeeds; bounded so a hung download never holds the boot for long.
pub fn gpu_unit() -> String {
    format!(
        "# nodeforge: GPU setup (NVIDIA driver + container toolkit), retried every boot until it succeeds.\n\
         # State: systemctl status {GPU_UNIT}, /var/lib/nodeforge/gpu-setup, node label nodeforge.io/gpu-setup.\n\
         [Unit]\n\
         Description=nodeforge GPU setup (NVIDIA driver and container toolkit)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         TimeoutStartSec=20min\n\
         ExecStart=/bin/sh {SCRIPT_DIR}/nvidia.sh\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}
