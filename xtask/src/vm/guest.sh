# shellcheck shell=bash
# The body of the script a guest runs (xtask/src/vm/guest.rs writes the
# preamble that sets M, STAGE, PYTHON, TIMEOUT and MODULES, and appends one
# `run NAME BINARY ARGS...` line per test binary). Runs inside the guest, as root.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
echo "$M START $(uname -r)"
# Only warnings and worse on the console (lockups, oopses, WARNs and their
# traces), not the informational chatter (loop devices, ext4 mounts).
dmesg -n 5 2>/dev/null
grep -q ' /sys/kernel/tracing tracefs ' /proc/mounts || mount -t tracefs nodev /sys/kernel/tracing
grep -q ' /sys/kernel/tracing tracefs ' /proc/mounts && echo "$M TRACEFS mounted" || echo "$M TRACEFS missing"
for m in $MODULES; do
  if [ -e /sys/module/$m ]; then s=present
  elif modprobe $m 2>/dev/null; then s=loaded
  else s=unavailable; fi
  echo "$M MODULE $m $s"
done
[ -c /dev/kvm ] && echo "$M DEVKVM yes" || echo "$M DEVKVM no"
# The binaries run from tmpfs, as from a local disk on a host: executed from the
# 9p root their own code pages would come in as major faults.
S=$(mktemp -d /dev/shm/vm-test.XXXXXX)
cp -a "$STAGE"/. "$S"/ || { echo "$M STAGE-FAILED"; exit 1; }
T=$S/tracer
echo "$M DOCTOR $("$T" doctor --json 2>&1 | tr -d '\n')"
timeout 120 "$T" kvmexits -v 1 1 2>&1 >/dev/null | sed "s/^/$M KVMEXITS /"
# What a hung binary and the kernel are doing: its processes' kernel stacks,
# every CPU's backtrace and the blocked tasks (sysrq l, w).
descendants() {
  echo "$1"
  for c in $(ps -e -o pid=,ppid= | awk -v p="$1" '$2 == p { print $1 }'); do descendants "$c"; done
}
diagnose() {
  echo "$M DIAG-BEGIN $name"
  ps -e -L -o pid,tid,stat,pcpu,wchan:28,comm --sort=-pcpu | head -n 30
  for p in $(descendants "$1"); do
    for t in /proc/$p/task/*; do
      [ -e "$t/stat" ] || continue
      echo "--- $p/${t##*/} $(cat $t/comm 2>/dev/null) state $(awk '{print $3}' $t/stat 2>/dev/null)"
      cat $t/stack 2>/dev/null
    done
  done
  # Into the log only (read back below), not onto the console as well.
  dmesg -C 2>/dev/null
  dmesg -n 1 2>/dev/null
  echo l > /proc/sysrq-trigger 2>/dev/null
  echo w > /proc/sysrq-trigger 2>/dev/null
  sleep 2
  dmesg -n 5 2>/dev/null
  dmesg | tail -n 150
  echo "$M DIAG-END $name"
}
run() {
  name=$1; shift
  echo "$M BEGIN $name"
  dmesg -C 2>/dev/null
  start=$SECONDS
  (cd /tmp && TRACER_BIN="$T" TRACER_PYTHON="$PYTHON" CI=true exec "$S/deps/$@" </dev/null 2>&1) &
  pid=$!
  # The limit: past it, say what is stuck, then kill the binary and its children.
  (for _ in $(seq "$TIMEOUT"); do sleep 1; kill -0 $pid 2>/dev/null || exit 0; done
   echo "$M HUNG $name after $TIMEOUT s"
   diagnose $pid > /tmp/vm-test-diag 2>&1
   kill -9 $(descendants $pid) 2>/dev/null
   cat /tmp/vm-test-diag) &
  watchdog=$!
  wait $pid
  rc=$?
  wait $watchdog
  echo
  echo "$M END $name rc=$rc secs=$((SECONDS - start))"
  if [ "$rc" -ne 0 ]; then
    echo "$M DMESG $name"
    dmesg | tail -n 60
    echo "$M DMESG-END $name"
  fi
}
