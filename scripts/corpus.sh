#!/usr/bin/env bash
# Installs the Debian packages the masked-LM corpus comes from and writes data/corpus/{train,heldout}.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for pkg in wordnet-base fortunes; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
python3 scripts/corpus.py data/corpus
