#!/usr/bin/env bash
# Set up voxtutor on a fresh Debian/Ubuntu machine: system packages, a virtualenv with the
# project, and the packaged offline models. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: espeak-ng speaks German and Czech; pocketsphinx-testdata ships real
# English recordings (LibriVox, with transcripts) used by the demo and the tests; chromium
# runs the browser-room test headless (Playwright drives it; no browser download).
APT_PACKAGES=(espeak-ng pocketsphinx-testdata chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "voxtutor needs Python >= 3.11"'
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
# llama-cpp-python is an sdist: the first install compiles llama.cpp (~10 min on 2 cores);
# pip caches the built wheel, so later installs take seconds.
echo "==> pip install -e .[dev]"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"

echo "==> voxtutor models install (default set, then the small LLM the fast tests use)"
.venv/bin/voxtutor models install
.venv/bin/voxtutor models install --model qwen2.5-coder-0.5b
