#!/bin/bash
# sdct.sh - throw-away "systemd as PID 1" container on an overlay of the host root.
# Needs: root, util-linux (unshare, nsenter, setpriv, pivot_root, script), overlayfs,
#        a cgroup2 hierarchy (pure v2 at /sys/fs/cgroup or hybrid at /sys/fs/cgroup/unified).
#
#   sdct.sh boot  DIR        boot; prints host PID of the container's systemd; waits for boot to finish
#   sdct.sh exec  DIR cmd..  run a command inside (systemctl, journalctl, ...)
#   sdct.sh root  DIR        print a host path to the container's root (copy files in/out there)
#   sdct.sh stop  DIR        poweroff, SIGKILL fallback, remove cgroups and DIR
#
# Env knobs: SDCT_BIND="hostdir:ctdir[:ro] ..."  extra bind mounts
#            SDCT_MASK="a.service b.timer"        units masked in the copy (default: host's heavy ones)
#            SDCT_UNIT=multi-user.target          boot target
#            SDCT_NET=1                           private network namespace (only lo)
#            SDCT_CONSOLE=1                       give systemd a pty /dev/console, logged to DIR/console
#            SDCT_SYSTEMD_ARGS="--log-level=debug"
set -euo pipefail
SELF=$(realpath "$0")
CT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

cmd=${1:?usage: sdct.sh boot|exec|root|stop DIR ...}; shift
BASE=$(realpath -m "${1:?DIR}"); shift

case $cmd in
boot)
  mkdir -p "$BASE/root" "$BASE/rw"
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then CG2=/sys/fs/cgroup
  elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then CG2=/sys/fs/cgroup/unified
  else echo "sdct: no cgroup2 hierarchy mounted" >&2; exit 1; fi
  CG="$CG2/sdct-$(basename "$BASE")-$(printf %s "$BASE" | md5sum | cut -c1-8)"   # unique per DIR
  mkdir -p "$CG"; echo "$CG" >"$BASE/cgroup.path"
  t0=$(date +%s%N)
  if [ -n "${SDCT_CONSOLE:-}" ]; then
    script -qfec "$(printf '%q ' "$SELF" launch "$BASE")" "$BASE/console" </dev/null >/dev/null 2>"$BASE/launch.log" &
  else
    "$SELF" launch "$BASE" </dev/null >"$BASE/launch.log" 2>&1 &
  fi
  SD=
  for _ in $(seq 1 400); do
    UN=$(cat "$BASE/unshare.pid" 2>/dev/null || true)
    if [ -n "$UN" ]; then
      c=$(awk '{print $1}' /proc/"$UN"/task/"$UN"/children 2>/dev/null || true)
      if [ -n "$c" ] && [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ]; then SD=$c; break; fi
      [ -d /proc/"$UN" ] || break
    fi
    sleep 0.025
  done
  [ -n "$SD" ] || { echo "sdct: container did not start:" >&2; cat "$BASE/launch.log" >&2; exit 1; }
  echo "$SD" >"$BASE/systemd.pid"
  # unshare sits outside the container's PID namespace: move it out of the container's cgroup,
  # otherwise it shows up there as PID 0 ("Failed to dump process list ... Input/output error").
  echo "$UN" >"$CG2$(sed -n 's/^0:://p' /proc/self/cgroup)/cgroup.procs"
  for _ in $(seq 1 400); do [ -S /proc/"$SD"/root/run/systemd/private ] && break; sleep 0.025; done
  state=$("$SELF" exec "$BASE" timeout 90 systemctl is-system-running --wait || true)
  echo "sdct: $state after $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
  case $state in
    running|degraded) ;;
    *) echo "sdct: the container's systemd did not reach running (state: ${state:-none})" >&2
       exit 1 ;;
  esac
  echo "$SD"
  ;;

launch)  # internal: enter the container cgroup, then create the namespaces
  echo $$ >"$BASE/unshare.pid"
  echo $$ >"$(cat "$BASE/cgroup.path")/cgroup.procs"
  exec unshare --pid --fork --mount --uts --ipc --cgroup ${SDCT_NET:+--net} --propagation private \
       -- "$SELF" inner "$BASE"
  ;;

inner)   # internal: PID 1 of the new namespaces; build the root, exec systemd
  R=$BASE/root
  mount -t tmpfs -o mode=755 sdct-rw "$BASE/rw"             # writable layer: RAM, dies with the ns
  mkdir "$BASE/rw/upper" "$BASE/rw/work"
  mount -t overlay sdct-root -o "lowerdir=/,upperdir=$BASE/rw/upper,workdir=$BASE/rw/work" "$R"

  mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
  for p in sys sysrq-trigger; do                            # kernel knobs read-only (like nspawn)
    [ -e "$R/proc/$p" ] || continue
    mount --bind "$R/proc/$p" "$R/proc/$p"; mount -o remount,bind,ro "$R/proc/$p"
  done
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"          # ro /sys => no udevd
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup" # rooted at our cgroup ns

  mount -t tmpfs -o mode=755,nosuid,size=16m sdct-dev "$R/dev"
  for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name maj min <<<"$n"; mknod -m 666 "$R/dev/$name" c "$maj" "$min"
  done
  mkdir "$R/dev/pts" "$R/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
  ln -s pts/ptmx "$R/dev/ptmx"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
  ln -s /proc/self/fd "$R/dev/fd"
  for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "$R/dev/${i#*:}"; done
  if [ -t 0 ]; then                                         # SDCT_CONSOLE: our stdin is script(1)'s pty
    touch "$R/dev/console"; mount --bind "$(readlink /proc/self/fd/0)" "$R/dev/console"
  fi
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"

  for spec in ${SDCT_BIND:-}; do
    IFS=: read -r src dst mode <<<"$spec"
    mkdir -p "$R$dst"; mount --bind "$src" "$R$dst"
    if [ "${mode:-}" = ro ]; then mount -o remount,bind,ro "$R$dst"; fi
  done

  tr -d - </proc/sys/kernel/random/uuid >"$R/etc/machine-id"  # own journal directory
  echo sdct >"$R/etc/hostname"
  for u in ${SDCT_MASK:-postgresql.service e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
             apt-daily-upgrade.timer dpkg-db-backup.timer man-db.timer fstrim.timer \
             getty@tty1.service console-getty.service}; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
  done

  cd "$R"; mkdir -p .oldroot; pivot_root . .oldroot; cd /
  umount -l /.oldroot; rmdir /.oldroot
  # systemd leaves "/ shared" to the container manager (it skips it in a container), and
  # needs it: e.g. LoadCredential= mounts the credentials in a child namespace and
  # relies on propagation. Peer groups stay inside this namespace (created private).
  mount --make-rshared /

  # Capabilities that could reach the host kernel are dropped (nspawn does the same);
  # CAP_SYS_BOOT stays: reboot(2) in a child PID namespace only ends that namespace.
  exec setpriv --bounding-set -sys_module,-sys_time,-sys_rawio,-sys_pacct,-mac_admin,-mac_override,-syslog,-wake_alarm,-block_suspend,-audit_read,-perfmon,-bpf,-checkpoint_restore \
    env -i container=sdct PATH="$CT_PATH" TERM=dumb \
    /lib/systemd/systemd --unit="${SDCT_UNIT:-multi-user.target}" ${SDCT_SYSTEMD_ARGS:-}
  ;;

exec)
  exec nsenter --target "$(cat "$BASE/systemd.pid")" --mount --uts --ipc --pid --cgroup \
       --net --root --wd \
       env -i container=sdct PATH="$CT_PATH" TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 LANG=C.UTF-8 "$@"
  ;;

root)
  echo "/proc/$(cat "$BASE/systemd.pid")/root"
  ;;

stop)
  set +e
  SD=$(cat "$BASE/systemd.pid" 2>/dev/null); UN=$(cat "$BASE/unshare.pid" 2>/dev/null)
  if [ -n "$SD" ] && [ -d /proc/"$SD" ]; then
    # wait on systemd, not on unshare: unshare's zombie lingers until *its* parent reaps it
    kill -s RTMIN+4 "$SD"                                   # systemd: poweroff.target
    for _ in $(seq 1 ${SDCT_STOP_TIMEOUT_TICKS:-1200}); do [ -d /proc/"$SD" ] || break; sleep 0.025; done
    if [ -d /proc/"$SD" ]; then                             # SIGKILL to ns PID 1 kills the whole ns
      kill -KILL "$SD"; for _ in $(seq 1 200); do [ -d /proc/"$SD" ] || break; sleep 0.025; done
    fi
  fi
  [ -n "${SDCT_CONSOLE:-}" ] && sleep 0.1                  # let script(1) flush
  if [ -f "$BASE/cgroup.path" ]; then
    CG=$(cat "$BASE/cgroup.path"); [ -d "$CG" ] && find "$CG" -depth -type d -exec rmdir {} \;
  fi
  [ -n "${SDCT_KEEP:-}" ] || rm -rf --one-file-system "$BASE"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
