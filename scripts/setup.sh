#!/usr/bin/env bash
# Set up a fresh Debian 12 host for Paddock, idempotently:
#   1. OS packages (runc, runsc for `hypervisor: gvisor`, tini, nftables, iproute2, e2fsprogs, debootstrap, …; python3, make and g++
#      for node-pty's native build; gcc for paddock-nsutil, the user-namespace helper; linux-libc-dev,
#      the kernel headers scripts/gen-seccomp.ts reads the syscall table from) with apt;
#   2. npm packages (npm ci) and the TypeScript build;
#   3. the default base image `debian-12` in the image store (debootstrap, ~1 min, cached);
#   4. the image `debian-12-dev` (debian-12 + gcc, libc6-dev, python3; 1-3 min, cached) that
#      scripts/demo.sh and its test (test/privileged/demo-script.test.ts, part of `npm test`) use.
# Needs root. Usage: bash scripts/setup.sh
set -euo pipefail
root=$(cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
step() { printf '\n==> [%s] %s\n' "$1" "$2" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh must run as root (it installs OS packages, and Paddock needs root for runc, mounts and nftables)" >&2
  exit 1
fi

# Node comes from outside Debian 12 (its nodejs is 18): package.json's engines.node says which.
need_node=$(node -e 'console.log(require("./package.json").engines.node.replace(/^>=\s*/, ""))' 2>/dev/null || true)
if ! command -v node >/dev/null 2>&1 || ! node -e '
  const [want, have] = [process.argv[1], process.versions.node].map((v) => v.split(".").map(Number));
  for (let i = 0; i < 3; i++) if ((have[i] ?? 0) !== (want[i] ?? 0)) process.exit((have[i] ?? 0) > (want[i] ?? 0) ? 0 : 1);' "${need_node:-20.18.1}"; then
  echo "scripts/setup.sh needs Node.js >= ${need_node:-20.18.1} on PATH (found: $(node --version 2>/dev/null || echo none)); Debian 12's nodejs package is 18: install Node 20 from https://nodejs.org/ or NodeSource, then run this again" >&2
  exit 1
fi

step 1/5 "OS packages (apt)"
pkgs=(runc runsc tini nftables iproute2 e2fsprogs debootstrap util-linux tar ca-certificates curl python3 make gcc g++ libc6-dev linux-libc-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "all present: ${pkgs[*]}" >&2
fi

step 2/5 "npm packages"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  echo "node_modules is current" >&2
fi

step 3/5 "TypeScript build"
npm run --silent build

step 4/5 "base image debian-12 (debootstrap; cached after the first run)"
# stdout (the image's image.json) is dropped: the builder's stderr says in one line that the
# image is reused, or what the build does and where the image is ready.
node dist/tenant-daemon/images/build-main.js --name debian-12 --rebuild-if-changed >/dev/null

# The same name and packages as scripts/demo.sh (IMAGE, PACKAGES), so the demo reuses it.
step 5/5 "image debian-12-dev with gcc, libc6-dev, python3 (debootstrap; cached after the first run)"
node dist/tenant-daemon/images/build-main.js --name debian-12-dev --packages gcc,libc6-dev,python3 --rebuild-if-changed >/dev/null

echo >&2
echo "setup done." >&2
