#!/usr/bin/env bash
# Runs every test against real servers: installs and starts what is missing
# (PostgreSQL, MariaDB, Redis, sshd), then `go test -race ./...`.
# Extra arguments go to `go test` (e.g. -run TestLifecycle).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

bash scripts/services.sh
[ -f scripts/sshd.sh ] && bash scripts/sshd.sh
[ -f scripts/chromium.sh ] && bash scripts/chromium.sh

# The shipped binary is static.
CGO_ENABLED=0 go build -o /dev/null ./cmd/mayfly
go test -race -count=1 -timeout 20m "$@" ./...
