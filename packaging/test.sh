#!/usr/bin/env bash
# Install everything the test suite needs (Debian 12, as root) and run it.
# This is the README's test command and what CI runs.
# The quality gates come first (lint, types, layering; about 10 s together) so
# that a broken gate fails fast, before the minutes of pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install.sh --test

gate() {
    local name=$1 started=$SECONDS
    shift
    echo "quality gate: $name"
    if ! "$@"; then
        echo "quality gate FAILED: $name ($*)" >&2
        exit 1
    fi
    echo "quality gate passed: $name ($((SECONDS - started)) s)"
}
gate "ruff" .venv/bin/ruff check --no-cache milter tests tools
# mypy's settings (strict, package trustmilter) are in pyproject.toml; the
# versions of mypy and the stubs are pinned in setup.cfg's test extra, so the
# result is the same on every machine.
gate "mypy" .venv/bin/mypy
gate "mypy (tools)" .venv/bin/mypy --strict tools/*.py
# The layering contracts: [tool.importlinter] in pyproject.toml.
gate "import-linter" .venv/bin/lint-imports --no-cache

# Under CI=true (as root) the suite also builds the Debian package with
# packaging/build-deb.sh, installs, runs, removes and purges it on this machine
# (tests/test_deb_package.py, about 3 minutes); elsewhere that test is skipped
# unless TRUSTMILTER_TEST_DEB=1 asks for it.
exec .venv/bin/python -m pytest -q "$@"
