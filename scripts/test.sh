#!/usr/bin/env bash
# Run voxtutor's checks: lint (ruff, docstring rules included), types (mypy), then the whole
# test suite, end-to-end tests on real speech and real local models included.
# Extra arguments go to pytest (e.g. scripts/test.sh -k sentence).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# The store's tests run against PostgreSQL as well as SQLite (127.0.0.1:5432, trust auth).
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null; then
    echo "==> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi

echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
.venv/bin/mypy
echo "==> import-linter (the layer order in README, \"Architecture\")"
.venv/bin/lint-imports

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
