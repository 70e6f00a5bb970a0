#!/usr/bin/env bash
# Fuzzing for a fixed budget, longer than CI's: the proptest targets of tests/errors.rs (`fuzz::`), each
# parser with CASES cases, arbitrary text through the pipelines with a tenth of them. Prints the cases run.
# Usage: bash scripts/fuzz.sh [CASES=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webbert-target}"
cases="${1:-20000}"
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --test errors fuzz:: 2>&1 | grep -E "^test |test result"
echo "fuzz: $cases cases per parser target, $((cases / 10)) through the pipelines, no failure, $(( $(date +%s) - start )) s"
