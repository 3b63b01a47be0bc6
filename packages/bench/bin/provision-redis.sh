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
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
suite=bookworm

if [ -x "$cache/root/usr/bin/redis-check-rdb" ]; then
  echo "redis-server cached in $cache"
  exit 0
fi
apt="$cache/apt"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
signed=""
[ -f "$keyring" ] && signed="[signed-by=$keyring] "
echo "deb ${signed}$mirror $suite main" >"$apt/sources.list"
opts=(-q -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
  -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || { echo "could not read Debian's $suite package list (see $apt/update.log)" >&2; exit 1; }
# redis-server's binary lives in redis-tools; jemalloc and lzf are its libraries not on a base system.
(cd "$apt/deb" && apt-get "${opts[@]}" download redis-server redis-tools libjemalloc2 liblzf1 >"$apt/download.log" 2>&1) || {
  echo "could not download redis-server from Debian $suite (see $apt/download.log)" >&2
  exit 1
}
rm -rf "$cache/root"
for deb in "$apt"/deb/*.deb; do dpkg-deb -x "$deb" "$cache/root"; done
rm -rf "$apt"
echo "redis-server $("$cache/root/usr/bin/redis-check-rdb" --version 2>/dev/null | head -1 || true) installed in $cache"
