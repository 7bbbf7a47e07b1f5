// The steps of the cross-language test (test/interop.test.js), run by `dynamokv dev --exec`
// with DYNAMOKV_SEEDS set: Python writes, Node reads and updates with the context, Rust reads,
// and each language's context is accepted by the next. Prints "interop ok" and exits 0, or
// says what differed and exits 1.
'use strict';

const { execFileSync } = require('node:child_process');
const path = require('node:path');
const { Client } = require('..');
const { serverBinary } = require('./node');

const seeds = process.env.DYNAMOKV_SEEDS.split(',');
const python = process.env.PYTHON || 'python3';
const kv = path.join(path.dirname(serverBinary()), 'kv');

function py(code) {
  return execFileSync(python, ['-c', code], {
    env: { ...process.env },
    encoding: 'utf8',
  }).trim();
}

function rust(...args) {
  return JSON.parse(execFileSync(kv, ['--seeds', seeds.join(','), ...args], { encoding: 'utf8' }));
}

function check(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) {
    console.error(`${what}: got ${g}, want ${w}`);
    process.exit(1);
  }
  console.log(`${what}: ${g}`);
}

async function main() {
  const key = `interop-${process.pid}`;
  // Python writes, and hands its put's context on as hex.
  const pyContext = py(
    'import os, dynamokv\n' +
      'c = dynamokv.Client(os.environ["DYNAMOKV_SEEDS"].split(","))\n' +
      `print(c.put(b"${key}", b"from python").hex())`,
  );
  const client = new Client(seeds);
  // Node reads what Python wrote, and updates it with the context of its read.
  const got = await client.get(key);
  check('node reads python', got.values.map(String), ['from python']);
  const nodeContext = await client.put(key, Buffer.from('from node'), got.context);
  // Rust reads: one value, so Node's write superseded Python's (its context was honoured).
  check('rust reads node', rust('get', key).values, ['from node']);
  // Rust writes with Node's put context; Python reads: again one value.
  rust('put', key, 'from rust', Buffer.from(nodeContext).toString('hex'));
  check(
    'python reads rust',
    JSON.parse(
      py(
        'import os, json, dynamokv\n' +
          'c = dynamokv.Client(os.environ["DYNAMOKV_SEEDS"].split(","))\n' +
          `print(json.dumps([v.decode() for v in c.get(b"${key}").values]))`,
      ),
    ),
    ['from rust'],
  );
  // Node writes with Python's own put context (a context handed over as bytes): it supersedes
  // Python's write, and nothing else, so a fresh key shows Node's value alone.
  const key2 = `${key}-2`;
  const pyContext2 = py(
    'import os, dynamokv\n' +
      'c = dynamokv.Client(os.environ["DYNAMOKV_SEEDS"].split(","))\n' +
      `print(c.put(b"${key2}", b"python first").hex())`,
  );
  await client.put(key2, Buffer.from('node second'), Buffer.from(pyContext2, 'hex'));
  check('rust reads node over python', rust('get', key2).values, ['node second']);
  check('python context is hex', /^[0-9a-f]+$/.test(pyContext), true);
  console.log('interop ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
