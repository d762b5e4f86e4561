#!/usr/bin/env bash
# The main job: SmolLM2-135M-Instruct zero-shot and 5-shot, then the leaderboard and the HTML report.
# With the benchmarks' raw files ($EVALSUITE_DATA_DIR, else ../shared/data) it runs the starter suite and writes
# leaderboards/. Without them (or with EVALSUITE_DATA_DIR set empty) it runs the generated logic tasks, which need
# no download, and writes results/leaderboards-without-data/, leaving the committed leaderboards/ as they are.
# TASKS=... runs other tasks (e.g. TASKS=starter without the raw files loads the starter suite from the hub).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${EVALSUITE_DATA_DIR+set}" ] && [ -d ../shared/data ]; then
  export EVALSUITE_DATA_DIR="$(cd ../shared/data && pwd)"
fi
LIMIT=${LIMIT:-100}
if [ -n "${EVALSUITE_DATA_DIR:-}" ]; then
  tasks=${TASKS:-starter} out=results/demo boards=leaderboards
  echo "demo: tasks '$tasks', raw files from the data directory $EVALSUITE_DATA_DIR; writing $boards/"
else
  unset EVALSUITE_DATA_DIR
  tasks=${TASKS:-generated} out=results/demo-without-data boards=results/leaderboards-without-data
  echo "demo: no data directory (set EVALSUITE_DATA_DIR, or put the raw files in ../shared/data), so tasks '$tasks'."
  if [ -z "${TASKS:-}" ]; then
    echo "demo: the generated tasks need no download but are all logical: the commonsense and semantic_matching"
    echo "demo: categories need the raw files (or TASKS=starter, which loads the starter suite from the hub)."
  fi
  echo "demo: writing $boards/; the committed leaderboards/ (the starter suite) are left as they are."
fi
.venv/bin/evalsuite run --model smollm2 --tasks "$tasks" --mode zero-shot --limit "$LIMIT" --output "$out"
.venv/bin/evalsuite run --model smollm2 --tasks "$tasks" --mode few-shot --shots 5 --fewshot-sampler fixed --limit "$LIMIT" --output "$out"
.venv/bin/evalsuite leaderboard "$out" --output "$boards"
.venv/bin/evalsuite report "$out" --output "$boards"
