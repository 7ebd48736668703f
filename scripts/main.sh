#!/usr/bin/env bash
# The main job: install everything into .venv/, train CSQ (64 bits) on Fashion-MNIST (protocol
# standard), index the database codes, evaluate, and print the result table.
# Options go to `learn2hash train`, e.g. `scripts/main.sh --bits 32 --out runs/csq-32`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
out=runs/csq-fashion-mnist-64
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = --out ] && out=${args[$((i + 1))]}; done
.venv/bin/learn2hash train --method csq --dataset fashion-mnist --protocol standard --bits 64 \
  --out "$out" --overwrite "$@"
.venv/bin/learn2hash index build --run "$out"
.venv/bin/learn2hash search --run "$out" --query 0 -k 10
