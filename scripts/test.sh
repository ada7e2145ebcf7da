#!/usr/bin/env bash
# The whole test suite: lint (ruff), format check, types (mypy), then pytest. Exit non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh dev
export PYTHONHASHSEED=0
echo "== ruff check"; .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy qmix_edge common envs train export runtime
echo "== pytest"; .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
