#!/usr/bin/env bash
# Sets everything up and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${EVALSUITE_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export EVALSUITE_DATA_DIR="$(cd ../shared/data && pwd)"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
