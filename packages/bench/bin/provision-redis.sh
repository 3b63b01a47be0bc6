#!/usr/bin/env bash
# Provision redis-server (for the BullMQ comparison) into a project-local cache from Debian's
# packages, without touching the system's apt configuration: a private sources list, lists dir and
# cache dir, the way packages/harness/bin/provision-nats-server.sh gets nats-server.
#
# Result: .cache/redis/root/usr/bin/redis-server, run with LD_LIBRARY_PATH=.cache/redis/root/usr/lib/<arch>.
# Idempotent: skipped without network access once cached.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cache="${REDIS_CACHE:-$root/.cache/redis}"
# shellcheck source=../../harness/bin/debian-download.sh
. "$root/packages/harness/bin/debian-download.sh"
suite=bookworm

if [ -x "$cache/root/usr/bin/redis-check-rdb" ]; then
  echo "redis-server cached in $cache"
  exit 0
fi
apt="$cache/apt"
# redis-server's binary lives in redis-tools; jemalloc and lzf are its libraries not on a base system.
debian_download "$suite" "$apt" redis-server redis-tools libjemalloc2 liblzf1 || exit 1
rm -rf "$cache/root"
for deb in "$apt"/deb/*.deb; do dpkg-deb -x "$deb" "$cache/root"; done
rm -rf "$apt"
version="$(LD_LIBRARY_PATH="$(echo "$cache"/root/usr/lib/*-linux-gnu)" "$cache/root/usr/bin/redis-server" --version 2>/dev/null | sed -E 's/.* v=([0-9.]+).*/\1/' || true)"
echo "redis-server $version installed in $cache"
