#!/usr/bin/env bash
# Checks the Swift SDK on a machine without Swift (called by `make test`):
#   1. builds the cdylib and the uniffi-bindgen binary (release, shared target dir, default
#      features, which include `bindgen`: the same feature set as any other build of the crate);
#   2. regenerates the Swift bindings and fails if they differ from the committed ones;
#   3. parses every .swift file of the package and examples/swift with tree-sitter-swift;
#   4. compiles the generated C header with gcc -fsyntax-only;
#   5. generates uniffi's Python bindings from the same cdylib and runs tests/test_ffi.py, which
#      drives the same FFI scaffolding against a live memory-engine node and a 3-node cluster
#      (resolvers implemented in Python through the same foreign trait Swift implements).
# Assumes CARGO_TARGET_DIR (and the RocksDB variables) are exported and `dynamokv` is built.
set -euo pipefail

pkg="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$pkg/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
release="$CARGO_TARGET_DIR/release"
export DYNAMOKV_BIN="${DYNAMOKV_BIN:-$release/dynamokv}"
case "$(uname -s)" in
    Darwin) lib_name=libdynamokv_swift.dylib ;;
    *) lib_name=libdynamokv_swift.so ;;
esac
python="${PYTHON:-python3}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step_start=0
step() {
    step_start=$SECONDS
    echo "== swift: $*"
}
done_step() {
    echo "   ($((SECONDS - step_start)) s)"
}

step "1/5 build libdynamokv_swift + uniffi-bindgen (release)"
(cd "$repo" && cargo build --release -p dynamokv-swift)
done_step

step "2/5 generated Swift bindings are up to date"
"$pkg/scripts/generate.sh" "$tmp/fresh" "$tmp/raw"
stale=0
for f in Sources/DynamoKV/DynamoKV.swift Sources/DynamoKVFFI/DynamoKVFFI.h; do
    if ! diff -u "$pkg/$f" "$tmp/fresh/$f"; then
        echo "error: $f is stale; run bindings-swift/scripts/generate.sh and commit the result" >&2
        stale=1
    fi
done
# The hand-written module.modulemap must name the module and header uniffi generated.
for pattern in '^module [A-Za-z0-9_]+' 'header "[^"]+"'; do
    want="$(grep -oE "$pattern" "$tmp/raw/DynamoKVFFI.modulemap")"
    have="$(grep -oE "$pattern" "$pkg/Sources/DynamoKVFFI/module.modulemap" || true)"
    if [[ "$want" != "$have" ]]; then
        echo "error: Sources/DynamoKVFFI/module.modulemap lacks '$want' (uniffi generated it)" >&2
        stale=1
    fi
done
[[ $stale == 0 ]] || exit 1
echo "   up to date"
done_step

step "3/5 Swift syntax (tree-sitter-swift)"
if ! "$python" -c 'import tree_sitter, tree_sitter_swift' 2>/dev/null; then
    "$python" -m pip install --quiet 'tree-sitter>=0.26,<0.27' 'tree-sitter-swift>=0.7,<0.8'
fi
mapfile -t swift_files < <(cd "$pkg" && find . -name '*.swift' -not -path './.build/*' | sort)
# The examples (examples/swift/ShoppingCart.swift) cannot run here either: parse them too.
mapfile -t example_files < <(cd "$pkg" && find ../examples/swift -name '*.swift' | sort)
[[ ${#example_files[@]} -gt 0 ]] || { echo "error: no .swift file under examples/swift" >&2; exit 1; }
(cd "$pkg" && "$python" scripts/swift_syntax.py "${swift_files[@]}" "${example_files[@]}")
done_step

step "4/5 C header (gcc -fsyntax-only)"
header="$pkg/Sources/DynamoKVFFI/DynamoKVFFI.h"
# (Alone, gcc warns "#pragma once in main file"; shown only if the check fails.)
gcc -fsyntax-only -D_Nullable= -D_Nonnull= -x c "$header" 2>"$tmp/gcc.log" ||
    { cat "$tmp/gcc.log" >&2; exit 1; }
# And as a C client includes it (no "#pragma once in main file" noise), warnings as errors.
echo '#include "DynamoKVFFI.h"' |
    gcc -fsyntax-only -std=c11 -Wall -Wextra -Werror -D_Nullable= -D_Nonnull= \
        -I"$(dirname "$header")" -x c -
echo "   ok"
done_step

step "5/5 FFI scaffolding through uniffi's Python bindings (pytest)"
if ! "$python" -c 'import pytest' 2>/dev/null; then
    "$python" -m pip install --quiet pytest
fi
mkdir -p "$tmp/py"
(cd "$pkg" && "$release/uniffi-bindgen" generate --library "$release/$lib_name" \
    --language python --no-format --out-dir "$tmp/py" >/dev/null)
cp "$release/$lib_name" "$tmp/py/$lib_name"
DYNAMOKV_SWIFT_PY_BINDINGS="$tmp/py" "$python" -m pytest "$pkg/tests/test_ffi.py" \
    -q -p no:cacheprovider -p no:asyncio
done_step
