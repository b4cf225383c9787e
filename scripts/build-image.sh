#!/bin/sh
# Build (or reuse) a Paddock base image: debootstrap of Debian 12 minbase into the image store.
#   scripts/build-image.sh [--name debian-12] [--packages gcc,python3] [--mirror URL] [--image-dir DIR] [--force]
# Store: --image-dir, else $PADDOCK_IMAGE_DIR, else ${PADDOCK_STATE_DIR:-/var/lib/paddock}/images.
# Needs root and debootstrap (apt-get install debootstrap). Builds the TypeScript first if needed.
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
entry="$root/dist/tenant-daemon/images/build-main.js"
if [ ! -f "$entry" ]; then
  (cd "$root" && npm run --silent build)
fi
exec node "$entry" "$@"
