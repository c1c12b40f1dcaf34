#!/usr/bin/env bash
# Runs every benchmark script in benchmarks/ (each prints its own side-by-side table).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shopt -s nullglob
scripts=(benchmarks/*.py)
if ((${#scripts[@]} == 0)); then
  echo "ERROR: no benchmarks found in benchmarks/" >&2
  exit 1
fi
for script in "${scripts[@]}"; do
  echo "== $script"
  .venv/bin/python "$script"
done
