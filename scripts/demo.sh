#!/usr/bin/env bash
# The main job: SmolLM2-135M-Instruct on the starter suite, zero-shot and 5-shot, then the leaderboard and the HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${EVALSUITE_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export EVALSUITE_DATA_DIR="$(cd ../shared/data && pwd)"
fi
LIMIT=${LIMIT:-100}
out=results/demo
.venv/bin/evalsuite run --model smollm2 --tasks starter --mode zero-shot --limit "$LIMIT" --output "$out"
.venv/bin/evalsuite run --model smollm2 --tasks starter --mode few-shot --shots 5 --fewshot-sampler fixed --limit "$LIMIT" --output "$out"
.venv/bin/evalsuite leaderboard "$out" --output leaderboards
.venv/bin/evalsuite report "$out" --output leaderboards
