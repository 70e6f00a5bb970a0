#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian machine, idempotently:
# Mesa's lavapipe (Vulkan on the CPU, for burn's wgpu backend), Chromium (WebGPU via SwiftShader, for the
# browser tests), the npm dev dependencies, and all-MiniLM-L6-v2 into www/models/.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for pkg in mesa-vulkan-drivers libvulkan1 chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
[ -d node_modules/playwright-core ] || npm install --no-audit --no-fund
./scripts/fetch-model.sh
