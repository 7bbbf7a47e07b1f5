#!/usr/bin/env bash
# Regenerates the uniffi Swift sources from the built cdylib into the package (or into the
# package-shaped directory given as $1; uniffi's raw output, modulemap included, is kept in $2
# when given). Needs `cargo build --release -p dynamokv-swift` first (scripts/check.sh does it).
#
#   Sources/DynamoKV/DynamoKV.swift      the generated Swift API (module DynamoKV)
#   Sources/DynamoKVFFI/DynamoKVFFI.h    the generated C header (module DynamoKVFFI)
#
# Sources/DynamoKVFFI/module.modulemap is written by hand (it adds `link`); check.sh verifies it
# names the same module and header as uniffi's own modulemap.
set -euo pipefail

pkg="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_root="${1:-$pkg}"
target_dir="${CARGO_TARGET_DIR:-$pkg/../target}"
bindgen="$target_dir/release/uniffi-bindgen"
case "$(uname -s)" in
    Darwin) cdylib="$target_dir/release/libdynamokv_swift.dylib" ;;
    *) cdylib="$target_dir/release/libdynamokv_swift.so" ;;
esac

if [[ -n "${2:-}" ]]; then
    tmp="$2"
    mkdir -p "$tmp"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
fi
# Run from the package so library mode finds uniffi.toml through cargo metadata. --no-format:
# the output must not depend on whether swift-format happens to be installed.
(cd "$pkg" && "$bindgen" generate --library "$cdylib" --language swift --no-format --out-dir "$tmp" >/dev/null)

mkdir -p "$out_root/Sources/DynamoKV" "$out_root/Sources/DynamoKVFFI"
cp "$tmp/DynamoKV.swift" "$out_root/Sources/DynamoKV/DynamoKV.swift"
cp "$tmp/DynamoKVFFI.h" "$out_root/Sources/DynamoKVFFI/DynamoKVFFI.h"
