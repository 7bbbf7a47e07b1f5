#!/usr/bin/env node
// Builds the native addon with plain cargo and copies it to `dynamokv.node` beside index.js.
// npm runs this as the package's `install` script, so `npm install ./bindings-node` from
// anywhere leaves a package that `require('dynamokv')` can load. Release profile only: the
// whole workspace builds in one profile so heavy dependencies compile once.
'use strict';

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const pkgDir = path.resolve(__dirname, '..');
const addon = path.join(pkgDir, 'dynamokv.node');
const manifest = path.join(pkgDir, 'Cargo.toml');

function fail(message) {
  console.error(`dynamokv: ${message}`);
  process.exit(1);
}

function targetDir() {
  // Cargo resolves a relative CARGO_TARGET_DIR against its working directory, pkgDir here.
  if (process.env.CARGO_TARGET_DIR) return path.resolve(pkgDir, process.env.CARGO_TARGET_DIR);
  const out = execFileSync(
    'cargo',
    ['metadata', '--format-version', '1', '--no-deps', '--manifest-path', manifest],
    { cwd: pkgDir, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  return JSON.parse(out).target_directory;
}

function libraryName() {
  switch (process.platform) {
    case 'win32':
      return 'dynamokv_node.dll';
    case 'darwin':
      return 'libdynamokv_node.dylib';
    default:
      return 'libdynamokv_node.so';
  }
}

function main() {
  // A packed copy (`npm install --install-links`, `npm pack`) ships the addon, not the crate.
  if (!fs.existsSync(manifest)) {
    if (fs.existsSync(addon)) return console.log('dynamokv: using the prebuilt dynamokv.node');
    fail(`neither ${manifest} to build nor a prebuilt ${addon}`);
  }
  const args = ['build', '--release', '-p', 'dynamokv-node'];
  const built = spawnSync('cargo', args, { cwd: pkgDir, stdio: 'inherit' });
  if (built.error) fail(`could not run cargo: ${built.error.message}`);
  if (built.status !== 0) fail(`\`cargo ${args.join(' ')}\` failed (exit ${built.status})`);

  const lib = path.join(targetDir(), 'release', libraryName());
  if (!fs.existsSync(lib)) fail(`cargo finished but ${lib} does not exist`);
  // Copy then rename: overwriting a loaded shared library in place can crash its users.
  const tmp = `${addon}.${process.pid}.tmp`;
  fs.copyFileSync(lib, tmp);
  fs.renameSync(tmp, addon);
  console.log(`dynamokv: ${lib} -> ${addon}`);
}

main();
