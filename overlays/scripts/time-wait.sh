#!/bin/sh
# nodeforge: run by k3s.service / k3s-agent.service before k3s starts (ExecStartPre in a drop-in).
# A Raspberry Pi has no real-time clock: it boots with the time saved at the last shutdown or an old
# build time until NTP answers, and certificates made or checked then have a wrong validity window.
#  1. The clock never runs earlier than EPOCH (the image's build time, SOURCE_DATE_EPOCH).
#  2. The first start waits until the kernel clock is synchronised, at most SECONDS (default 180);
#     then k3s starts anyway with a warning in its journal. Later starts do not wait. A clock the
#     kernel set at boot from a battery-backed real-time clock (a PC; rtc0's hctosys = 1) is
#     trusted without waiting, unless the RTC reads earlier than EPOCH (a flat battery; checked on
#     the RTC itself, rtc0's since_epoch, because the seed's bootcmd has already moved the system
#     clock up to EPOCH by the time k3s starts).
# The wait uses what the family ships: systemd-time-wait-sync (systemd-timesyncd and any daemon
# that marks the kernel clock synchronised), else chronyc waitsync, else timedatectl.
# The outcome is kept in /var/lib/nodeforge/time-sync.
# usage: time-wait.sh EPOCH [SECONDS]
# NODEFORGE_ROOT (tests only): prefix for the state file and the systemd helper.
set -u
floor="$1"
bound="${2:-180}"
root="${NODEFORGE_ROOT:-}"
state="$root/var/lib/nodeforge/time-sync"
now="$(date +%s)"
floored=no
if [ "$now" -lt "$floor" ]; then
  floored=yes
  echo "nodeforge: the clock ($now) is earlier than the image's build time ($floor): setting it to $floor" >&2
  date -u -s "@$floor" >/dev/null || echo "nodeforge: WARNING: could not set the clock" >&2
fi
[ -e "$state" ] && exit 0
mkdir -p "$(dirname "$state")"
rtc_now="$(cat "$root/sys/class/rtc/rtc0/since_epoch" 2>/dev/null)"
case "$rtc_now" in '' | *[!0-9]*) rtc_now=0 ;; esac
if [ "$floored" = no ] && [ "$(cat "$root/sys/class/rtc/rtc0/hctosys" 2>/dev/null)" = 1 ] &&
  [ "$rtc_now" -ge "$floor" ]; then
  echo "nodeforge: the clock was set from the real-time clock at boot; starting k3s without waiting for NTP"
  echo "set from the real-time clock at boot; no wait" >"$state"
  exit 0
fi
start="$(date +%s)"
synced=no
waitsync=""
for p in "$root/lib/systemd/systemd-time-wait-sync" "$root/usr/lib/systemd/systemd-time-wait-sync"; do
  [ -x "$p" ] && waitsync="$p" && break
done
if [ -e "$root/run/systemd/timesync/synchronized" ]; then
  synced=yes
elif [ -n "$waitsync" ]; then
  timeout "$bound" "$waitsync" && synced=yes
elif command -v chronyc >/dev/null 2>&1; then
  chronyc waitsync "$(((bound + 9) / 10))" 0 0 10 >/dev/null 2>&1 && synced=yes
else
  i=0
  while [ "$i" -lt "$bound" ]; do
    if [ "$(timedatectl show -p NTPSynchronized --value 2>/dev/null)" = yes ]; then
      synced=yes
      break
    fi
    sleep 5
    i=$((i + 5))
  done
fi
took=$(($(date +%s) - start))
if [ "$synced" = yes ]; then
  echo "nodeforge: clock synchronised (waited ${took} s); starting k3s"
  echo "synchronised after ${took} s" >"$state"
else
  echo "nodeforge: WARNING: the clock is not synchronised after ${took} s (no NTP server reachable?); starting k3s anyway: certificates made now may carry a wrong validity window" >&2
  echo "not synchronised after ${took} s; started anyway" >"$state"
fi
exit 0
