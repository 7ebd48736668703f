#!/usr/bin/env bash
# Install learn2hash and everything it needs into .venv/ at the repository root.
#   scripts/install.sh            library, CPU torch, test tools, optional back-ends
#   LEARN2HASH_SYSTEM=0 ...       skip the Debian packages (dataset, chromium) even as root
# Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PYTHON:-python3}

log() { printf '[install] %s\n' "$*" >&2; }

# --- Debian packages: the Fashion-MNIST files, and chromium for the browser test ---------------
if [ "${LEARN2HASH_SYSTEM:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
elif [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${LEARN2HASH_DATA:-}" ]; then
  log "not root: install Fashion-MNIST with 'sudo apt-get install dataset-fashion-mnist' or set LEARN2HASH_DATA"
fi

# --- Python environment ---------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch is pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  log "installing torch==2.13.0 (CPU)"
  pip install "torch==2.13.0"
fi
log "installing learn2hash and its extras"
if ! pip install -e ".[deep,test,faiss,serve,efficientnet,milvus,multiview,vision,video]" "torch==2.13.0" >.venv/install.log 2>&1; then
  grep -v "^WARNING: Location" .venv/install.log >&2
  log "pip install failed (log above)"; exit 1
fi
.venv/bin/python -c "import learn2hash, torch, numba, faiss, pymilvus, fastapi, selenium, av, schemathesis" \
  || { log "installation incomplete"; exit 1; }
log "ready: $root/.venv"
