#!/usr/bin/env bash
# The whole test suite: vet, unit/property/crash tests with the race
# detector, and the end-to-end tests under test/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
./scripts/install-deps.sh
go vet ./...
go test -race -count=1 -timeout 20m ./... # -count=1: test/ builds the binary itself, which the test cache cannot see
