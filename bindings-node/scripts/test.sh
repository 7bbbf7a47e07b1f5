#!/usr/bin/env bash
# Builds the Node.js SDK and runs its tests. Assumes CARGO_TARGET_DIR (and the RocksDB
# variables) are exported and the `dynamokv` server is built (the tests find it through
# DYNAMOKV_BIN or $CARGO_TARGET_DIR/release/dynamokv). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
step=$SECONDS
lap() {
  echo "bindings-node: $1 took $((SECONDS - step)) s"
  step=$SECONDS
}

# Installs the devDependencies (typescript, @types/node) and runs the install script, which
# builds the addon with cargo (release) and copies it to dynamokv.node.
npm install --no-audit --no-fund --foreground-scripts
lap "npm install (cargo build included)"

# Keeps index.d.ts honest: test/types-check.ts uses the API as a TypeScript user would.
npx --no-install tsc --noEmit -p tsconfig.json
lap "tsc --noEmit"

node --test test/
lap "node --test"
echo "bindings-node: all passed in $((SECONDS - start)) s"
