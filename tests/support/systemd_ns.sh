#!/bin/sh
# Starts systemd 252 as PID 1 of private pid, net, mount, uts, ipc and cgroup namespaces, with
# only the units of one test (tests/systemd_supervisor_test.ts). Nothing touches the machine:
#
#   systemd_ns.sh outer <units dir> <target> <cgroup name> <repository>
#
# outer (run by the test): makes /sys/fs/cgroup/systemd/<cgroup name>, moves itself there, and
#   re-runs this script as `inner` under unshare, so systemd's cgroups live below that directory
#   (the test removes it afterwards) and never meet another test's or the machine's.
# inner (PID 1 of the new namespaces): brings lo up, mounts fresh tmpfs on /run, /tmp and
#   /var/tmp (the mount table is private but the disk is shared: systemd and its units must not
#   write to the machine's /tmp), mounts the named systemd cgroup hierarchy seen from the new
#   cgroup namespace, copies the units into /run/systemd/system and execs systemd with
#   --unit=<target>. The repository (the units run its files) stays visible when it lives under
#   /tmp or /var/tmp, as a clean clone in `mktemp -d` does: bound aside before the tmpfs covers it,
#   bound back after. The units say DefaultDependencies=no: the default target is never booted
#   (its sysinit would run systemd-tmpfiles --remove, which would empty the shared /tmp).
#
# The test ends it with SIGKILL to the host pid of that systemd: the kernel kills every
# process of the pid namespace with it.
set -eu
mode=$1 units=$2 target=$3 cg=$4 repo=$5
case "$mode" in
outer)
  [ -d /sys/fs/cgroup/systemd ] || { echo "no name=systemd cgroup hierarchy at /sys/fs/cgroup/systemd" >&2; exit 3; }
  mkdir "/sys/fs/cgroup/systemd/$cg"
  echo $$ > "/sys/fs/cgroup/systemd/$cg/cgroup.procs"
  exec unshare --pid --fork --mount-proc --net --uts --ipc --cgroup --kill-child -- "$0" inner "$units" "$target" "$cg" "$repo"
  ;;
inner)
  ip link set lo up
  mount -t tmpfs -o mode=755 tmpfs /run
  mkdir -p /run/systemd/system
  cp "$units"/* /run/systemd/system/
  mkdir /run/instar-repo
  mount --bind "$repo" /run/instar-repo
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mount -t tmpfs -o mode=1777 tmpfs /var/tmp
  if [ ! -d "$repo" ]; then
    mkdir -p "$repo"
    mount --bind /run/instar-repo "$repo"
  fi
  mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
  mkdir /sys/fs/cgroup/systemd
  mount -t cgroup -o none,name=systemd,xattr cgroup /sys/fs/cgroup/systemd
  # Until the test starts systemd-journald inside, PID 1 logs to /dev/kmsg (and /dev/console):
  # files of this namespace instead of the machine's kernel log and console.
  : > /run/console.log
  : > /run/kmsg.log
  mount --bind /run/console.log /dev/console
  mount --bind /run/kmsg.log /dev/kmsg
  hostname instar-test
  exec env container=other /lib/systemd/systemd --system --unit="$target" --log-target=journal-or-kmsg
  ;;
*)
  echo "usage: $0 outer <units dir> <target> <cgroup name> <repository>" >&2
  exit 2
  ;;
esac
