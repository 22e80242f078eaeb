#!/usr/bin/env bash
# A long fuzz campaign (issue #29): the seeded mutation harness of
# tests/it/fuzz.rs over every command, many more cases than CI runs.
#
#   tools/fuzz.sh [CASES] [SEED]      # defaults: 100000, the current time
#
# Failures (panic, signal, hang past 30 s, 4 GiB) are written to
# target/fuzz-found/ and listed; fix them, then move each to
# testdata/bad/fuzz/ so fuzz_regressions_stay_fixed replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
seed="${2:-$(date +%s)}"
echo "fuzz: $cases cases, seed $seed"
ONNXQ_FUZZ_CASES="$cases" ONNXQ_FUZZ_SEED="$seed" \
  cargo test --release --test it fuzz::mutated_models_never_crash_or_hang -- --nocapture
