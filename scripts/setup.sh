#!/usr/bin/env bash
# Installs what the native build and tests need on a fresh Debian machine, idempotently:
# Mesa's lavapipe (a Vulkan device on the CPU, for burn's wgpu backend) and the all-MiniLM-L6-v2 model.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for pkg in mesa-vulkan-drivers libvulkan1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
./scripts/fetch-model.sh
