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
# shellcheck source=debian-download.sh
. "$(dirname "${BASH_SOURCE[0]}")/debian-download.sh"
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
  debian_download "$suite" "$apt" nats-server || exit 1
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
