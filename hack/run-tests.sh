#!/usr/bin/env bash
# Runs pytest over the given directories with the project's virtualenv.
# pytest exits 5 when it collected nothing: for CI that is a broken suite, not a pass.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc == 5 ]]; then
  echo "ERROR: pytest collected no tests from: $*" >&2
  exit 1
fi
exit $rc
