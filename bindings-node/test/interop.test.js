// A context from one language is accepted by another: Python writes, Node reads and updates,
// Rust reads (and Rust and Node write over the others' contexts), on a real 3-node cluster that
// `dynamokv dev` forms by join, plan and commit on ephemeral ports. Needs the Python package
// installed (`make test-python` runs first in `make test`) and the Rust `kv` example built
// (`make build`).
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { serverBinary } = require('../test-support/node');

test('a context crosses languages: Python writes, Node reads and updates, Rust reads', () => {
  const bin = serverBinary();
  const kv = path.join(path.dirname(bin), 'kv');
  assert.ok(fs.existsSync(kv), `${kv} is missing: build the examples (make build)`);
  const python = process.env.PYTHON || 'python3';
  const probe = spawnSync(python, ['-c', 'import dynamokv'], { encoding: 'utf8' });
  assert.strictEqual(
    probe.status,
    0,
    `the dynamokv Python package is not importable (make test-python installs it): ${probe.stderr}`,
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamokv-interop-'));
  try {
    const steps = path.join(__dirname, '..', 'test-support', 'interop-steps.js');
    const run = spawnSync(
      bin,
      ['dev', '--nodes', '3', '--base-port', '0', '--partitions', '64', '--base-dir', dir,
        '--exec', `${JSON.stringify(process.execPath)} ${JSON.stringify(steps)}`,
        '--exit-after-exec'],
      { encoding: 'utf8', timeout: 120000 },
    );
    const out = `${run.stdout}\n${run.stderr}`;
    assert.strictEqual(run.status, 0, out);
    assert.match(out, /node reads python: \["from python"\]/);
    assert.match(out, /rust reads node: \["from node"\]/);
    assert.match(out, /python reads rust: \["from rust"\]/);
    assert.match(out, /interop ok/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
