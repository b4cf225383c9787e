#!/usr/bin/env bash
# Paddock's main job on real input, end to end, with checks:
#   1. builds (or reuses) the image debian-12-dev: Debian 12 minbase + gcc, libc6-dev, python3,
#      so nothing inside a sandbox needs the network;
#   2. starts a supervisor on a temp state dir and free loopback ports (or, with
#      PADDOCK_ADMIN_URL set, uses that running supervisor and PADDOCK_URL as its gateway);
#   3. provisions tenant A from the `sandbox` template and tenant B from `workspace`, both on
#      that image, and in each launches two sandboxes;
#   4. copies scripts/demo/wordfreq.c in, compiles it with gcc and runs it on a real text;
#      copies scripts/demo/textstats.py in and runs it with python3; copies the results out
#      and checks them against the host's own tools (sort | uniq -c, sha256sum, wc);
#   5. shows each tenant sees only its own VMs, and that A's sandboxes cannot open a TCP
#      connection to B's sandbox while B's own sandbox can (the positive control);
#   6. deletes both tenants, stops the supervisor it started, checks scripts/leaks.sh finds
#      nothing, and prints a summary with timings.
# Needs root and `bash scripts/setup.sh` done once. Exit status: 0 when every check passed.
# Usage: bash scripts/demo.sh
# Environment: PADDOCK_DEMO_IMAGE (default debian-12-dev), PADDOCK_IMAGE_DIR (default
#   /var/lib/paddock/images), PADDOCK_ADMIN_URL/PADDOCK_ADMIN_TOKEN/PADDOCK_URL to use a
#   running supervisor (its image dir must be the one above).
set -euo pipefail
export LC_ALL=C
root=$(cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"

IMAGE=${PADDOCK_DEMO_IMAGE:-debian-12-dev}
PACKAGES=gcc,libc6-dev,python3
IMAGE_DIR=${PADDOCK_IMAGE_DIR:-${PADDOCK_STATE_DIR:-/var/lib/paddock}/images}
CLI=(node "$root/dist/cli/paddock.js")
suffix=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
A="demoa$suffix" B="demob$suffix"
PORT=7777

if [ "$(id -u)" -ne 0 ]; then echo "scripts/demo.sh must run as root (runc, mounts, nftables)" >&2; exit 1; fi
if [ ! -f "$root/dist/cli/paddock.js" ]; then echo "dist/ is missing: run bash scripts/setup.sh first" >&2; exit 1; fi

work=$(mktemp -d /tmp/paddock-demo.XXXXXX)
sup_pid="" run_dir="" created=() failures=0 passes=0
timings=()
t_start=$(date +%s%3N)
now_ms() { date +%s%3N; }
step() { printf '\n==> %s\n' "$*"; }
# timed LABEL CMD...: run CMD, record its duration under LABEL.
timed() {
  local label=$1 t0 rc=0
  shift
  t0=$(now_ms)
  "$@" || rc=$?
  timings+=("$(printf '%-46s %7.1f s' "$label" "$(( $(now_ms) - t0 ))e-3")")
  return $rc
}
pass() { passes=$((passes + 1)); printf '  \342\234\223 %s\n' "$*"; }
fail() { failures=$((failures + 1)); printf '  \342\234\227 FAILED: %s\n' "$*"; }
# check DESC CMD...: a check passes when CMD exits 0.
check() {
  local desc=$1
  shift
  if "$@"; then pass "$desc"; else fail "$desc"; fi
}
# js EXPR < JSON: evaluate EXPR with `v` = the parsed JSON on stdin, print the result.
js() { node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8")); const r = eval(process.argv[1]); console.log(typeof r === "string" ? r : JSON.stringify(r));' "$1"; }
# as TENANT paddock-args...: the CLI with that tenant's gateway token.
as() {
  local t=$1
  shift
  local tok_var="TOKEN_$t"
  PADDOCK_URL=$GATEWAY PADDOCK_TOKEN=${!tok_var} SLICER_URL="" SLICER_TOKEN="" "${CLI[@]}" "$@"
}

cleanup() {
  local rc=$? t0 leaks
  set +e
  trap - EXIT INT TERM
  step "Cleanup"
  t0=$(now_ms)
  for id in "${created[@]}"; do
    if "${CLI[@]}" tenant delete "$id" >"$work/delete-$id.txt" 2>&1; then pass "tenant $id deleted (daemon, VMs, disks, links, nft table)"
    else fail "tenant delete $id: $(cat "$work/delete-$id.txt")"; fi
  done
  if [ -n "$sup_pid" ]; then
    kill -TERM "$sup_pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$sup_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$sup_pid" 2>/dev/null; then
      fail "supervisor pid $sup_pid did not stop within 30 s on SIGTERM; killing it"
      kill -KILL "$sup_pid" 2>/dev/null
    else
      pass "supervisor pid $sup_pid stopped"
    fi
    wait "$sup_pid" 2>/dev/null
  fi
  for id in "${created[@]}"; do
    if leaks=$(bash "$root/scripts/leaks.sh" --tenant "$id" 2>&1); then pass "scripts/leaks.sh --tenant $id: nothing left"
    else
      fail "scripts/leaks.sh --tenant $id found leftovers (removing them):"$'\n'"$leaks"
      bash "$root/scripts/leaks.sh" --tenant "$id" --remove >/dev/null 2>&1
    fi
  done
  timings+=("$(printf '%-46s %7.1f s' "cleanup (tenants, supervisor, leak check)" "$(( $(now_ms) - t0 ))e-3")")
  if [ $rc -ne 0 ] && [ $failures -eq 0 ]; then fail "the demo stopped early (exit status $rc); see the output above"; fi
  if [ $failures -gt 0 ] && [ -n "${sup_log:-}" ] && [ -f "$sup_log" ]; then
    echo; echo "--- last lines of the supervisor log ($sup_log) ---"; tail -n 30 "$sup_log"
    cp "$sup_log" "/tmp/paddock-demo-supervisor-$suffix.log" 2>/dev/null && echo "(kept as /tmp/paddock-demo-supervisor-$suffix.log)"
  fi
  [ -n "$run_dir" ] && rm -rf "$run_dir"
  rm -rf "$work"

  printf '\n==> Summary\n'
  printf '  %s\n' "${timings[@]}"
  printf '  %-46s %7.1f s\n' "total" "$(( $(now_ms) - t_start ))e-3"
  if [ $failures -eq 0 ]; then
    printf '\n  ALL %d CHECKS PASSED\n' "$passes"
    exit 0
  fi
  printf '\n  %d CHECK(S) FAILED, %d passed\n' "$failures" "$passes"
  exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. image ------------------------------------------------------------------------------
step "Image $IMAGE (Debian 12 minbase + $PACKAGES) in $IMAGE_DIR"
timed "image build $IMAGE (cached after the first)" \
  "${CLI[@]}" image build "$IMAGE" --packages "$PACKAGES" --image-dir "$IMAGE_DIR"
have=$("${CLI[@]}" image list --image-dir "$IMAGE_DIR" --json | js "(v.find((i) => i.name === '$IMAGE') || {packages: []}).packages.join(',')")
missing=$(for p in ${PACKAGES//,/ }; do [[ ",$have," == *",$p,"* ]] || printf '%s ' "$p"; done)
if [ -n "$missing" ]; then
  fail "image $IMAGE exists without: $missing(rebuild it: paddock image build $IMAGE --packages $PACKAGES --force)"
  exit 1
fi
pass "image $IMAGE carries $PACKAGES"

# ---- 2. supervisor -------------------------------------------------------------------------
if [ -n "${PADDOCK_ADMIN_URL:-}" ]; then
  GATEWAY=${PADDOCK_URL:-http://127.0.0.1:8080}
  step "Using the running supervisor: admin $PADDOCK_ADMIN_URL, gateway $GATEWAY"
else
  free_port() { node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'; }
  gw_port=$(free_port) admin_port=$(free_port)
  while [ "$admin_port" = "$gw_port" ]; do admin_port=$(free_port); done
  # A random /20 of 169.254.0.0/16 (never the one holding 169.254.169.254) as the tenant pool,
  # so this supervisor's blocks stay clear of other supervisors on the host.
  while :; do k=$(( $(od -An -N1 -tu1 /dev/urandom) % 16 )); [ $k -ne 10 ] && break; done
  run_dir=$(mktemp -d /tmp/pdd-XXXXXX) # short: tenant socket paths live under it
  sup_log="$work/supervisor.log"
  cat >"$work/supervisor.yaml" <<EOF
gateway: {address: "127.0.0.1:$gw_port"}
admin: {address: "127.0.0.1:$admin_port"}
state_dir: $work/state
run_dir: $run_dir
image_dir: $IMAGE_DIR
network: {pool: 169.254.$((k * 16)).0/20, block_prefix: 22}
templates: {dir: $root/templates}
stop_daemons_on_exit: true
EOF
  step "Supervisor: gateway 127.0.0.1:$gw_port, admin 127.0.0.1:$admin_port, state $work/state"
  t0=$(now_ms)
  env -u PADDOCK_STATE_DIR -u PADDOCK_RUN_DIR -u PADDOCK_IMAGE_DIR \
    node "$root/dist/cli/paddock.js" up --config "$work/supervisor.yaml" >"$sup_log" 2>&1 &
  sup_pid=$!
  export PADDOCK_ADMIN_URL="http://127.0.0.1:$admin_port" GATEWAY="http://127.0.0.1:$gw_port"
  for _ in $(seq 1 150); do
    kill -0 "$sup_pid" 2>/dev/null || { fail "the supervisor exited at start"; exit 1; }
    [ -s "$work/state/supervisor/admin-token" ] && "${CLI[@]}" tenant list --admin-token "$(cat "$work/state/supervisor/admin-token")" >/dev/null 2>&1 && break
    sleep 0.2
  done
  export PADDOCK_ADMIN_TOKEN
  PADDOCK_ADMIN_TOKEN=$(cat "$work/state/supervisor/admin-token")
  "${CLI[@]}" tenant list >/dev/null || { fail "the supervisor's admin API did not answer within 30 s"; exit 1; }
  timings+=("$(printf '%-46s %7.1f s' "supervisor start (pid $sup_pid)" "$(( $(now_ms) - t0 ))e-3")")
  pass "supervisor pid $sup_pid answers on its admin API"
fi

# ---- 3. tenants and sandboxes ----------------------------------------------------------------
declare -A TEMPLATE=([$A]=sandbox [$B]=workspace) INPUT=([$A]=README.md [$B]=docs/admin-api.openapi.yaml)
for t in A B; do
  id=${!t}
  step "Tenant $t = $id (template ${TEMPLATE[$id]}, image $IMAGE)"
  created+=("$id")
  timed "tenant create $t (${TEMPLATE[$id]}: daemon start)" \
    "${CLI[@]}" tenant create --id "$id" --template "${TEMPLATE[$id]}" --image "$IMAGE" --label demo=paddock --json >"$work/$t-tenant.json"
  declare "TOKEN_$t=$(js v.token <"$work/$t-tenant.json")"
  declare "RANGES_$t=$(js 'v.ranges.map((r) => r.cidr).join(" ")' <"$work/$t-tenant.json")"
  r="RANGES_$t"
  pass "tenant $id is $(js v.status <"$work/$t-tenant.json"), ranges ${!r}"
  for n in 1 2; do
    timed "vm launch $t sbox-$n (--wait agent)" \
      as "$t" vm launch sbox --tag "demo=$id" --wait agent --timeout 120s --json >"$work/$t-vm$n.json"
    pass "launched $(js v.hostname <"$work/$t-vm$n.json") at $(js v.ip <"$work/$t-vm$n.json") in tenant $t"
  done
done

# ---- 4. real work: C and Python -------------------------------------------------------------
for t in A B; do
  id=${!t} in=${INPUT[${!t}]}
  step "Tenant $t: wordfreq.c (gcc) and textstats.py (python3) on $in"
  # Expected results, from the host's own tools.
  tr -cs 'A-Za-z' '\n' <"$in" | tr 'A-Z' 'a-z' | sed '/^$/d' | sort | uniq -c | awk '{print $2" "$1}' >"$work/$t-expected-counts.txt"
  want_words=$(awk '{s += $2} END {print s + 0}' "$work/$t-expected-counts.txt")
  want_distinct=$(wc -l <"$work/$t-expected-counts.txt")
  want_sha=$(sha256sum "$in" | cut -d' ' -f1)
  want_bytes=$(wc -c <"$in")
  want_lines=$(wc -l <"$in")

  t0=$(now_ms)
  as "$t" vm cp scripts/demo/wordfreq.c sbox-1:/tmp/wordfreq.c
  as "$t" vm cp "$in" sbox-1:/tmp/input.txt
  check "gcc compiled wordfreq.c inside $t:sbox-1" as "$t" vm exec sbox-1 -- gcc -O2 -Wall -Werror -o /tmp/wordfreq /tmp/wordfreq.c
  check "wordfreq ran inside $t:sbox-1" as "$t" vm exec sbox-1 -- sh -c '/tmp/wordfreq /tmp/input.txt > /tmp/counts.txt'
  as "$t" vm cp sbox-1:/tmp/counts.txt "$work/$t-counts.txt"
  check "wordfreq's output copied out equals sort|uniq -c on the host ($want_distinct words, $want_words in all)" \
    cmp -s "$work/$t-counts.txt" "$work/$t-expected-counts.txt"
  timings+=("$(printf '%-46s %7.1f s' "$t: C copy in, gcc, run, copy out" "$(( $(now_ms) - t0 ))e-3")")

  t0=$(now_ms)
  as "$t" vm cp scripts/demo/textstats.py sbox-2:/tmp/textstats.py
  as "$t" vm cp "$in" sbox-2:/tmp/input.txt
  check "python3 ran textstats.py inside $t:sbox-2" as "$t" vm exec sbox-2 -- sh -c 'python3 /tmp/textstats.py /tmp/input.txt > /tmp/stats.json'
  as "$t" vm cp sbox-2:/tmp/stats.json "$work/$t-stats.json"
  got=$(js '[v.sha256, v.bytes, v.lines, v.words, v.distinct_words, v.hostname].join(" ")' <"$work/$t-stats.json" || echo "unreadable")
  check "textstats.py's JSON copied out matches sha256sum, wc -c, wc -l, the word counts and its VM's hostname" \
    test "$got" = "$want_sha $want_bytes $want_lines $want_words $want_distinct sbox-2"
  echo "    python $(js v.python <"$work/$t-stats.json" 2>/dev/null) in sbox-2: $(js '`${v.words} words, ${v.lines} lines, sha256 ${v.sha256.slice(0, 12)}…`' <"$work/$t-stats.json" 2>/dev/null)"
  timings+=("$(printf '%-46s %7.1f s' "$t: Python copy in, run, copy out" "$(( $(now_ms) - t0 ))e-3")")
done

# ---- 5. isolation ---------------------------------------------------------------------------
step "Each tenant sees only its own VMs"
as A vm list --json >"$work/A-list.json"
as B vm list --json >"$work/B-list.json"
echo "    A: $(js 'v.map((n) => `${n.hostname}(${n.ip})`).join(" ")' <"$work/A-list.json")"
echo "    B: $(js 'v.map((n) => `${n.hostname}(${n.ip})`).join(" ")' <"$work/B-list.json")"
check "A's list is exactly its two sandboxes, tagged demo=$A" \
  test "$(js "v.map((n) => n.hostname + ':' + (n.tags || []).includes('demo=$A')).sort().join(' ')" <"$work/A-list.json")" = "sbox-1:true sbox-2:true"
check "B's list is its ctrl-1 (workspace template) and its two sandboxes, none of A's" \
  test "$(js "v.map((n) => n.hostname + ':' + !(n.tags || []).includes('demo=$A')).sort().join(' ')" <"$work/B-list.json")" = "ctrl-1:true sbox-1:true sbox-2:true"
check "no VM address appears in both lists" \
  test "$(cat "$work/A-list.json" "$work/B-list.json" | node -e 'const t = require("fs").readFileSync(0, "utf8").split(/(?<=\])\s*(?=\[)/).map((s) => JSON.parse(s).map((n) => n.ip)); console.log(t[0].filter((ip) => t[1].includes(ip)).length)')" = 0
check "A's token cannot see B's ctrl-1 (paddock vm get ⇒ exit 3, not found)" \
  bash -c '"$@" >/dev/null 2>&1; [ $? -eq 3 ]' _ env PADDOCK_URL="$GATEWAY" PADDOCK_TOKEN="$TOKEN_A" "${CLI[@]}" vm get ctrl-1

step "A's sandboxes cannot reach B's sandbox over TCP"
B_IP=$(js "v.find((n) => n.hostname === 'sbox-1').ip" <"$work/B-list.json")
for t in A B; do for n in 1 2; do as "$t" vm cp scripts/demo/tcp-probe.js "sbox-$n:/tmp/tcp-probe.js"; done; done
as B vm exec sbox-1 -- sh -c "nohup /.paddock/bin/node /tmp/tcp-probe.js listen $PORT >/tmp/listen.log 2>&1 </dev/null &"
ok=0
for _ in $(seq 1 25); do
  if as B vm exec sbox-1 -- /.paddock/bin/node /tmp/tcp-probe.js connect 127.0.0.1 $PORT >"$work/probe.txt" 2>&1; then ok=1; break; fi
  sleep 0.2
done
check "positive control: B:sbox-1 reaches its own listener on 127.0.0.1:$PORT ($(cat "$work/probe.txt"))" test $ok = 1
probe=$(as B vm exec sbox-1 -- /.paddock/bin/node /tmp/tcp-probe.js connect "$B_IP" $PORT 2>&1) && rc=0 || rc=$?
check "positive control: B:sbox-1 reaches its listener on its own address $B_IP:$PORT ($probe)" test $rc = 0
for n in 1 2; do
  probe=$(as A vm exec "sbox-$n" -- /.paddock/bin/node /tmp/tcp-probe.js connect "$B_IP" $PORT 2>&1) && rc=0 || rc=$?
  # The refusal must be the firewall's: exit 1 (no answer: dropped) or 3 (reset/refused). 0 is
  # connected; 4 (no route, …) would mean a broken network, not isolation; 2/127 a broken probe.
  check "A:sbox-$n cannot connect to B:sbox-1 at $B_IP:$PORT, dropped or reset (exit $rc: $probe)" test $rc = 1 -o $rc = 3
done
