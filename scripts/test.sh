#!/usr/bin/env bash
# Install everything into .venv/ (scripts/install.sh) and run the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k metrics`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
mkdir -p test-artifacts
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
