#!/usr/bin/env bash
# Refreshes requirements.lock (every package, pinned with hashes, for plain pip) from the
# ranges in pyproject.toml, reinstalls .venv from it and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip uv
.venv/bin/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 \
  --universal --no-header --quiet -o requirements.lock "$@"
.venv/bin/pip install --quiet --require-hashes -r requirements.lock
.venv/bin/pip install --quiet --no-deps -e .
.venv/bin/pytest
