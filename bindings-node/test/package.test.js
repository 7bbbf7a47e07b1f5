// The package as npm sees it: entry points exist and index.d.ts declares what index.js exports.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

test('package.json points at the facade, its types and the built addon', () => {
  assert.equal(pkg.name, 'dynamokv');
  for (const file of [pkg.main, pkg.types, 'dynamokv.node']) {
    assert.ok(fs.existsSync(path.join(root, file)), `${file} is missing`);
  }
  assert.equal(pkg.scripts.install, 'node scripts/build.js');
});

test('index.d.ts declares exactly the values index.js exports', () => {
  const dts = fs.readFileSync(path.join(root, pkg.types), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:class|const|function) (\w+)/gm)].map(
    (m) => m[1],
  );
  assert.deepEqual(Object.keys(require(root)).sort(), declared.sort());
});
