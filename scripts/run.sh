#!/usr/bin/env bash
# Builds vpool and runs the daemon with the default vPool (no configuration
# needed). Extra arguments go to `vpool serve` (e.g. --config etc/vpool.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
./scripts/install-deps.sh
go build -o bin/vpool ./cmd/vpool
exec bin/vpool serve "$@"
