#!/usr/bin/env bash
# Install everything the test suite needs (Debian 12, as root) and run it.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install.sh --test
exec .venv/bin/python -m pytest -q "$@"
