#!/usr/bin/env bash
# Debian packages Lumière needs beyond Python: PostgreSQL's server binaries (the local stack
# and the test harness run a real Postgres), docker-compose (scripts/check-deploy.sh
# validates the compose files with it; no Docker engine needed), Chromium (the dashboard's
# browser test drives it with Playwright), and curl and jq (the README's examples use them,
# and a test runs them as written). Installs only what is missing.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing+=(postgresql)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}. Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
