#!/usr/bin/env bash
# Builds the dynamokv wheel (release, in the shared $CARGO_TARGET_DIR), installs it into the
# current Python, and runs the pytest suite against real memory-engine nodes.
#
# Assumes the build environment is exported (CARGO_TARGET_DIR, ROCKSDB_*) and that the server
# binary is built (`cargo build --release -p dynamokv-server --bin dynamokv`); the tests find it
# via DYNAMOKV_BIN or $CARGO_TARGET_DIR/release/dynamokv. PYTHON picks the interpreter
# (default python3). Installs maturin, pytest and pytest-asyncio if missing. Exits non-zero on
# any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
# The abi3 interpreter config that maturin would generate, fixed in the repository: with the
# same PYO3_CONFIG_FILE, plain cargo (clippy) and maturin share pyo3's build instead of each
# rebuilding it (~30 s) after the other ran. Export the same for plain cargo runs (make lint).
export PYO3_CONFIG_FILE="${PYO3_CONFIG_FILE:-$here/pyo3-build.cfg}"

pip_flags=(--quiet --disable-pip-version-check)
# A PEP 668 "externally managed" system Python refuses pip outside a venv unless told.
if "$py" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if os.path.exists(marker) and sys.prefix == sys.base_prefix else 1)'; then
    pip_flags+=(--break-system-packages)
fi
pip_install() { PIP_ROOT_USER_ACTION=ignore "$py" -m pip install "${pip_flags[@]}" "$@"; }

missing=()
"$py" -c 'import maturin' 2>/dev/null || missing+=("maturin>=1.9,<2")
"$py" -c 'import pytest' 2>/dev/null || missing+=("pytest>=7")
"$py" -c 'import pytest_asyncio' 2>/dev/null || missing+=("pytest-asyncio>=0.23")
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    pip_install "${missing[@]}"
fi

wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT

"$py" -m maturin build --release --quiet --manifest-path "$here/Cargo.toml" \
    --interpreter "$py" --out "$wheels"
pip_install --force-reinstall --no-deps "$wheels"/dynamokv-*.whl

cd "$here"
"$py" -m pytest -q -p no:cacheprovider tests "$@"
