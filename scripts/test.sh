#!/usr/bin/env bash
# Install everything into .venv/ (scripts/install.sh) and run the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k metrics`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
mkdir -p test-artifacts
# compiled numba kernels are kept between runs on the same machine
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/learn2hash/numba}
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
