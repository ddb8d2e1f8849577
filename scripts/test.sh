#!/usr/bin/env bash
# Install (if needed) and run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# the report's browser test needs Chromium: install Debian's where we can (root with apt-get); it skips without one
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "chromium could not be installed: the report's browser test will be skipped" >&2
fi
. .venv/bin/activate
exec python -m pytest tests -q -p no:cacheprovider "$@"
