#!/usr/bin/env bash
# Provision a Node.js line into a project-local cache from the npm registry (which ships Node itself
# as the package node-linux-<arch>), without touching the system's Node.
#
#   bash packages/harness/bin/provision-node.sh 24     # the newest 24.x
#
# Prints the directory to put first on PATH (it holds `node`; npm, npx and pnpm are the machine's,
# and run on whichever node comes first on PATH). Idempotent: a cached line is not fetched again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
line="${1:?usage: provision-node.sh <major, e.g. 24>}"
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "error: no Node package for $(uname -m)" >&2; exit 1 ;;
esac
dir="$root/.cache/node/$line"
if [ -x "$dir/bin/node" ]; then
  echo "$dir/bin"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# npm resolves "24" to the newest 24.x; the package holds the official build's bin/node.
(cd "$tmp" && npm pack "node-linux-$arch@$line" --silent >/dev/null)
tar -xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$tmp" package/bin/node
mkdir -p "$dir/bin"
mv "$tmp/package/bin/node" "$dir/bin/node"
version="$("$dir/bin/node" --version)"
case "$version" in
  "v$line".*) ;;
  *) echo "error: node-linux-$arch@$line gave $version" >&2; rm -rf "$dir"; exit 1 ;;
esac
echo "node $version installed in $dir/bin" >&2
echo "$dir/bin"
