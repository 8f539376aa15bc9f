#!/usr/bin/env bash
# Run voxtutor's checks: lint (ruff, docstring rules included), types (mypy), then the whole
# test suite, end-to-end tests on real speech and real local models included.
# Extra arguments go to pytest (e.g. scripts/test.sh -k sentence).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
.venv/bin/mypy

echo "==> pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that proves nothing, failing." >&2
  exit 1
fi
exit "$status"
