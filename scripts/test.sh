#!/usr/bin/env bash
# npm test: the native tests (cargo test), then the package build and the real-browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test
./scripts/build-wasm.sh
node --test --test-concurrency=1 --test-timeout=600000 tests/browser/
