#!/usr/bin/env bash
# List (and with --remove, remove) what Paddock tenants left on this host, found only by
# Paddock's deterministic names — nothing else is touched:
#   runc/crun containers  pdk-<tenant>-<hostname> (and their state dirs left empty)
#   network namespaces    pdk-<tenant>-<hostname>
#   links                 alias "paddock/<tenant>/…" (veths, bridges)
#   nftables tables       inet|ip paddock-<tenant>
#   mounts                …/bundles/<hostname>/{rootfs,disk} below a Paddock run dir (overlay/ext4)
#   loop devices          backed by …/disks/<hostname>.img
#   processes             still in a cgroup paddock/<tenant>[/…] (pid, comm; --remove: SIGKILL by pid)
#   cgroups               <controller>/paddock/<tenant>[/<hostname>] (cgroup v1 and v2; removed empty only)
#   daemon processes      node …/tenant-daemon/{main,launch}.js up …/tenants/<tenant>/config.yaml (SIGKILL)
# With --tenant, mounts and loop devices are matched by a `/tenants/<ID>/` path component (the
# supervisor's layout); those of standalone daemons with other state dirs are listed only without --tenant.
# Usage: scripts/leaks.sh [--tenant ID] [--remove]
# Exit status: 0 nothing found (or all removed), 1 leftovers found (list mode).
set -uo pipefail
tenant="" remove=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tenant) tenant="$2"; shift 2 ;;
    --remove) remove=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
t="${tenant:-[a-z][a-z0-9]*}"
found=0
report() { found=1; printf '%-10s %s\n' "$1" "$2"; }

for rt in runc crun; do
  command -v "$rt" >/dev/null 2>&1 || continue
  for id in $("$rt" list -q 2>/dev/null); do
    [[ "$id" == pdk-${tenant:-}* ]] || continue
    [[ "$id" =~ ^pdk-${t}- ]] || continue
    report "$rt" "$id"
    [ $remove = 1 ] && "$rt" delete --force "$id" >/dev/null 2>&1
  done
done

# Runtime state directories left empty (a runtime killed before it wrote its state): the
# runtime lists no container for them but refuses a new one with that id.
for root in /run/runc /run/crun; do
  for d in "$root"/pdk-*; do
    [ -d "$d" ] || continue
    id="${d##*/}"
    [[ "$id" =~ ^pdk-${t}- ]] || continue
    [ -z "$(ls -A "$d")" ] || continue
    report state-dir "$d"
    [ $remove = 1 ] && rmdir "$d"
  done
done

# Mounts: deepest first (overlay rootfs before its disk).
while read -r mp; do
  [ -n "$mp" ] || continue
  report mount "$mp"
  [ $remove = 1 ] && { umount "$mp" 2>/dev/null || umount -l "$mp"; }
done < <(awk '{print $5}' /proc/self/mountinfo | grep -E '/bundles/[a-z0-9-]+/(rootfs|disk)$' | { if [ -n "$tenant" ]; then grep -F "/tenants/$tenant/"; else cat; fi; } | sort -r)

while read -r dev file; do
  [ -n "$dev" ] || continue
  report loop "$dev $file"
  [ $remove = 1 ] && losetup -d "$dev" 2>/dev/null
done < <(losetup -a -O NAME,BACK-FILE -n 2>/dev/null | awk '$2 ~ /\/disks\/[a-z0-9-]+\.img$/ {print $1, $2}' | { if [ -n "$tenant" ]; then grep -F "/tenants/$tenant/"; else cat; fi; })

for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  [[ "$ns" =~ ^pdk-${t}- ]] || continue
  report netns "$ns"
  [ $remove = 1 ] && ip netns delete "$ns" 2>/dev/null
done

while read -r name alias; do
  [ -n "$name" ] || continue
  [[ "$alias" =~ ^paddock/${t}/ ]] || continue
  report link "$name ($alias)"
  [ $remove = 1 ] && ip link delete "$name" 2>/dev/null
# `ip -o` puts a link on one line: "IDX: NAME[@PEER]: <…> …\    alias ALIAS" (awk, not a node
# start per call: this script runs after every test that makes VMs).
done < <(ip -o link show 2>/dev/null | awk '{ n = $2; sub(/:$/, "", n); sub(/@.*/, "", n); i = index($0, "\\    alias "); if (i) print n, substr($0, i + 11) }')

if command -v nft >/dev/null 2>&1; then
  while read -r _ family name; do
    [[ "$name" =~ ^paddock-${t}(-ct)?$ ]] || continue
    report nft "$family $name"
    [ $remove = 1 ] && nft delete table "$family" "$name" 2>/dev/null
  # `nft list flowtables` prints every table's header without fetching rules; `nft list tables`
  # decodes every rule of every table (seconds of CPU with a hundred tenants; tenant-daemon/network/nft-cli.ts).
  done < <(nft list flowtables 2>/dev/null | awk '$1 == "table" { print "table", $2, $3 }')
fi

# Tenant daemons still running (a supervisor killed before it stopped them). Without --tenant
# every Paddock daemon is listed; with it, those whose config is under /tenants/<ID>/.
# Read with the mapfile builtin: no fork per process (a fork per pid took seconds on a busy host).
for f in /proc/[0-9]*/cmdline; do
  pid=${f#/proc/} pid=${pid%/cmdline}
  [ "$pid" = "$$" ] && continue
  mapfile -d '' -t argv 2>/dev/null <"$f" || continue
  cmd="${argv[*]}"
  [[ "$cmd" =~ tenant-daemon/(main|launch)\.js\ up\ ([^ ]+) ]] || continue
  cfg="${BASH_REMATCH[2]}"
  if [ -n "$tenant" ]; then [[ "$cfg" == */tenants/$tenant/* ]] || continue; fi
  report daemon "$pid $cfg"
  [ $remove = 1 ] && kill -KILL -- "-$pid" 2>/dev/null; [ $remove = 1 ] && kill -KILL "$pid" 2>/dev/null
done

# Processes still in a tenant's cgroups (a sandbox the runtime lost track of, e.g. a runsc boot
# killed on its timeout: tenant-daemon/runtime/runsc-reap.ts), found by the kernel's cgroup.procs,
# never by name: one line per pid (a pid is in every v1 hierarchy at once) with its cgroup and
# comm. --remove freezes the tenant's cgroup where a freezer is mounted (no exit, so no pid reuse,
# and no fork meanwhile), SIGKILLs them by pid, thaws, and waits up to 10 s for them to go.
declare -A seen_pid=()
tenant_dirs=()
for base in /sys/fs/cgroup/*/paddock /sys/fs/cgroup/paddock; do
  [ -d "$base" ] || continue
  for tdir in "$base"/*/; do
    tdir="${tdir%/}"
    [ -d "$tdir" ] || continue
    [[ "${tdir##*/}" =~ ^${t}$ ]] || continue
    tenant_dirs+=("$tdir")
  done
done
cgroup_pids() { # the pids in every cgroup at or below the tenant dirs
  local d
  for d in "${tenant_dirs[@]}"; do
    [ -d "$d" ] || continue
    find "$d" -type f -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}
for d in "${tenant_dirs[@]}"; do
  while IFS= read -r f; do
    while read -r pid; do
      [ -n "$pid" ] || continue
      [ -z "${seen_pid[$pid]:-}" ] || continue
      seen_pid[$pid]=1
      comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || comm="?"
      cg="${f%/cgroup.procs}"; cg="${cg#/sys/fs/cgroup/}"; cg="paddock/${cg#*paddock/}"
      report process "$cg pid $pid ($comm)"
    done < "$f"
  done < <(find "$d" -type f -name cgroup.procs 2>/dev/null)
done
if [ $remove = 1 ] && [ ${#seen_pid[@]} -gt 0 ]; then
  for _ in $(seq 1 50); do
    pids="$(cgroup_pids)"
    [ -n "$pids" ] || break
    for d in "${tenant_dirs[@]}"; do
      [ -f "$d/freezer.state" ] && echo FROZEN > "$d/freezer.state" 2>/dev/null
      [ -f "$d/cgroup.freeze" ] && echo 1 > "$d/cgroup.freeze" 2>/dev/null
    done
    # v1 passes through FREEZING until every task has stopped: wait (up to ~1 s) for FROZEN.
    for d in "${tenant_dirs[@]}"; do
      [ -f "$d/freezer.state" ] || continue
      for _ in $(seq 1 50); do [ "$(cat "$d/freezer.state" 2>/dev/null)" = FREEZING ] || break; sleep 0.02; done
    done
    # Kill the pids listed while frozen: none of them can exit (and its pid be reused) before the signal.
    for pid in $(cgroup_pids); do kill -KILL "$pid" 2>/dev/null; done
    for d in "${tenant_dirs[@]}"; do
      [ -f "$d/freezer.state" ] && echo THAWED > "$d/freezer.state" 2>/dev/null
      [ -f "$d/cgroup.freeze" ] && echo 0 > "$d/cgroup.freeze" 2>/dev/null
    done
    sleep 0.2
  done
fi

# Cgroups the runtime made under paddock/<tenant>/<hostname>: VM leaves first (and anything below
# them), then the tenant dir once it has no VM left (only empty cgroups can be removed: rmdir).
for tdir in "${tenant_dirs[@]}"; do
  [ -d "$tdir" ] || continue
  leaves=0
  for vdir in "$tdir"/*/; do
    vdir="${vdir%/}"
    [ -d "$vdir" ] || continue
    leaves=1
    report cgroup "${vdir#/sys/fs/cgroup/}"
    [ $remove = 1 ] && find "$vdir" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if [ $leaves = 0 ]; then report cgroup "${tdir#/sys/fs/cgroup/}"; fi
  [ $remove = 1 ] && rmdir "$tdir" 2>/dev/null
done

if [ $found = 0 ]; then echo "no Paddock leftovers${tenant:+ for tenant $tenant}"; exit 0; fi
[ $remove = 1 ] && { echo "removed"; exit 0; }
exit 1
