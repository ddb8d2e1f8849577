#!/usr/bin/env bash
# Install (if needed) and run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
exec python -m pytest tests -q -p no:cacheprovider "$@"
