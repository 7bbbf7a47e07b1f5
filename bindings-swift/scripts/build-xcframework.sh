#!/usr/bin/env bash
# Builds DynamoKVFFI.xcframework next to Package.swift: the Rust static library for macOS
# (arm64 + x86_64), iOS devices (arm64) and the iOS simulator (arm64 + x86_64), with the
# generated C header and uniffi's modulemap. Package.swift then uses it as a binary target.
# Needs a Mac with Xcode's command-line tools and rustup.
set -euo pipefail

pkg="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$pkg/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
lib=libdynamokv_swift.a
targets=(aarch64-apple-darwin x86_64-apple-darwin aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)

if [[ "$(uname -s)" != Darwin ]]; then
    echo "build-xcframework.sh needs macOS with Xcode (xcodebuild, lipo)" >&2
    exit 1
fi

rustup target add "${targets[@]}"
cd "$repo"
for target in "${targets[@]}"; do
    # Without the default `bindgen` feature: the static library must not carry the bindgen CLI.
    cargo build --release -p dynamokv-swift --lib --no-default-features --target "$target"
done

work="$CARGO_TARGET_DIR/dynamokv-xcframework"
rm -rf "$work"
mkdir -p "$work/headers" "$work/macos" "$work/ios-simulator"

# The header and modulemap come from the same generator as the checked-in Swift sources.
cargo build --release -p dynamokv-swift
"$pkg/scripts/generate.sh" "$work/generated" "$work/raw"
cp "$work/raw/DynamoKVFFI.h" "$work/headers/"
cp "$work/raw/DynamoKVFFI.modulemap" "$work/headers/module.modulemap"
if ! diff -q "$work/generated/Sources/DynamoKV/DynamoKV.swift" "$pkg/Sources/DynamoKV/DynamoKV.swift"; then
    echo "warning: Sources/DynamoKV/DynamoKV.swift is stale; run scripts/generate.sh" >&2
fi

lipo -create \
    "$CARGO_TARGET_DIR/aarch64-apple-darwin/release/$lib" \
    "$CARGO_TARGET_DIR/x86_64-apple-darwin/release/$lib" \
    -output "$work/macos/$lib"
lipo -create \
    "$CARGO_TARGET_DIR/aarch64-apple-ios-sim/release/$lib" \
    "$CARGO_TARGET_DIR/x86_64-apple-ios/release/$lib" \
    -output "$work/ios-simulator/$lib"

rm -rf "$pkg/DynamoKVFFI.xcframework"
xcodebuild -create-xcframework \
    -library "$work/macos/$lib" -headers "$work/headers" \
    -library "$CARGO_TARGET_DIR/aarch64-apple-ios/release/$lib" -headers "$work/headers" \
    -library "$work/ios-simulator/$lib" -headers "$work/headers" \
    -output "$pkg/DynamoKVFFI.xcframework"
echo "wrote $pkg/DynamoKVFFI.xcframework"
