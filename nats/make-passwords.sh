#!/usr/bin/env bash
# Prints JSP_<USER>_PASSWORD=<random> for every user in roles.conf, for docker compose's env file:
#   bash nats/make-passwords.sh > nats/roles.env   (git ignores it; keep it out of logs and images)
set -euo pipefail
cd "$(dirname "$0")"
grep -o '\$JSP_[A-Z_]*_PASSWORD' roles.conf | tr -d '$' | sort -u | while read -r var; do
  echo "$var=p$(openssl rand -hex 24)"
done
