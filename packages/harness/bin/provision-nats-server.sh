#!/usr/bin/env bash
# Provision nats-server binaries into a project-local cache from Debian's packages, without
# touching the system's apt configuration: a private sources list, lists dir and cache dir.
#
#   bash packages/harness/bin/provision-nats-server.sh            # every suite in the matrix
#   bash packages/harness/bin/provision-nats-server.sh sid        # one suite
#
# Result: .cache/nats-server/<version>/nats-server (e.g. .cache/nats-server/2.15.1/nats-server).
# Idempotent: a suite whose binary is already cached is skipped without any network access.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cache="${NATS_SERVER_CACHE:-$root/.cache/nats-server}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie sid)

mkdir -p "$cache"
for suite in "${suites[@]}"; do
  marker="$cache/suite-$suite"
  if [ -f "$marker" ] && [ -x "$cache/$(cat "$marker")/nats-server" ]; then
    echo "nats-server $(cat "$marker") ($suite) cached"
    continue
  fi
  apt="$cache/apt-$suite"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
  signed=""
  [ -f "$keyring" ] && signed="[signed-by=$keyring] "
  echo "deb ${signed}$mirror $suite main" >"$apt/sources.list"
  opts=(-q -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
    -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
  if ! apt-get "${opts[@]}" update >"$apt/update.log" 2>&1; then
    echo "could not read Debian's $suite package list (see $apt/update.log)" >&2
    exit 1
  fi
  rm -f "$apt"/deb/*.deb
  (cd "$apt/deb" && apt-get "${opts[@]}" download nats-server >"$apt/download.log" 2>&1) || {
    echo "could not download nats-server from Debian $suite (see $apt/download.log)" >&2
    exit 1
  }
  rm -rf "$apt/root"
  dpkg-deb -x "$apt"/deb/nats-server_*.deb "$apt/root"
  bin="$apt/root/usr/sbin/nats-server"
  version="$("$bin" --version | sed -E 's/^nats-server: v?//')"
  mkdir -p "$cache/$version"
  cp "$bin" "$cache/$version/nats-server"
  echo "$version" >"$marker"
  rm -rf "$apt/root" "$apt/deb" "$apt/cache" "$apt/lists"
  echo "nats-server $version ($suite) installed in $cache/$version"
done
