#!/usr/bin/env bash
# npm run demo: install what is needed, fetch the model, build the package, serve the page on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build-wasm.sh
exec node scripts/serve.mjs www "${PORT:-8080}"
